package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestEntryOfAnotherSchemaHalts: an entry written by a node on another
// store schema (a mixed-version cluster) stops this node from applying
// the log, with both versions named, instead of being applied to a
// layout it was not written for; its own entries carry its schema.
func TestEntryOfAnotherSchemaHalts(t *testing.T) {
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
	if err := e.haltErr(); !strings.Contains(err.Error(), "store schema 999; this node's is "+ourSchema) {
		t.Fatalf("halt: %v", err)
	}
	if err := putKey(e, "k2", 16); err == nil {
		t.Fatal("a halted node took a write")
	}
}
