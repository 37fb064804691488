package natsquiet

import (
	"os"
	"strconv"
	"testing"

	"github.com/nats-io/nats-server/v2/server/pse"
)

// TestStopEndsTheSampler checks that the variable named by the linkname is
// the sampler's file (it starts as this process's /proc stat file, which
// pse.ProcUsage reads) and that after Stop the sampler's reads fail, which
// is what ends its timer.
func TestStopEndsTheSampler(t *testing.T) {
	if want := "/proc/" + strconv.Itoa(os.Getpid()) + "/stat"; procStatFile != want {
		t.Fatalf("pse's procStatFile is %q, want %q: nats-server changed its sampler", procStatFile, want)
	}
	var pcpu float64
	var rss, vss int64
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err != nil || rss <= 0 {
		t.Fatalf("before Stop: ProcUsage rss %d, %v", rss, err)
	}
	Stop()
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err == nil {
		t.Fatal("after Stop the sampler's file still reads: its timer would keep re-arming")
	}
}
