package broker

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"claudemesh/wire"
)

// A send refused with a code to send it again (here recipient_queue_full)
// holds its line: a later send of the same connection to the same target,
// which a pipelining client wrote before it read the refusal, is refused
// too, even once the recipient's queue has room, until the refused one
// comes again; then both go, in order. Another target is not held.
func TestRefusedSendHoldsItsLine(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.MaxPending = 1; c.Rate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	a := connect(t, b, alice, false, nil)

	first := dm(t, alice, bob.pub(), "1")
	if ack := a.sendAck(first); ack.Error != nil {
		t.Fatalf("first send: %+v", ack.Error)
	}
	second := dm(t, alice, bob.pub(), "2")
	if ack := a.sendAck(second); ack.Error == nil || ack.Error.Code != wire.CodeRecipientQueueFull {
		t.Fatalf("second send with bob's queue full: %+v", ack)
	}
	// Bob reads and acks the first: his queue has room again.
	bc := connect(t, b, bob, true, nil)
	p := bc.nextPush()
	if got := openPush(t, &p, bob); got != "1" {
		t.Fatalf("bob's first push %q", got)
	}
	bc.ackDurably(p.MessageID)

	third := dm(t, alice, bob.pub(), "3")
	ack := a.sendAck(third)
	if ack.Error == nil || ack.Error.Code != wire.CodeRecipientQueueFull || !strings.Contains(ack.Error.Message, second.ID) {
		t.Fatalf("third send, behind the refused second: %+v, want recipient_queue_full naming %s", ack, second.ID)
	}
	if ack.Error.RetryAfterMs <= 0 {
		t.Fatalf("a held send's refusal has no retryAfterMs: %+v", ack.Error)
	}
	// Another target of the same connection is not held.
	if ack := a.sendAck(dm(t, alice, carol.pub(), "to carol")); ack.Error != nil {
		t.Fatalf("a send to carol: %+v", ack.Error)
	}
	// The second again, then the third again: both go, in order.
	if ack := a.sendAck(second); ack.Error != nil {
		t.Fatalf("the second again: %+v", ack.Error)
	}
	p = bc.nextPush()
	if got := openPush(t, &p, bob); got != "2" {
		t.Fatalf("bob's second push %q, want 2", got)
	}
	bc.ackDurably(p.MessageID)
	if ack := a.sendAck(third); ack.Error != nil {
		t.Fatalf("the third again: %+v", ack.Error)
	}
	p = bc.nextPush()
	if got := openPush(t, &p, bob); got != "3" {
		t.Fatalf("bob's third push %q, want 3", got)
	}
}

// Two sends of a line refused for their own reason: the first, sent
// again, is not held behind the second (which the client sends after it),
// and a hold ends after Config.LineHold for a client that gave up on the
// refused message.
func TestRefusedSendsComeAgainInOrder(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.MaxPending = 1; c.Rate = 0; c.LineHold = 300 * time.Millisecond })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	if ack := a.sendAck(dm(t, alice, bob.pub(), "1")); ack.Error != nil {
		t.Fatalf("first send: %+v", ack.Error)
	}
	second, third := dm(t, alice, bob.pub(), "2"), dm(t, alice, bob.pub(), "3")
	for _, s := range []wire.Send{second, third} {
		if ack := a.sendAck(s); ack.Error == nil || ack.Error.Code != wire.CodeRecipientQueueFull {
			t.Fatalf("send with bob's queue full: %+v", ack)
		}
	}
	bc := connect(t, b, bob, true, nil)
	p := bc.nextPush()
	bc.ackDurably(p.MessageID)
	if ack := a.sendAck(second); ack.Error != nil {
		t.Fatalf("the second again: %+v", ack.Error)
	}
	p = bc.nextPush()
	if got := openPush(t, &p, bob); got != "2" {
		t.Fatalf("bob's push %q, want 2", got)
	}
	bc.ackDurably(p.MessageID)
	if ack := a.sendAck(third); ack.Error != nil {
		t.Fatalf("the third again: %+v", ack.Error)
	}
	p = bc.nextPush()
	bc.ackDurably(p.MessageID)

	// Refused, and never sent again: a new message of the line is held
	// for LineHold, then goes.
	if ack := a.sendAck(dm(t, alice, bob.pub(), "4")); ack.Error != nil {
		t.Fatalf("fourth send: %+v", ack.Error)
	}
	if ack := a.sendAck(dm(t, alice, bob.pub(), "dropped")); ack.Error == nil || ack.Error.Code != wire.CodeRecipientQueueFull {
		t.Fatalf("send with bob's queue full: %+v", ack)
	}
	p = bc.nextPush()
	bc.ackDurably(p.MessageID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ack := a.sendAck(dm(t, alice, bob.pub(), "5"))
		if ack.Error == nil {
			break
		}
		if !strings.Contains(ack.Error.Message, "held behind") || time.Now().After(deadline) {
			t.Fatalf("a new message after the hold: %+v", ack.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A message committed while a connection that just attached waits for its
// first refill is pushed after the backlog that refill pushes, not ahead
// of it (a daemon back after a fail-over got the first new message of a
// sender before that sender's queued ones).
func TestNewMessageWaitsForTheBacklogAtConnect(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var bobKey atomic.Value
	bobKey.Store("")
	b := startBroker(t, func(c *Config) {
		c.Rate = 0
		c.testHookBeforeRefill = func(pubkey string) {
			if pubkey == bobKey.Load().(string) {
				once.Do(func() {
					close(entered)
					<-release
				})
			}
		}
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	bobKey.Store(bob.pub())
	a := connect(t, b, alice, false, nil)
	for i := range 5 {
		if ack := a.sendAck(dm(t, alice, bob.pub(), strconv.Itoa(i))); ack.Error != nil {
			t.Fatal(ack.Error)
		}
	}
	connected := make(chan *rawConn, 1)
	go func() { connected <- connect(t, b, bob, true, nil) }()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("bob's connection never refilled")
	}
	if ack := a.sendAck(dm(t, alice, bob.pub(), "5")); ack.Error != nil {
		t.Fatal(ack.Error)
	}
	close(release)
	bc := <-connected
	for i := range 6 {
		p := bc.nextPush()
		if got := openPush(t, &p, bob); got != strconv.Itoa(i) {
			t.Fatalf("push %d is %q, want %d", i, got, i)
		}
	}
}
