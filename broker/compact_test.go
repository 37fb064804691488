package broker

import (
	"errors"
	"strings"
	"testing"

	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// `broker compact` gives back the pages a drained queue freed (bbolt never
// shrinks its file), refuses while the broker runs, and keeps every
// record: a message still queued is delivered after it.
func TestCompactShrinksAStoppedBrokersFile(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Rate, cfg.ByteRate = 0, 0 // 40 large messages at once: the file, not the send rate, is under test
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	a := connect(t, b, alice, false, nil)
	body := strings.Repeat("z", 60000)
	const n = 40
	var sends []wire.Send
	for range n {
		sends = append(sends, dm(t, alice, bob.pub(), body))
	}
	if ok, refused := burstAcks(t, a, sends); ok != n {
		t.Fatalf("queued %d, refused %v", ok, refused)
	}
	kept := a.sendAck(dm(t, alice, carol.pub(), "still queued"))
	if kept.Error != nil {
		t.Fatal(kept.Error)
	}
	bc := connect(t, b, bob, true, nil)
	for range n {
		p := bc.nextPush()
		bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}
	waitFor(t, "bob's acks", func() bool { return counterValue(t, b, "claudemesh_deliveries_pending", "") == 1 })

	_, err := compactStore(cfg.DataDir)
	var ce *cliui.Error
	if !errors.As(err, &ce) || ce.Code != "broker_running" {
		t.Fatalf("compact while the broker runs: %v", err)
	}
	b.Close()
	res, err := compactStore(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Replaced || res.After >= res.Before || res.Before-res.After < n*60000/2 {
		t.Fatalf("compacted %d → %d bytes; %d messages of 60 KB were freed", res.Before, res.After, n)
	}
	t.Logf("broker.db %d → %d bytes", res.Before, res.After)

	// A second run finds nothing to reclaim and leaves the file alone.
	again, err := compactStore(cfg.DataDir)
	if err != nil || again.Replaced || again.Before != res.After {
		t.Fatalf("second compaction: %+v %v", again, err)
	}

	b2 := startWith(t, cfg)
	cc := connect(t, b2, carol, true, nil)
	if p := cc.nextPush(); p.MessageID != kept.MessageID || openPush(t, &p, carol) != "still queued" {
		t.Fatalf("after compaction: %+v", p)
	}
}
