package broker

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyFile copies a stopped broker's file for a test.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// wipeNode leaves only broker.key in a node's data directory: what a
// machine that lost its disk gets back from the operator.
func wipeNode(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "broker.key" {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// queueDMs has from send n DMs to to through b while to is away, and
// returns them (message id → text "<prefix> <i>").
func queueDMs(t *testing.T, b *Broker, from, to ident, n int, prefix string) map[string]string {
	t.Helper()
	a := connect(t, b, from, true, nil)
	defer a.ws.Close()
	want := map[string]string{}
	for i := range n {
		text := fmt.Sprintf("%s %d", prefix, i)
		ack := a.sendAck(dm(t, from, to.pub(), text))
		if ack.Error != nil {
			t.Fatalf("ack %+v", ack.Error)
		}
		want[ack.MessageID] = text
	}
	return want
}

// receiveAll reads pushes on r until every message of want (id → text)
// arrived, acks them, and checks each text.
func receiveAll(t *testing.T, r *rawConn, to ident, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	var ids []string
	for len(got) < len(want) {
		p := r.nextPush()
		got[p.MessageID] = openPush(t, &p, to)
		ids = append(ids, p.MessageID)
	}
	r.ack(ids...)
	for id, text := range want {
		if got[id] != text {
			t.Fatalf("message %s: got %q, want %q", id, got[id], text)
		}
	}
}

// restoredGetsEverything checks that bob, connecting to the restored
// cluster, gets every queued message, and that the cluster takes writes.
func restoredGetsEverything(t *testing.T, bs []*Broker, alice, bob ident, want map[string]string) {
	t.Helper()
	b := connectWhenKnown(t, bs[1], bob)
	receiveAll(t, b, bob, want)
	a := connectWhenKnown(t, bs[2], alice)
	ack := a.sendAck(dm(t, alice, bob.pub(), "after the restore"))
	if ack.Error != nil {
		t.Fatalf("a send after the restore: %+v", ack.Error)
	}
	if p := b.nextPush(); p.MessageID != ack.MessageID || openPush(t, &p, bob) != "after the restore" {
		t.Fatalf("after the restore bob got %s, want %s", p.MessageID, ack.MessageID)
	}
}

// A cluster whose every node lost its replicated log comes back from one
// node's broker.db: a node started on a broker.db from the old log refuses
// (it would skip the new log's entries), and after `cluster-restore` on
// every node with the same file the members and queued messages are all
// there and the cluster takes writes.
func TestClusterRestoreWholeClusterFromOneNode(t *testing.T) {
	t.Parallel()
	bs, cfgs := startClusterConfigs(t, "restore", 3, nil)
	alice := createMesh(t, bs[0], "team", "alice")
	bob := addMember(t, bs[0], alice, "team", "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, bob.pub())
	}
	want := queueDMs(t, bs[0], alice, bob, 10, "queued")
	closeAll(bs)
	backup := filepath.Join(t.TempDir(), "broker.db")
	copyFile(t, filepath.Join(cfgs[0].DataDir, "broker.db"), backup)

	// Every node lost its log, but kept its broker.db.
	for _, c := range cfgs {
		if err := os.RemoveAll(filepath.Join(c.DataDir, "jetstream")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := startConfigs(t, cfgs); err == nil || !strings.Contains(err.Error(), "cluster-restore") {
		t.Fatalf("nodes with a broker.db from the old log started: %v", err)
	}

	for _, c := range cfgs {
		wipeNode(t, c.DataDir)
		if _, err := clusterRestore(c.DataDir, backup, false); err != nil {
			t.Fatal(err)
		}
	}
	restored, err := startConfigs(t, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	restoredGetsEverything(t, restored, alice, bob, want)
}

// A single broker's data becomes a cluster's: its broker.key and, through
// `cluster-restore`, its broker.db on each of three nodes. Members keep the
// broker key they pinned and find their queued messages.
func TestClusterRestoreFromSingleBroker(t *testing.T) {
	t.Parallel()
	single := startBroker(t, nil)
	alice := createMesh(t, single, "team", "alice")
	bob := addMember(t, single, alice, "team", "bob")
	want := queueDMs(t, single, alice, bob, 5, "single")
	dir := single.cfg.DataDir
	single.Close()

	cfgs := clusterConfigs(t, "fromsingle", 3, nil)
	key, err := os.ReadFile(filepath.Join(dir, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfgs {
		if err := os.WriteFile(filepath.Join(c.DataDir, "broker.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := clusterRestore(c.DataDir, filepath.Join(dir, "broker.db"), false); err != nil {
			t.Fatal(err)
		}
	}
	// Refusals: a second restore onto a node that has a broker.db, and a
	// restore where the node still has a log.
	if _, err := clusterRestore(cfgs[0].DataDir, filepath.Join(dir, "broker.db"), false); err == nil {
		t.Fatal("a restore over an existing broker.db was accepted without --replace")
	}
	if err := os.MkdirAll(filepath.Join(cfgs[0].DataDir, "jetstream", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := clusterRestore(cfgs[0].DataDir, filepath.Join(dir, "broker.db"), true); err == nil {
		t.Fatal("a restore beside a replicated log was accepted")
	}
	if err := os.RemoveAll(filepath.Join(cfgs[0].DataDir, "jetstream")); err != nil {
		t.Fatal(err)
	}

	bs, err := startConfigs(t, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	if bs[0].PublicKey() != single.PublicKey() {
		t.Fatal("the cluster does not sign with the single broker's key")
	}
	restoredGetsEverything(t, bs, alice, bob, want)
}
