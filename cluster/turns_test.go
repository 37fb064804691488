package cluster

import (
	"testing"
	"time"
)

func TestWriterOf(t *testing.T) {
	for id, want := range map[string]string{
		"n1-lx3k9a-17":        "n1",
		"eu-west-1-lx3k9a-17": "eu-west-1",
		"n1-17":               "",
		"":                    "",
		"-a-1":                "",
	} {
		if got := writerOf(id); got != want {
			t.Errorf("writerOf(%q) = %q, want %q", id, got, want)
		}
	}
}

// A node that asks for a turn makes the others hold their publishes until
// its entry reaches them (or the time is up); of two that ask at once, the
// smaller name goes first.
func TestTurnHoldsOthersUntilTheEntryArrives(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "turn", 3), EngineOptions{})
	if err := putKey(es[0], "warm", 8); err != nil {
		t.Fatal(err)
	}
	waitAllApplied(t, es)

	es[0].turns.ask(es[0].nc, es[0].cluster, turnMax)
	for _, e := range es[1:] {
		deadline := time.Now().Add(30 * time.Second)
		for e.turns.holding() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("node %s does not hold for n1", e.node)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if es[0].turns.holding() != 0 {
		t.Fatal("the asking node holds for itself")
	}
	// Whatever remains of the hold asked for, only n1's entry can end
	// one of an hour.
	for _, e := range es[1:] {
		e.turns.onRequest("n1", time.Hour)
	}
	es[0].turns.wrote()
	if err := putKey(es[0], "mine", 8); err != nil {
		t.Fatal(err)
	}
	waitAllApplied(t, es)
	for _, e := range es[1:] {
		if d := e.turns.holding(); d != 0 {
			t.Fatalf("node %s still holds (%v) after n1's entry arrived", e.node, d)
		}
	}

	// n2 asks while n1 is asking: n1 does not hold for n2, n2 holds for n1.
	es[0].turns.mu.Lock()
	es[0].turns.asking = true
	es[0].turns.mu.Unlock()
	es[1].turns.mu.Lock()
	es[1].turns.asking = true
	es[1].turns.mu.Unlock()
	es[0].turns.onRequest("n2", time.Second)
	es[1].turns.onRequest("n1", time.Second)
	if es[0].turns.holding() != 0 {
		t.Fatal("n1 holds for n2 although it asked first in name order")
	}
	if es[1].turns.holding() == 0 {
		t.Fatal("n2 does not hold for n1")
	}
}
