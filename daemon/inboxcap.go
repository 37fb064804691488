package daemon

import (
	"bytes"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
)

// The inbox's size cap (issue 12 item 7: a peer flooding a victim grew its
// daemon.db from 34 MB to 278 MB in 20 s). When the rows' bytes pass
// Options.InboxMaxBytes, the oldest rows already seen are dropped until the
// inbox is back under nine tenths of the cap. Unseen rows are never dropped:
// the broker was told they arrived (client_ack), so dropping one would lose
// a message nobody read. While unseen rows alone hold the inbox over its
// cap, `daemon status` says so, and trimming waits for something to change
// (a row marked seen or deleted) instead of rescanning on every push. At
// twice the cap the inbox is full: new pushes are neither stored nor
// acked, so they wait on the broker (where the sender's quota bounds them)
// and come again with its redelivery once rows are read.

// MinInboxMaxBytes is the smallest `daemon up --inbox-max-bytes`: room
// for a few of the largest messages (64 KiB of text each).
const MinInboxMaxBytes = 1 << 20

// DefaultInboxMaxBytes is `daemon up --inbox-max-bytes`'s default.
const DefaultInboxMaxBytes = 256 << 20

// inboxCap is the cap's state. bytes is the inbox's size as of the last
// scan plus what was stored since (rewrites by markSeen are not counted:
// a few bytes a row, corrected by the next scan).
type inboxCap struct {
	mu      sync.Mutex
	bytes   int64
	stuck   bool  // the last trim found too few seen rows to drop
	dropped int64 // seen rows dropped since the daemon started
	held    int   // unseen rows over the cap at the last trim
	full    bool  // pushes are being left on the broker (inboxFull)
	// unseenBy is the unseen rows' bytes per sending member, nil until
	// counted (inboxshare.go).
	unseenBy map[string]int64
	// overShare: senders whose pushes were refused for their share, said
	// once in the log until rows are read.
	overShare map[string]bool
	// admit is held by a path that stores rows (pushes, a fetch's page,
	// live topic posts, a topic's catch-up) from its check of the room
	// left (inboxFull, inboxRoom) until its rows are counted (inboxGrew):
	// two paths that checked at once each took the room left, and a
	// catch-up and live posts together filled the inbox past its hard
	// limit by a third.
	admit sync.Mutex
}

// inboxFull reports whether the inbox is at its hard limit, twice the cap,
// after trying to trim it: the n pushes at hand are then left on the
// broker, unacked.
func (d *Daemon) inboxFull(n int) bool {
	hard := 2 * d.opts.InboxMaxBytes
	d.icap.mu.Lock()
	over := d.icap.bytes >= hard
	d.icap.mu.Unlock()
	if over {
		d.trimInbox() // rows may have been read since
	}
	d.icap.mu.Lock()
	over = d.icap.bytes >= hard
	was := d.icap.full
	d.icap.full = over
	d.icap.mu.Unlock()
	if over && !was {
		d.log.Warn("inbox full of unseen rows: new messages are left on the broker until some are read (but for senders that hold almost none of it)", "pushes", n, "maxBytes", d.opts.InboxMaxBytes)
	}
	return over
}

// inboxRoom returns how many of a batch of pushes to store: all of them
// while the inbox stays under its hard limit, else those up to and
// including the one that reaches it (a stored row is about its
// plaintext, three quarters of the base64 ciphertext, plus metadata). At
// least one, since inboxFull said there is room.
func (d *Daemon) inboxRoom(items []inboxItem) int {
	hard := 2 * d.opts.InboxMaxBytes
	d.icap.mu.Lock()
	size := d.icap.bytes
	d.icap.mu.Unlock()
	for i, it := range items {
		size += int64(len(it.push.Ciphertext))*3/4 + 512
		if size >= hard {
			return i + 1
		}
	}
	return len(items)
}

// loadInboxSize measures the inbox at start.
func (d *Daemon) loadInboxSize() error {
	var n int64
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bInbox).ForEach(func(_, v []byte) error {
			n += int64(len(v))
			return nil
		})
	})
	d.icap.mu.Lock()
	d.icap.bytes = n
	d.icap.mu.Unlock()
	return err
}

// inboxGrew counts rows just committed (their stored sizes).
func (d *Daemon) inboxGrew(rows []*inboxRow, stored []bool) {
	var n int64
	for i, r := range rows {
		if stored[i] {
			n += int64(r.size)
		}
	}
	d.icap.mu.Lock()
	d.icap.bytes += n
	d.icap.mu.Unlock()
}

// inboxChanged is called when rows were marked seen or deleted: a stuck
// trim may now find something to drop.
func (d *Daemon) inboxChanged() {
	d.icap.mu.Lock()
	d.icap.stuck = false
	d.icap.mu.Unlock()
}

