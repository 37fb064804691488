package client

import (
	"net"
	"sync"
)

// batchConn is the socket under a connection dialled with CoalesceWrites:
// between hold and flush its writes go to a buffer, written with one
// system call at flush. Outside a batch it writes through, so a frame
// written alone (gorilla's pong from the reader, a close) goes at once.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
	frames  int   // written in the current batch
	batched int64 // frames that went out in a write with others (tests)
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.holding {
		return b.Conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	b.frames++
	return len(p), nil
}

func (b *batchConn) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// flush writes what the batch buffered and ends the batch. A buffer grown
// by a burst of large frames is not kept.
func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = false
	if b.frames > 1 {
		b.batched += int64(b.frames)
	}
	b.frames = 0
	var err error
	if len(b.buf) > 0 {
		_, err = b.Conn.Write(b.buf)
	}
	if cap(b.buf) > maxBatchBytes {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

// maxBatchBytes bounds the frames one batch takes (the first frame is
// always taken, whatever its size).
const maxBatchBytes = 64 << 10

// writeBatch writes the acks queued by ClientAckAsync, first (unless nil)
// and every frame queued behind it, up to maxBatchBytes, as one write to
// the socket. It reports false when the connection failed (write has
// recorded why).
func (c *Conn) writeBatch(first []byte, write func([]byte) bool) bool {
	c.batch.hold()
	ok := c.writeAcks(write)
	n := 0
	if ok && first != nil {
		ok = write(first)
		n = len(first)
	}
	for ok && n < maxBatchBytes {
		select {
		case f := <-c.out:
			ok = c.writeAcks(write) && write(f)
			n += len(f)
			continue
		default:
		}
		break
	}
	if err := c.batch.flush(); err != nil && ok {
		c.writeFailed(err)
		return false
	}
	return ok
}
