package daemon

import (
	"testing"
	"time"
)

// A state that began on an earlier day is said with its date: "since
// 23:10:04" the next morning read as a time to come.
func TestSinceTextHasTheDateFromAnotherDay(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, loc)
	for _, c := range []struct {
		since time.Time
		want  string
	}{
		{time.Date(2026, 12, 7, 7, 59, 30, 0, loc), "07:59:30 CET, 30s ago"},
		{time.Date(2026, 12, 6, 23, 10, 4, 0, loc), "2026-12-06 23:10:04 CET, 8h49m56s ago"},
	} {
		if got := sinceText(c.since, now); got != c.want {
			t.Errorf("sinceText(%v) = %q, want %q", c.since, got, c.want)
		}
	}
}
