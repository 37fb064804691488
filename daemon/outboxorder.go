package daemon

import (
	"bytes"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// One sender's messages to one target (a recipient key, a group, a topic)
// reach it in the order they were accepted. The drain writes them in
// enqueue order and the broker keeps FIFO per recipient from there, but a
// send that fails comes back to the outbox while later ones go on: after a
// recipient_queue_full the refused rows came back with their own jittered
// backoffs and went out in any order, behind the rows accepted after them;
// after a topic's key rotated, each post was sealed again as its failure
// came back, last first.
//
// So a row whose send failed holds the line of its (sender, target): the
// rows accepted after it wait (using no attempt) until it has gone, and it
// goes again only once no earlier row of that line is still in flight (an
// earlier one may fail too). While a line is held its rows go one at a
// time; once nothing of it is held they are pipelined again, up to the
// drain's window. A row in flight when an earlier one was refused does not
// overtake it: the broker refuses it too (the refusal holds the
// connection's line to that target until the refused row comes again,
// broker/sendorder.go), and it comes back here behind the refused one.

// orderKey is a row's line: its sender ("" for the member) and its target.
func orderKey(r *outboxRow) string { return r.SenderPubkey + "\x00" + r.TargetSpec }

// sendOrder is a mesh's held lines and the lines of its rows in flight.
type sendOrder struct {
	mu sync.Mutex
	// held are the rows put back after a failed send, by line, lowest
	// seq first. A row leaves when due finds it no longer pending.
	held map[string][]uint64
	// loaded says held has the rows that were backing off when the
	// daemon started (read once, by the first round).
	loaded bool
	// flying are the lines of the rows being sent, by seq.
	flying map[uint64]string
}

// hold records that row seq of line k came back after a failed send.
func (o *sendOrder) hold(k string, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.holdLocked(k, seq)
}

func (o *sendOrder) holdLocked(k string, seq uint64) {
	if o.held == nil {
		o.held = map[string][]uint64{}
	}
	s := o.held[k]
	if i, found := slices.BinarySearch(s, seq); !found {
		o.held[k] = slices.Insert(s, i, seq)
	}
}

// fly and landed bracket a row's send.
func (o *sendOrder) fly(seq uint64, k string) {
	o.mu.Lock()
	if o.flying == nil {
		o.flying = map[uint64]string{}
	}
	o.flying[seq] = k
	o.mu.Unlock()
}

func (o *sendOrder) landed(seq uint64) {
	o.mu.Lock()
	delete(o.flying, seq)
	o.mu.Unlock()
}

// gate is one drain round's view of the lines: may says whether a row may
// go now as far as order goes.
type gate struct {
	heads map[string]uint64 // the lowest held row still pending, by line
	// lowestFlying is the lowest seq in flight, by line.
	lowestFlying map[string]uint64
}

func (g gate) may(r *outboxRow) bool { return g.mayLine(r.Seq, orderKey(r)) }

// mayLine is may for the row seq of line k.
func (g gate) mayLine(seq uint64, k string) bool {
	h, held := g.heads[k]
	switch {
	case !held || seq < h:
		return true
	case seq > h:
		return false // behind a row that has to go again first
	}
	f, flying := g.lowestFlying[k]
	return !flying || f > seq
}

// gate reads the held lines' heads in tx (dropping rows that are no longer
// pending: sent, dead, removed) and takes the lines in flight. The first
// round also holds the rows that were backing off when the daemon started,
// from the retry index, whose failed sends came before.
func (o *sendOrder) gate(tx *bolt.Tx, meshID string) gate {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.loaded {
		o.loaded = true
		prefix := append([]byte(meshID), 0)
		c := tx.Bucket(bOutboxRetry).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+16 {
				continue
			}
			if r, err := getOutbox(tx, seqOf(k)); err == nil && r.State == statePending {
				o.holdLocked(orderKey(r), r.Seq)
			}
		}
	}
	g := gate{}
	for k, s := range o.held {
		for len(s) > 0 {
			if r, err := getOutbox(tx, s[0]); err == nil && r.State == statePending {
				break
			}
			s = s[1:]
		}
		if len(s) == 0 {
			delete(o.held, k)
			continue
		}
		o.held[k] = s
		if g.heads == nil {
			g.heads = map[string]uint64{}
		}
		g.heads[k] = s[0]
	}
	if len(g.heads) > 0 {
		for seq, k := range o.flying {
			if _, held := g.heads[k]; !held {
				continue
			}
			if g.lowestFlying == nil {
				g.lowestFlying = map[string]uint64{}
			}
			if f, ok := g.lowestFlying[k]; !ok || seq < f {
				g.lowestFlying[k] = seq
			}
		}
	}
	return g
}
