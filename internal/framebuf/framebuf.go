// Package framebuf reads WebSocket frames through pooled buffers, for the
// broker's readers and the client's: io.ReadAll starts every frame in a
// fresh 512-byte buffer and grows it (two or three allocations for a
// send, five for a 900-byte push); here a frame is read into a pooled
// buffer and handed on as one copy of its exact size. Pooled, not kept
// per connection, so that thousands of idle connections hold none.
package framebuf

import (
	"io"
	"sync"
)

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// MaxPooled is the largest buffer the pool keeps: room for the frame of a
// DM of 64 KiB (about 88 KB of base64), for a hello at its limit, and for
// a broadcast's send to 1,000 recipients (a key entry of ~190 bytes each,
// ~200 KB). At 64 KiB, every such frame grew a fresh buffer from 4 KiB,
// about ten allocations and 450 KB of copying per frame (bench
// --adversary: junk before hello, 64 KiB self-DMs); at 128 KiB, so did
// every broadcast's send (~700 KB allocated for each, bench --broadcast
// --peers 1000).
const MaxPooled = 256 << 10

// ReadAll is io.ReadAll(io.LimitReader(r, limit)) through the pool. The
// frame returned is the caller's; an empty frame is an empty slice, never
// nil.
func ReadAll(r io.Reader, limit int64) ([]byte, error) {
	bp := buffers.Get().(*[]byte)
	b := (*bp)[:0]
	for int64(len(b)) < limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):min(int64(cap(b)), limit)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			buffers.Put(bp)
			return nil, err
		}
	}
	data := make([]byte, len(b))
	copy(data, b)
	if cap(b) <= MaxPooled {
		*bp = b[:0]
	}
	buffers.Put(bp)
	return data, nil
}
