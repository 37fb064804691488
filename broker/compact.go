package broker

import (
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/internal/cliui"
	"claudemesh/store"
)

// compactCommand is `claudemesh broker compact`: shrink a stopped broker's
// broker.db. bbolt reuses the pages freed when queues drain and messages
// are purged, but never gives them back to the file system, so a burst
// leaves the file at its peak size.
func compactCommand() *cli.Command {
	def := DefaultConfig()
	return &cli.Command{
		Name:  "compact",
		Usage: "shrink broker.db of a stopped broker to what it holds (offline; refuses while the broker runs)",
		Description: cliui.WithExamples(
			"Copies every record of broker.db into a new file without the free pages the old one kept, checks it,\n"+
				"and renames it over broker.db. It needs bbolt's exclusive file lock, so it refuses while a broker\n"+
				"has the file open: stop the broker first (systemctl stop claudemesh-broker). Needs free disk space\n"+
				"for the copy, about the size of the data broker.db holds.",
			"claudemesh broker compact --data /var/lib/claudemesh",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Value: def.DataDir, Usage: "the broker's data `DIR` (broker.db)"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 0, 0); err != nil {
				return err
			}
			out := cliui.OutFrom(c)
			res, err := compactStore(c.String("data"))
			if err != nil {
				return err
			}
			if out.JSONMode() {
				return out.JSON(res)
			}
			if !res.Replaced {
				out.Resultf("%s (%s) has no free space worth reclaiming; left as it was", res.Path, humanBytes(res.Before))
				return nil
			}
			out.Resultf("compacted %s: %s → %s", res.Path, humanBytes(res.Before), humanBytes(res.After))
			return nil
		},
	}
}

// compactResult is `broker compact --json`.
type compactResult struct {
	Path   string `json:"path"`
	Before int64  `json:"bytesBefore"`
	After  int64  `json:"bytesAfter"`
	// Replaced is false when the compacted copy was no smaller (bbolt's
	// Compact fills pages half full) and broker.db was left as it was.
	Replaced bool `json:"replaced"`
}

// compactStore compacts dataDir/broker.db, or says why it cannot.
func compactStore(dataDir string) (compactResult, error) {
	path := filepath.Join(dataDir, "broker.db")
	before, after, err := store.CompactFile(path, time.Second)
	switch {
	case errors.Is(err, store.ErrNothingToReclaim):
		return compactResult{Path: path, Before: before, After: before}, nil
	case errors.Is(err, fs.ErrNotExist):
		return compactResult{}, cliui.Errorf("not_found", "%s does not exist: nothing to compact", path).
			WithHint("--data names the broker's data directory (the one it runs with)")
	case errors.Is(err, store.ErrLocked):
		return compactResult{}, cliui.Errorf("broker_running", "%s is open in another process (a running broker): compaction needs it stopped", path).
			WithHint("stop the broker (systemctl stop claudemesh-broker), run claudemesh broker compact again, then start it")
	case err != nil:
		return compactResult{}, cliui.Errorf(cliui.CodeInternal, "%s could not be compacted: %v", path, err).
			WithHint("broker.db was left as it was")
	}
	return compactResult{Path: path, Before: before, After: after, Replaced: true}, nil
}
