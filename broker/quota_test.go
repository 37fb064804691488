package broker

import (
	"fmt"
	"strings"
	"testing"

	"claudemesh/wire"
)

// burstAcks writes every send before reading any ack (a burst in flight to
// the committer at once) and returns how many were queued and the refusal
// codes of the others.
func burstAcks(t *testing.T, r *rawConn, sends []wire.Send) (ok int, refused map[string]int) {
	t.Helper()
	for _, s := range sends {
		r.write(s)
	}
	refused = map[string]int{}
	for range sends {
		var ack wire.Ack
		r.next(&ack, wire.TypeAck)
		if ack.Error == nil {
			ok++
		} else {
			refused[ack.Error.Code]++
		}
	}
	return ok, refused
}

// One member sending large messages to its own session keys and to another
// member (each key a recipient of its own, so --max-pending bounds nothing)
// is held to --max-queued-bytes-per-sender, also under a burst; the quota
// survives a restart and is given back as recipients fetch (issue 12 item 7:
// 64 KiB to itself grew broker.db by 547 MB in 30 s).
func TestQueuedBytesPerSenderAcrossSessionKeys(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	cfg := testConfig(t)
	cfg.Rate, cfg.ByteRate = 0, 0 // the quota, not the send rate, is under test
	cfg.MaxQueuedBytesPerSender = limit
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	recipients := []string{bob.pub()}
	for i := range 3 {
		r, sess := connectSession(t, b, alice, fmt.Sprintf("s%d", i))
		r.closeClean()
		recipients = append(recipients, sess.PublicHex())
	}
	body := strings.Repeat("x", 60000)
	var sends []wire.Send
	for i := range 40 {
		sends = append(sends, dm(t, alice, recipients[i%len(recipients)], body))
	}
	a := connect(t, b, alice, false, nil)
	ok, refused := burstAcks(t, a, sends)
	if ok == 0 || refused[wire.CodeQuotaExceeded] != len(sends)-ok {
		t.Fatalf("queued %d, refused %v; want some queued and the rest quota_exceeded", ok, refused)
	}
	if ok*len(sends[0].Ciphertext) > limit {
		t.Fatalf("queued %d messages of %d bytes: over the %d-byte quota", ok, len(sends[0].Ciphertext), limit)
	}
	if n := counterValue(t, b, "claudemesh_limits_tripped_total", "queued_bytes_per_sender"); n != float64(len(sends)-ok) {
		t.Fatalf("limits_tripped{queued_bytes_per_sender} = %v, want %d", n, len(sends)-ok)
	}
	// Another member is not held by alice's quota.
	carol := addMember(t, b, alice, "team", "carol")
	c := connect(t, b, carol, false, nil)
	if ack := c.sendAck(dm(t, carol, bob.pub(), body)); ack.Error != nil {
		t.Fatalf("carol's send: %+v", ack.Error)
	}

	// The usage is derived from the store again at start.
	b.Close()
	b = startWith(t, cfg)
	a = connect(t, b, alice, false, nil)
	if ack := a.sendAck(dm(t, alice, bob.pub(), body)); ack.Error == nil || ack.Error.Code != wire.CodeQuotaExceeded {
		t.Fatalf("after a restart the quota was forgotten: %+v", ack)
	}
	// Bob fetching his messages gives alice room again.
	bc := connect(t, b, bob, true, nil)
	fromAlice := (ok + len(recipients) - 1) / len(recipients)
	for range fromAlice + 1 { // and carol's
		p := bc.nextPush()
		bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}
	waitFor(t, "bob's acks to free alice's quota", func() bool {
		b.hub.mu.Lock()
		ms := b.hub.meshes[alice.meshID]
		b.hub.mu.Unlock()
		ms.mu.Lock()
		defer ms.mu.Unlock()
		return ms.pending[bob.pub()] == 0
	})
	if ack := a.sendAck(dm(t, alice, bob.pub(), body)); ack.Error != nil {
		t.Fatalf("after bob fetched: %+v", ack.Error)
	}
}

// One sender may hold only --max-pending-per-sender places of a
// recipient's queue, so it cannot fill another member's queue alone.
func TestPendingPerSenderShareOfARecipientQueue(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.Rate = 0; c.MaxPending = 20; c.MaxPendingPerSender = 5 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	a := connect(t, b, alice, false, nil)
	var sends []wire.Send
	for range 12 {
		sends = append(sends, dm(t, alice, bob.pub(), "a"))
	}
	ok, refused := burstAcks(t, a, sends)
	if ok != 5 || refused[wire.CodeRecipientQueueFull] != 7 {
		t.Fatalf("alice queued %d, refused %v; want 5 queued and 7 recipient_queue_full", ok, refused)
	}
	// A multi from alice skips bob (full for her) but reaches carol.
	ack := a.sendAck(multi(t, alice, "*", "hi", bob.pub(), carol.pub()))
	if ack.Error != nil || ack.Pending == nil || *ack.Pending != 1 {
		t.Fatalf("multi: %+v", ack)
	}
	c := connect(t, b, carol, false, nil)
	if ack := c.sendAck(dm(t, carol, bob.pub(), "c")); ack.Error != nil {
		t.Fatalf("carol's share was taken by alice: %+v", ack.Error)
	}
	if n := counterValue(t, b, "claudemesh_limits_tripped_total", "max_pending_per_sender"); n < 8 {
		t.Fatalf("limits_tripped{max_pending_per_sender} = %v, want at least 8", n)
	}
}

// The bytes queued in a mesh in total are capped too
// (--max-queued-bytes-per-mesh): many members each within their own quota
// cannot fill the disk.
func TestQueuedBytesPerMesh(t *testing.T) {
	t.Parallel()
	const meshLimit = 600 << 10
	b := startBroker(t, func(c *Config) {
		c.Rate = 0
		c.MaxQueuedBytesPerSender = 400 << 10
		c.MaxQueuedBytesPerMesh = meshLimit
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	body := strings.Repeat("x", 60000)
	total := 0
	for _, from := range []ident{alice, carol} {
		r := connect(t, b, from, false, nil)
		var sends []wire.Send
		for range 8 {
			sends = append(sends, dm(t, from, bob.pub(), body))
		}
		ok, refused := burstAcks(t, r, sends)
		if ok == 0 || refused[wire.CodeQuotaExceeded] != len(sends)-ok {
			t.Fatalf("%s queued %d, refused %v", from.name, ok, refused)
		}
		total += ok * len(sends[0].Ciphertext)
	}
	if total > meshLimit {
		t.Fatalf("%d bytes of ciphertext queued in the mesh: over its %d-byte quota", total, meshLimit)
	}
	if n := counterValue(t, b, "claudemesh_limits_tripped_total", "queued_bytes_per_mesh"); n == 0 {
		t.Fatal("limits_tripped{queued_bytes_per_mesh} not counted")
	}
}
