package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestEntryOfANewerSchemaHalts: an entry written by a node on a newer
// store schema (a mixed-version cluster) stops this node from applying
// the log, with both versions named, instead of being applied to a
// layout it was not written for. One of an older schema (what the nodes
// wrote before an upgrade, replayed after it) is applied, as before the
// header. This node's own entries carry its schema.
func TestEntryOfANewerSchemaHalts(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "schema", 1), EngineOptions{})
	e := es[0]
	if err := putKey(e, "k1", 16); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	own, err := e.stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got := own.Header.Get(schemaHeader); got != ourSchema {
		t.Fatalf("this node's entry carries schema %q, want %q", got, ourSchema)
	}

	older := &nats.Msg{Subject: e.subject, Data: own.Data, Header: nats.Header{schemaHeader: []string{"1"}}}
	ack, err := e.js.PublishMsg(ctx, older)
	if err != nil {
		t.Fatal(err)
	}
	for e.Applied() < ack.Sequence {
		if err := e.haltErr(); err != nil {
			t.Fatalf("halted on an entry of an older schema: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("the older entry %d was not applied; at %d", ack.Sequence, e.Applied())
		}
		time.Sleep(10 * time.Millisecond)
	}

	newer := &nats.Msg{Subject: e.subject, Data: own.Data, Header: nats.Header{schemaHeader: []string{"999"}}}
	if _, err := e.js.PublishMsg(ctx, newer); err != nil {
		t.Fatal(err)
	}
	for e.haltErr() == nil {
		if ctx.Err() != nil {
			t.Fatalf("no halt; applied %d", e.Applied())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.haltErr(); !strings.Contains(err.Error(), "store schema 999, newer than this node's "+ourSchema) {
		t.Fatalf("halt: %v", err)
	}
	if err := putKey(e, "k2", 16); err == nil {
		t.Fatal("a halted node took a write")
	}
}
