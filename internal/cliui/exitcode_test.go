package cliui

import "testing"

// TestUnavailableIsExit5: a broker cluster without quorum refuses writes
// `unavailable`; the direct path said exit 5, while the same refusal
// relayed by the daemon (a status summary, a kick) was exit 1, "failure
// not covered below". It is 5 whichever transport relays it.
func TestUnavailableIsExit5(t *testing.T) {
	if got := ExitCode("unavailable"); got != ExitUnreachable {
		t.Fatalf("ExitCode(unavailable) = %d, want %d", got, ExitUnreachable)
	}
}
