package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A snapshot is stored as chunks under $O.<bucket>.C.<nuid>, then a
// description (meta) that names the nuid. When publishing the description
// fails, Put leaves the chunks (its ack may have been lost and the
// description stored after all, naming them), and when it was not stored
// nothing ever names them: each such failed Put, which the snapshot loop
// repeats during an outage, left a snapshot's size in the bucket for good.
// The snapshot loop sweeps them: a chunk set named by no description for
// longer than orphanGrace is purged.

// orphanGrace is how long a chunk set must have been seen named by no
// description before it is purged: longer than any Put runs (a snapshot's
// Put is bounded by the compaction's five minutes, on every node), so the
// chunks of a Put still running on another node (--nats: every node may
// take snapshots), whose description comes after its last chunk, are
// never taken for orphans.
const orphanGrace = 15 * time.Minute

// orphanChunks remembers when each chunk set was first seen unnamed.
type orphanChunks struct {
	mu    sync.Mutex
	since map[string]time.Time // chunk subject → first seen named by no description
}

// sweep purges the chunk sets of the object store of bucket that have
// been named by no description since at least grace before now, and
// returns how many it purged. Nothing is purged when the descriptions
// cannot be listed: what they name is then unknown.
func (o *orphanChunks) sweep(ctx context.Context, js jetstream.JetStream, obs jetstream.ObjectStore, bucket string, now time.Time, grace time.Duration) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return 0, err
	}
	// The chunks first, then the descriptions: a Put that finishes in
	// between has its chunks seen and its description listed.
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(fmt.Sprintf("$O.%s.C.>", bucket)))
	if err != nil {
		return 0, err
	}
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	list, err := obs.List(lctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, err
	}
	named := make(map[string]bool, len(list))
	for _, oi := range list {
		named[fmt.Sprintf("$O.%s.C.%s", bucket, oi.NUID)] = true
	}
	if o.since == nil {
		o.since = map[string]time.Time{}
	}
	for subj := range o.since {
		if _, ok := info.State.Subjects[subj]; !ok || named[subj] {
			delete(o.since, subj) // gone, or named after all
		}
	}
	purged := 0
	for subj := range info.State.Subjects {
		if named[subj] {
			continue
		}
		first, seen := o.since[subj]
		switch {
		case !seen:
			o.since[subj] = now
		case now.Sub(first) >= grace:
			if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
				return purged, err
			}
			delete(o.since, subj)
			purged++
		}
	}
	return purged, nil
}
