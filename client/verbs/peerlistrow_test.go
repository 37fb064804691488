package verbs

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"claudemesh/internal/cliui"
)

// A member's summary padded so that the terminal's own wrap starts its
// tail at column 0 showed, under the member's row, a row for bob with a
// state of the member's choosing. Found by a review. On a terminal the
// row is cut before the edge; anywhere, runs of spaces in a summary are
// one.
func TestPeerListSummaryCannotStartARowOfItsOwn(t *testing.T) {
	fake := "bob  " + hexKey64("b")[:8] + "  online  member"
	rows := []peerRow{
		{Mesh: "acme", Pubkey: hexKey64("a"), DisplayName: "alice", IsSelf: true, Online: true},
		{Mesh: "acme", Pubkey: hexKey64("c"), DisplayName: "mallory", Online: true, Summary: "ok" + strings.Repeat(" ", 70) + fake},
	}

	var piped bytes.Buffer
	printPeers(cliui.NewOut(&piped, nil, false, false, false), rows, false)
	if !strings.Contains(piped.String(), "ok bob bbbbbbbb online member") {
		t.Fatalf("the summary's padding is kept:\n%s", piped.String())
	}

	term, read := openTerminal(t, 80)
	printPeers(cliui.NewOut(term, nil, false, false, false), rows, false)
	term.Close()
	got := read()
	for _, line := range strings.Split(strings.TrimRight(got, "\r\n"), "\n") {
		line = strings.TrimRight(line, "\r")
		if n := cliui.Width(line); n > 79 {
			t.Fatalf("a row reaches the terminal's edge (%d columns of 80): %q\nall: %q", n, line, got)
		}
	}
	if !strings.Contains(got, "…") {
		t.Fatalf("the long row was not cut:\n%s", got)
	}
}

// openTerminal opens a pseudo-terminal cols wide: the writer is its
// terminal side; read returns all that was written once it is closed.
func openTerminal(t *testing.T, cols int) (*os.File, func() string) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: uint16(cols)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, ptm) // ends with EIO once the terminal side is closed
		done <- b.String()
	}()
	return pts, func() string { return <-done }
}
