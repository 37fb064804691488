package gcfloor

import (
	"os"
	"testing"
)

// unsetGOGC removes GOGC for the rest of the test (t.Setenv has already
// arranged for it to be restored).
func unsetGOGC(t *testing.T) {
	t.Helper()
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
}
