package web

import (
	"log/slog"
	"strings"
	"testing"
)

// TestRefusalsAreLoggedOnceAMinute (a new user's trial): another local
// user looping on the page's port grew daemon.log by a line per
// connection. One line per kind (and uid) a minute now, the next saying
// how many were refused meanwhile.
func TestRefusalsAreLoggedOnceAMinute(t *testing.T) {
	logs := &syncWriter{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	l := newRefusalLog()
	for range 1000 {
		l.warn(log, "uid 65534", "web: a connection of another user refused", "uid", 65534)
	}
	l.warn(log, "uid 1001", "web: a connection of another user refused", "uid", 1001)
	if n := strings.Count(logs.String(), "another user refused"); n != 2 {
		t.Fatalf("%d lines for 1,001 refusals of two uids within a minute:\n%s", n, logs.String())
	}
	// The next line of a kind counts what was left out.
	l.lines.Age("uid 65534", refusalEvery)
	l.warn(log, "uid 65534", "web: a connection of another user refused", "uid", 65534)
	if !strings.Contains(logs.String(), "refusedSinceLastLine=999") {
		t.Fatalf("the count of the refusals left out is missing:\n%s", logs.String())
	}
}