// trimInbox drops the oldest seen rows while the inbox is over its cap.
// It runs on the inbox worker after each batch, and with the prune.
func (d *Daemon) trimInbox() {
	max := d.opts.InboxMaxBytes
	d.icap.mu.Lock()
	skip := d.icap.bytes <= max || d.icap.stuck
	d.icap.mu.Unlock()
	if skip {
		return
	}
	low := max / 10 * 9
	var total int64
	var dropped, held int
	err := d.db.Update(func(tx *bolt.Tx) error {
		total, dropped, held = 0, 0, 0
		ib := tx.Bucket(bInbox)
		var seen [][]byte
		var seenBytes []int64
		err := ib.ForEach(func(k, v []byte) error {
			total += int64(len(v))
			if bytesContains(v, `"seenAt"`) {
				seen = append(seen, bytes.Clone(k))
				seenBytes = append(seenBytes, int64(len(v)))
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Oldest first (keys are the arrival sequence). The dedupe keys
		// stay, as for a deleted row: a late redelivery must not bring
		// the message back.
		for i, k := range seen {
			if total <= low {
				break
			}
			if err := ib.Delete(k); err != nil {
				return err
			}
			total -= seenBytes[i]
			dropped++
		}
		if total > max {
			return ib.ForEach(func(_, v []byte) error {
				if !bytesContains(v, `"seenAt"`) {
					held++
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		d.log.Error("inbox cap", "err", err)
		return
	}
	if dropped > 0 {
		d.threadsChanged()
	}
	d.icap.mu.Lock()
	d.icap.bytes, d.icap.held = total, held
	d.icap.dropped += int64(dropped)
	d.icap.stuck = total > max
	// Read rows dropped may end "full" at once: it must not wait for the
	// next push to be said no more (trial 18, finding 11).
	d.icap.full = d.icap.full && total >= 2*max
	d.icap.mu.Unlock()
	if dropped > 0 {
		d.log.Warn("inbox over its cap: dropped the oldest seen rows", "dropped", dropped, "bytes", total, "maxBytes", max)
	}
	if held > 0 {
		d.log.Warn("inbox over its cap with unseen rows; they are kept until read or deleted", "unseen", held, "bytes", total, "maxBytes", max)
	}
}

// inboxStatus is the cap's part of `daemon status`: bytes and rows as
// measured now by the caller's scan.
func (d *Daemon) inboxStatus(bytes int64, rows, unseen int, shares []localapi.SenderShare, shareWarnings []string) (*localapi.InboxUsage, []string) {
	max := d.opts.InboxMaxBytes
	d.icap.mu.Lock()
	u := &localapi.InboxUsage{Bytes: bytes, Rows: rows, MaxBytes: max, DroppedSeen: d.icap.dropped, OverShare: shares}
	defer d.icap.mu.Unlock()
	var warnings []string
	if u.Full = d.icap.full && bytes >= 2*max; u.Full {
		// (It may pass twice the cap by newcomerRoom's reserve.)
		u.OverCap, u.UnseenHeld = true, unseen
		warnings = append(warnings, fmt.Sprintf("the inbox is full (%s, twice its cap of %s) with %d unseen rows: new messages stay on the broker (but for senders that hold almost none of it) until you mark some seen (claudemesh inbox --mark-seen), or restart the daemon with a larger daemon up --inbox-max-bytes",
			humanSize(bytes), humanSize(max), unseen))
	} else if bytes > max {
		u.OverCap, u.UnseenHeld = true, unseen
		warnings = append(warnings, fmt.Sprintf("the inbox is over its cap (%s of %s) with %d unseen rows, which are kept until read or deleted: mark them seen (claudemesh inbox --mark-seen) so the oldest can be dropped, or restart the daemon with a larger daemon up --inbox-max-bytes",
			humanSize(bytes), humanSize(max), unseen))
	} else if u.DroppedSeen > 0 {
		warnings = append(warnings, fmt.Sprintf("the inbox reached its cap (%s): %d of the oldest seen rows were dropped since the daemon started", humanSize(max), u.DroppedSeen))
	}
	return u, append(warnings, shareWarnings...)
}

// humanSize is a byte count for people: a small cap reads "19.5 KiB",
// never "0.0 MiB".
func humanSize(n int64) string { return cliui.ByteSize(n) }

// inboxShrank counts rows deleted (a prune, a delete): the cap may be met
// again, or a stuck trim find room.
func (d *Daemon) inboxShrank(n int64) {
	if n <= 0 {
		return
	}
	d.icap.mu.Lock()
	d.icap.bytes -= n
	d.icap.stuck = false
	d.icap.full = d.icap.full && d.icap.bytes >= 2*d.opts.InboxMaxBytes
	d.icap.mu.Unlock()
}
