package store_test

import (
	"path/filepath"
	"testing"

	"claudemesh/store"
	"claudemesh/store/storetest"
)

// The conformance suite on a single broker's bbolt engine (the cluster's
// engine runs it in the cluster package).
func TestConformanceLocal(t *testing.T) {
	l, err := store.OpenLocal(filepath.Join(t.TempDir(), "broker.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	storetest.Run(t, []store.Engine{l})
}
