package client

import (
	"context"
	"sync"

	"claudemesh/wire"
)

// maxQueuedAcks bounds the ids ClientAckAsync holds for the writer: as
// many as the write queue's frames could carry. Past it a call queues
// frames of its own, which wait for queue space (back-pressure).
const maxQueuedAcks = writeQueueLen * MaxAckBatch

// ackQueue holds the ids ClientAckAsync settles until the writer goroutine
// takes them: every id queued by the time the writer gets to it goes out
// in one client_ack frame (MaxAckBatch ids a frame), encoded into a buffer
// the writer keeps. A recipient that acks each push as it arrives (the
// daemon after its commit, the bench from OnPush) so hands the writer an
// id under a lock, not an encoded frame through the write queue, and the
// acks queued while the writer was busy share a frame.
type ackQueue struct {
	wake chan struct{} // capacity 1: the writer has ids to take

	mu  sync.Mutex
	ids []string

	// The writer's own: the slice it took last (reused as ids) and the
	// frame it encodes.
	spare []string
	buf   []byte
}

// add queues ids unless the queue would pass maxQueuedAcks.
func (q *ackQueue) add(ids []string) bool {
	q.mu.Lock()
	if len(q.ids) > 0 && len(q.ids)+len(ids) > maxQueuedAcks {
		q.mu.Unlock()
		return false
	}
	q.ids = append(q.ids, ids...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// queued reports whether ids wait for the writer.
func (q *ackQueue) queued() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids) > 0
}

// ClientAckAsync settles deliveries without waiting for the broker: a
// client_ack without reqId, so no answer comes, which suits the daemon's
// hot path (a lost ack only means a redelivery, which recipients
// de-duplicate). The ids join those queued for the writer goroutine, which
// writes everything queued by then as one frame (MaxAckBatch ids a frame)
// before the next frame queued after them. It never waits for the broker,
// and waits for the writer only when maxQueuedAcks ids are already queued,
// so it may be called from OnPush.
func (c *Conn) ClientAckAsync(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	select {
	case <-c.closeReq:
		return newError(CodeConnectionClosed, "connection is closing")
	case <-c.writerGone:
		return c.closedError()
	default:
	}
	if c.ackQ.add(ids) {
		return nil
	}
	// The writer is far behind: frames of their own, through the write
	// queue's back-pressure.
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	for _, batch := range chunks(ids) {
		if err := c.enqueue(ctx, wire.EncodeClientAck(&wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: batch})); err != nil {
			return err
		}
	}
	return nil
}

// writeAcks writes the queued ids (writer goroutine only). It reports
// false when the connection failed (write has recorded why).
func (c *Conn) writeAcks(write func([]byte) bool) bool {
	q := &c.ackQ
	q.mu.Lock()
	ids := q.ids
	if len(ids) == 0 {
		q.mu.Unlock()
		return true
	}
	q.ids = q.spare[:0]
	q.mu.Unlock()
	ok := true
	for rest := ids; ok && len(rest) > 0; {
		n := min(len(rest), MaxAckBatch)
		q.buf = wire.AppendClientAck(q.buf[:0], &wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: rest[:n]})
		ok = write(q.buf) // copied by gorilla (or the batch) before it returns
		rest = rest[n:]
	}
	clear(ids)
	q.spare = ids[:0]
	if cap(q.spare) > MaxAckBatch {
		q.spare = nil // a burst's slice is not kept
	}
	if cap(q.buf) > maxBatchBytes {
		q.buf = nil
	}
	return ok
}
