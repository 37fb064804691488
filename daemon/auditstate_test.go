package daemon

import (
	"errors"
	"testing"

	"claudemesh/daemon/localapi"
)

// TestAuditFindingOutlivesACheckThatCouldNotRun: a check that cannot run
// (the connection cut, audit_query never answered) keeps what the last
// check that ran found wrong, beside its error, so a broker cannot turn a
// rollback the daemon found into "could not run" by cutting the next
// connection; a check that runs replaces both.
func TestAuditFindingOutlivesACheckThatCouldNotRun(t *testing.T) {
	var a auditState
	a.set("acme", localapi.AuditStatus{CheckedAt: 1, Seq: 5, Problem: "rollback", FirstBadSeq: 6, Message: "gone"})
	a.couldNotRun("acme", 2, errors.New("connection closed"))
	got := a.snapshot()["acme"]
	want := localapi.AuditStatus{CheckedAt: 1, Seq: 5, Problem: "rollback", FirstBadSeq: 6, Message: "gone", Error: "connection closed"}
	if got != want {
		t.Fatalf("after a check that could not run: %+v, want %+v", got, want)
	}
	a.set("acme", localapi.AuditStatus{CheckedAt: 3, OK: true, Seq: 7})
	a.couldNotRun("acme", 4, errors.New("timed out"))
	if got, want := a.snapshot()["acme"], (localapi.AuditStatus{CheckedAt: 4, Error: "timed out"}); got != want {
		t.Fatalf("a sound chain, then a check that could not run: %+v, want %+v", got, want)
	}
	if a.hasProblem("acme") {
		t.Fatal("a sound chain has a problem")
	}
	a.set("acme", localapi.AuditStatus{CheckedAt: 6, Seq: 7, Problem: "tampered", FirstBadSeq: 3})
	if !a.hasProblem("acme") {
		t.Fatal("a tampered chain has no problem: the next check would be one from the head, which does not read entry 3 again")
	}
	a.couldNotRun("other", 5, errors.New("no answer"))
	if got, want := a.snapshot()["other"], (localapi.AuditStatus{CheckedAt: 5, Error: "no answer"}); got != want {
		t.Fatalf("never checked: %+v, want %+v", got, want)
	}
}
