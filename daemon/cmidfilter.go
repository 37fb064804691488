package daemon

import (
	"hash/maphash"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// cmidFilter is a Bloom filter of the clientMessageIds in daemon.db's
// outbox, so an accept of a new id (nearly every one) skips the two
// lookups of it in outbox_cmid — idempotency first, then again under the
// accept log's lock — each a read transaction and a walk down the
// B+tree: ~4 % of the daemon's CPU per accepted message in
// BENCHMARKS.md series 12. "No" is certain; "maybe" is checked in
// daemon.db as before.
//
// It is complete because every id enters it before its row can reach
// daemon.db: an accepted id is added when the accept log reserves it,
// before its journal write (acceptLog.add), and the ids already stored
// at start are added by build, which scans outbox_cmid after the
// journal's replay. Until build has finished the filter answers "maybe".
// Requeue reuses an id that is stored already; pruning leaves an id's
// bits set (a "maybe" that daemon.db answers).
type cmidFilter struct {
	seed  maphash.Seed
	bits  []atomic.Uint64
	ready atomic.Bool
}

// cmidFilterBits is the filter's size: 4 Mi bits (512 KiB) keep the
// false "maybe"s near 1 % for 100,000 stored ids, 14 % for a million.
const (
	cmidFilterBits   = 1 << 22
	cmidFilterHashes = 3
)

func newCMIDFilter() *cmidFilter {
	return &cmidFilter{seed: maphash.MakeSeed(), bits: make([]atomic.Uint64, cmidFilterBits/64)}
}

func (f *cmidFilter) positions(cmid string, fn func(word int, bit uint64) bool) bool {
	h := maphash.String(f.seed, cmid)
	h1, h2 := h, h>>32|h<<32|1
	for i := range uint64(cmidFilterHashes) {
		p := (h1 + i*h2) % cmidFilterBits
		if !fn(int(p/64), 1<<(p%64)) {
			return false
		}
	}
	return true
}

func (f *cmidFilter) add(cmid string) {
	f.positions(cmid, func(w int, b uint64) bool {
		f.bits[w].Or(b)
		return true
	})
}

// mayHave says whether cmid may be in daemon.db's outbox (false: it is
// certainly not).
func (f *cmidFilter) mayHave(cmid string) bool {
	if f == nil || !f.ready.Load() {
		return true
	}
	return f.positions(cmid, func(w int, b uint64) bool { return f.bits[w].Load()&b != 0 })
}

// build adds every id stored in outbox_cmid and then makes the filter
// answer. It runs once, in the background, after the journal's replay.
func (f *cmidFilter) build(d *Daemon) {
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bOutboxCMID).ForEach(func(k, _ []byte) error {
			f.add(string(k))
			return nil
		})
	})
	if err != nil {
		d.log.Warn("indexing the outbox's clientMessageIds (every send looks them up in daemon.db instead)", "err", err)
		return
	}
	f.ready.Store(true)
}
