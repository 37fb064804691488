package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/cluster"
	"claudemesh/internal/cliui"
)

// clusterRestoreCommand is `claudemesh broker cluster-restore`: give a
// stopped cluster node a broker.db to start a new log from (cluster/
// restore.go says why that is consistent). Run on every node with the same
// file, after removing every node's jetstream directory.
func clusterRestoreCommand() *cli.Command {
	def := DefaultConfig()
	return &cli.Command{
		Name:  "cluster-restore",
		Usage: "start a cluster node from a broker.db backup (or a single broker's broker.db) with a new replicated log (offline)",
		Description: cliui.WithExamples(
			"For a cluster whose replicated log is gone (every node lost its jetstream directory) or a single\n"+
				"broker moving to a cluster. Stop every node, remove each node's <data>/jetstream, run this on each\n"+
				"node with the same --from file (a node's broker.db, a copy made with `bbolt compact -o` from a\n"+
				"stopped node, or a single broker's), then start the nodes. Every node then holds the same\n"+
				"records at the start of a new log. A node whose broker.db comes from an old log refuses to start\n"+
				"until this is done.",
			"claudemesh broker cluster-restore --data /var/lib/claudemesh --from /backup/broker.db",
			"claudemesh broker cluster-restore --data /var/lib/claudemesh --from /backup/broker.db --replace",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Value: def.DataDir, Usage: "the node's data `DIR` (broker.key stays; broker.db is written)"},
			&cli.StringFlag{Name: "from", Required: true, Usage: "the broker.db `FILE` to start from (not open in a running broker)"},
			&cli.BoolFlag{Name: "replace", Usage: "move the node's existing broker.db aside (broker.db.replaced-<time>) instead of refusing"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 0, 0); err != nil {
				return err
			}
			out := cliui.OutFrom(c)
			res, err := clusterRestore(c.String("data"), c.String("from"), c.Bool("replace"))
			if err != nil {
				return err
			}
			if out.JSONMode() {
				return out.JSON(res)
			}
			out.Resultf("%s now holds the records of %s at the start of a new log", res.Path, res.From)
			if res.Replaced != "" {
				out.Linef("the node's previous broker.db is at %s", res.Replaced)
			}
			out.Linef("do the same on every node of the cluster with the same file, then start them all")
			return nil
		},
	}
}

type clusterRestoreResult struct {
	Path     string `json:"path"`
	From     string `json:"from"`
	Replaced string `json:"replacedMovedTo,omitempty"`
}

func clusterRestore(dataDir, from string, replace bool) (clusterRestoreResult, error) {
	dst := filepath.Join(dataDir, "broker.db")
	res := clusterRestoreResult{Path: dst, From: from}
	if abs, err := filepath.Abs(from); err == nil {
		if d, err := filepath.Abs(dst); err == nil && d == abs {
			return res, cliui.Errorf(cliui.CodeInvalidArgument, "--from is this node's own broker.db").
				WithHint("copy it elsewhere first (claudemesh broker compact, or cp while the node is stopped), then restore from the copy")
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dataDir, "jetstream")); err == nil && len(entries) > 0 {
		return res, cliui.Errorf(cliui.CodeInvalidArgument, "%s still holds a replicated log", filepath.Join(dataDir, "jetstream")).
			WithHint("a restore starts a new log: stop every node and remove its jetstream directory first (that deletes the cluster's log; keep a copy if unsure)")
	}
	if _, err := os.Stat(dst); err == nil {
		if !replace {
			return res, cliui.Errorf(cliui.CodeInvalidArgument, "%s exists", dst).
				WithHint("add --replace to move it aside, or remove it")
		}
		res.Replaced = dst + ".replaced-" + strconv.FormatInt(time.Now().Unix(), 10)
		if err := os.Rename(dst, res.Replaced); err != nil {
			return res, cliui.Errorf(cliui.CodeInternal, "move %s aside: %v", dst, err)
		}
	}
	if err := cluster.PrepareRestore(from, dst); err != nil {
		if errors.Is(err, cluster.ErrRestoreExists) {
			return res, cliui.Errorf(cliui.CodeInvalidArgument, "%s exists", dst)
		}
		return res, cliui.Errorf(cliui.CodeInvalidArgument, "%v", err).
			WithHint("--from must be a claudemesh broker.db that no running broker has open")
	}
	return res, nil
}
