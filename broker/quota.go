package broker

import (
	"fmt"

	"claudemesh/internal/cliui"
	"claudemesh/store"
	"claudemesh/wire"
)

// Quotas on what is queued (issue 12 item 7). --max-pending caps each
// recipient's queue, but every known session key is a recipient of its
// own, so alone it bounds nothing: one member sending 64 KiB to its own
// sessions grew broker.db by half a gigabyte in 30 s. Three more limits,
// all on undelivered messages and all checked and reserved under the mesh
// lock in the same critical section as --max-pending (resolveRecipients),
// so a burst in flight to the committer cannot overshoot them:
//
//   - --max-queued-bytes-per-sender: the bytes one member (its member key
//     and all its sessions together) has waiting in any queues of a mesh;
//   - --max-queued-bytes-per-mesh: the bytes waiting in a mesh in total;
//   - --max-pending-per-sender: how many of one recipient's --max-pending
//     places one sending member may hold, so nobody can fill another's
//     queue alone.
//
// A delivery's charge is written into its queue entry (store.QueueEntry's
// From and Charge), so every way an entry leaves the queue (ack, expiry, a
// forgotten session's queue, another cluster node's write) gives back
// exactly what was taken, and a restart derives the counts from the queue
// (loadQueueCounts).

// Bytes a delivery is charged beyond its ciphertext: a message's share of
// its header, push frame and idempotency record, and each recipient's queue
// entry and delivery record (with a multi key). Approximations of the
// stored sizes, erring high.
const (
	messageOverhead = 1024
	entryOverhead   = 256
)

// quotaCounts is a mesh's usage of the queue quotas. Guarded by ms.mu.
type quotaCounts struct {
	share       map[shareKey]int // undelivered messages per (recipient, sending member)
	senderBytes map[string]int64 // sending member → bytes queued
	meshBytes   int64
}

type shareKey struct{ recipient, from string }

// holdLocked counts one queued delivery (message, not receipt) for its
// recipient and, when it carries one, its sender's quota. Caller holds ms.mu.
func (ms *meshState) holdLocked(recipient, from string, charge int64) {
	ms.pending[recipient]++
	if from == "" {
		return // queued before quotas: counts for --max-pending only
	}
	q := &ms.quota
	if q.share == nil {
		q.share, q.senderBytes = map[shareKey]int{}, map[string]int64{}
	}
	q.share[shareKey{recipient, from}]++
	q.senderBytes[from] += charge
	q.meshBytes += charge
}

// releaseLocked gives back what holdLocked (or a reservation) took, when a
// delivery is settled, expired or dropped, or a send queued nothing.
// Caller holds ms.mu.
func (ms *meshState) releaseLocked(recipient, from string, charge int64) {
	ms.unreserveLocked(recipient)
	if from == "" {
		return
	}
	q := &ms.quota
	k := shareKey{recipient, from}
	if q.share[k]--; q.share[k] <= 0 {
		delete(q.share, k)
	}
	if q.senderBytes[from] -= charge; q.senderBytes[from] <= 0 {
		delete(q.senderBytes, from)
	}
	if q.meshBytes -= charge; q.meshBytes < 0 {
		q.meshBytes = 0
	}
}

// loadQueueCounts derives the pending counts and quota usage of a mesh
// from its queue; n is its undelivered messages.
func (ms *meshState) loadQueueCounts(tx *store.Tx, bad func(store.Corrupt)) (n int, err error) {
	ms.pending = map[string]int{}
	ms.quota = quotaCounts{}
	err = store.EachQueued(tx, ms.id, func(recipient string, e *store.QueueEntry) {
		if !e.Receipt {
			ms.holdLocked(recipient, e.From, e.Charge)
			n++
		}
	}, bad)
	return n, err
}

// chargeDeliveries sets each delivery's From and Charge: the ciphertext
// and a message's overhead shared among the recipients, plus each one's
// entry overhead. The charges add up to what the message costs in total.
func chargeDeliveries(to []store.NewDelivery, from string, ciphertextLen int) (total int64) {
	if len(to) == 0 {
		return 0
	}
	body := int64(ciphertextLen + messageOverhead)
	n := int64(len(to))
	for i := range to {
		c := body / n
		if i == 0 {
			c += body % n
		}
		to[i].From, to[i].Charge = from, c+entryOverhead
		total += c + entryOverhead
	}
	return total
}

// checkQueueBytes refuses a send whose charge would take its sender or its
// mesh over their byte quotas. Caller holds ms.mu.
func (c *conn) checkQueueBytes(from string, total int64) (code, msg string) {
	ms, cfg := c.ms, c.b.cfg
	if used := ms.quota.senderBytes[from]; used+total > cfg.MaxQueuedBytesPerSender {
		c.b.metrics.limitTripped.WithLabelValues("queued_bytes_per_sender").Inc()
		return wire.CodeQuotaExceeded, fmt.Sprintf("you have %s waiting to be delivered in this mesh; the limit is %s: wait until recipients fetch them", humanBytes(used), humanBytes(cfg.MaxQueuedBytesPerSender))
	}
	if ms.quota.meshBytes+total > cfg.MaxQueuedBytesPerMesh {
		c.b.metrics.limitTripped.WithLabelValues("queued_bytes_per_mesh").Inc()
		return wire.CodeQuotaExceeded, fmt.Sprintf("this mesh has %s waiting to be delivered; the broker's limit is %s: retry when recipients have fetched their messages", humanBytes(ms.quota.meshBytes), humanBytes(cfg.MaxQueuedBytesPerMesh))
	}
	return "", ""
}

// queueRoomLocked reports whether recipient's queue takes one more message
// from member from: --max-pending and --max-pending-per-sender. It counts
// the limit that refuses. Caller holds ms.mu.
func (c *conn) queueRoomLocked(recipient, from string) bool {
	ms := c.ms
	if ms.pending[recipient] >= c.b.cfg.MaxPending {
		c.b.metrics.limitTripped.WithLabelValues("max_pending").Inc()
		return false
	}
	if ms.quota.share[shareKey{recipient, from}] >= c.b.cfg.MaxPendingPerSender {
		c.b.metrics.limitTripped.WithLabelValues("max_pending_per_sender").Inc()
		return false
	}
	return true
}

// humanBytes renders a byte count for an error message.
func humanBytes(n int64) string { return cliui.ByteSize(n) }

// defaultQuotas fills the quota limits left at zero (or below).
func (cfg *Config) defaultQuotas(def Config) {
	if cfg.MaxPendingPerSender <= 0 {
		cfg.MaxPendingPerSender = def.MaxPendingPerSender
	}
	if cfg.MaxQueuedBytesPerSender <= 0 {
		cfg.MaxQueuedBytesPerSender = def.MaxQueuedBytesPerSender
	}
	if cfg.MaxQueuedBytesPerMesh <= 0 {
		cfg.MaxQueuedBytesPerMesh = def.MaxQueuedBytesPerMesh
	}
}
