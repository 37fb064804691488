package broker

import (
	"testing"
	"time"

	"claudemesh/wire"
)

// queueSentDMs sends n DMs from one member to another and waits for their
// acks; it returns the broker's message ids in send order.
func queueSentDMs(t *testing.T, c *rawConn, from ident, to string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	byID := map[string]int{}
	for i := range n {
		s := dm(t, from, to, "m")
		byID[s.ID] = i
		c.write(s)
	}
	for range n {
		var ack wire.Ack
		c.next(&ack, wire.TypeAck)
		if ack.Error != nil {
			t.Fatalf("ack error %+v", ack.Error)
		}
		ids[byID[ack.ID]] = ack.MessageID
	}
	return ids
}

// One member's queued messages that the recipient leaves unacked (its
// daemon refuses them: that sender holds its share of the inbox) must not
// hold the recipient's whole window: another member's message is pushed
// at once, not after --redeliver-after or after the flood is read (trial
// 18, finding 11). Two members flood here; the window's reserve is kept
// for senders with little in flight.
func TestOneSendersBacklogDoesNotHoldTheWindow(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		c.Rate, c.ByteRate = 0, 0
		c.RedeliverAfter = 10 * time.Minute // nothing here may wait for it
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	mal := addMember(t, b, alice, "team", "mallory")
	eve := addMember(t, b, alice, "team", "eve")
	mc := connect(t, b, mal, false, nil)
	ec := connect(t, b, eve, false, nil)
	flooded := map[string]bool{}
	for _, id := range queueSentDMs(t, mc, mal, bob.pub(), 300) {
		flooded[id] = true
	}
	for _, id := range queueSentDMs(t, ec, eve, bob.pub(), 300) {
		flooded[id] = true
	}

	bc := connect(t, b, bob, true, nil) // never acks the flood
	ac := connect(t, b, alice, false, nil)
	ack := ac.sendAck(dm(t, alice, bob.pub(), "important"))
	if ack.Error != nil {
		t.Fatalf("alice's send: %+v", ack.Error)
	}
	flood := 0
	for {
		p := bc.nextPush()
		if p.MessageID == ack.MessageID {
			break
		}
		if !flooded[p.MessageID] {
			t.Fatalf("unexpected push %+v", p)
		}
		flood++
	}
	if flood > maxInflight-reservePushes+2*reserveShare {
		t.Fatalf("%d of the flood in flight: the window's reserve was taken", flood)
	}
}

// A backlog from several senders is pushed round-robin, each sender's in
// its own order: a member with three queued messages behind another's
// hundred gets them among the first pushes, and nobody's order changes.
func TestRefillRoundRobinKeepsEachSendersOrder(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.Rate, c.ByteRate = 0, 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	mal := addMember(t, b, alice, "team", "mallory")
	mc := connect(t, b, mal, false, nil)
	ac := connect(t, b, alice, false, nil)
	malIDs := queueSentDMs(t, mc, mal, bob.pub(), 100)
	aliceIDs := queueSentDMs(t, ac, alice, bob.pub(), 3)

	bc := connect(t, b, bob, true, nil)
	var order []string
	seen := map[string]bool{}
	for len(order) < len(malIDs)+len(aliceIDs) {
		p := bc.nextPush()
		if seen[p.MessageID] {
			continue
		}
		seen[p.MessageID] = true
		order = append(order, p.MessageID)
		bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}
	pos := map[string]int{}
	for i, id := range order {
		pos[id] = i
	}
	for _, ids := range [][]string{malIDs, aliceIDs} {
		for i := 1; i < len(ids); i++ {
			if pos[ids[i]] < pos[ids[i-1]] {
				t.Fatalf("one sender's messages out of order: %d before %d", i, i-1)
			}
		}
	}
	if last := pos[aliceIDs[2]]; last >= 2*len(aliceIDs) {
		t.Fatalf("alice's third message was push %d: not round-robin with mallory's", last)
	}
}
