package client

import "testing"

// BenchmarkClientAckAsync is a recipient's ack of one push as the writer
// goroutine writes it: queued, taken, encoded into the writer's buffer.
// (EncodeClientAck: a frame allocated and sent through the write queue a
// call, as every ack was before the queue.)
func BenchmarkClientAckAsync(b *testing.B) {
	c := &Conn{ackQ: ackQueue{wake: make(chan struct{}, 1)}}
	ids := []string{"01JD6Z3G7Q8X9YV2K4M5N6P7R8"}
	n := 0
	write := func(f []byte) bool { n += len(f); return true }
	b.ReportAllocs()
	for b.Loop() {
		if err := c.ClientAckAsync(ids); err != nil {
			b.Fatal(err)
		}
		<-c.ackQ.wake
		if !c.writeAcks(write) {
			b.Fatal("write failed")
		}
	}
	if n == 0 {
		b.Fatal("nothing written")
	}
}
