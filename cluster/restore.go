package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Restoring a whole cluster. The log (in each node's jetstream/) is the
// cluster's state; a node's broker.db is the log applied. When every node
// lost jetstream/ (or the cluster is new and should start from a single
// broker's data), no log holds the records any more, and a snapshot cannot
// help: snapshots live in JetStream too. What can: every node starts from
// the same broker.db with a new, empty log. Identical copies at log
// position 0 are exactly what the nodes would hold after replaying a log
// that produced those records, so the entries written from then on apply
// on top of the same state everywhere.
//
// PrepareRestore writes such a copy. The one thing it changes is the log
// position the source recorded (meta/clusterApplied): a cluster node's
// broker.db is at some entry of the old log, which means nothing to the new
// one (the node would skip that many of its entries). A single broker's
// broker.db has none, so the same command turns a single broker's data
// into a cluster's.

// KeyRestored, in the meta bucket, marks a copy PrepareRestore wrote: a
// cluster node's copy at the start of a new log, not a single broker's
// file (which a cluster node refuses: its meshes are in no log).
var KeyRestored = []byte("clusterRestored")

// ErrRestoreExists: the destination already has a broker.db.
var ErrRestoreExists = errors.New("cluster: the node already has a broker.db")

// PrepareRestore copies the broker database src to dst (which must not
// exist) as a node's copy at the start of a new log. src must not be open
// in a running broker.
func PrepareRestore(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return ErrRestoreExists
	}
	in, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	if err := in.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil || tx.Bucket([]byte("meshes")) == nil {
			return fmt.Errorf("%s is not a claudemesh broker database (no meta or meshes bucket)", src)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	tmp := dst + ".restoring"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = in.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("copy %s: %w", src, err)
	}
	out, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		os.Remove(tmp)
		return err
	}
	err = out.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Delete(keyApplied); err != nil {
			return err
		}
		if err := meta.Delete(keyLogID); err != nil {
			return err
		}
		return meta.Put(KeyRestored, []byte(time.Now().UTC().Format(time.RFC3339)))
	})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// keyLogID, in the meta bucket, names the log the copy follows: the log
// stream's creation time, which a log created anew does not share.
var keyLogID = []byte("clusterLog")

// checkLogIdentity refuses a copy applied from another log: one past this
// log's end, or one recording another log's identity. A copy without an
// identity (a new node, a restored copy, a node of an earlier build)
// takes this log's.
func (e *Engine) checkLogIdentity(ctx context.Context) error {
	info, err := e.streamInfo(ctx)
	if err != nil {
		return err
	}
	id := []byte(info.Created.UTC().Format(time.RFC3339Nano))
	applied := e.applied.Load()
	var recorded []byte
	e.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLogID); v != nil {
			recorded = append([]byte(nil), v...)
		}
		return nil
	})
	switch {
	case applied > info.State.LastSeq:
		return aheadOfLog(applied, info.State.LastSeq)
	case recorded != nil && !bytes.Equal(recorded, id) && applied > 0:
		return otherLog(string(recorded), string(id))
	case bytes.Equal(recorded, id):
		return nil
	}
	return e.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyLogID, id) })
}

func otherLog(recorded, current string) error {
	return fmt.Errorf("cluster: this node's broker.db was applied from the replicated log created at %s, but the cluster's log was created at %s: "+
		"following it would skip its first entries. "+restoreAdvice, recorded, current)
}

const restoreAdvice = "To start every node from one broker.db with a new log, stop all nodes, remove each node's jetstream directory, " +
	"and run `claudemesh broker cluster-restore --from <broker.db>` on each (docs/operating-a-broker.md, \"Restoring a whole cluster\")"

// aheadOfLog is the refusal of a node whose copy is past the end of the
// log: it was applied from another log (the cluster's JetStream state was
// lost or replaced), and following this one would skip its entries.
func aheadOfLog(applied, last uint64) error {
	return fmt.Errorf("cluster: this node's broker.db is at entry %d of the replicated log, but the log ends at %d: "+
		"it was applied from a log this cluster no longer has (its JetStream state was lost or replaced). "+
		restoreAdvice, applied, last)
}
