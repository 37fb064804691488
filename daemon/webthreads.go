package daemon

import (
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
)

// The chat page's conversation list (GET /v1/web/threads) is kept per mesh
// between requests: a request reads only the inbox and outbox rows added
// since the one before, where it used to decode the whole inbox (up to its
// cap, 256 MiB) every time the page refreshed its side bar. Rows are only
// ever added at the end of both buckets (their keys are increasing
// sequences); a row marked seen is counted off its thread (threadsSeen);
// anything else that changes what was counted (a deletion: prune, trim,
// inbox --delete) bumps the generation, and the next request counts again
// from the start.
type threadCache struct {
	mu     sync.Mutex
	gen    atomic.Uint64
	meshes map[string]*meshThreads // by mesh id
}

// meshThreads is one mesh's conversations as of a snapshot of daemon.db.
type meshThreads struct {
	byKey         map[string]*threadSummary
	inSeq, outSeq uint64 // the last row of each bucket counted
	txid          int    // the snapshot counted: bolt's id of its last write
	gen           uint64
}

// threadSummary is one conversation: what its newest row says, its unread
// count, and the names the rows give it.
type threadSummary struct {
	kind     string
	lastAt   int64
	preview  string
	unread   int
	inLastAt int64  // the newest received row's receivedAt
	inName   string // the newest received row's verified sender name
	outName  string // a sent row's name for the recipient
}

// threadsChanged is called after a change to daemon.db other than a new
// inbox or outbox row or a row marked seen (those the cache follows).
func (d *Daemon) threadsChanged() { d.threads.gen.Add(1) }

// seenRow is a row markSeen stamped seen, for threadsSeen.
type seenRow struct {
	meshID, thread string
	seq            uint64
}

// threadsSeen counts rows stamped seen by the write txid off the unread
// count of a cache built from snapshots before it (a row after the cache's
// last one is counted when it is read). A cache whose last snapshot is at
// or after the write may have read such a row before it (unread) or after
// (seen): which cannot be told, so the cache is counted again from
// scratch at the next read (rare: a read between the write's commit and
// this call).
func (d *Daemon) threadsSeen(txid int, rows []seenRow) {
	d.threads.mu.Lock()
	defer d.threads.mu.Unlock()
	for _, r := range rows {
		mt := d.threads.meshes[r.meshID]
		if mt == nil || r.seq > mt.inSeq {
			continue
		}
		if mt.txid >= txid {
			d.threads.gen.Add(1)
			return
		}
		if s := mt.byKey[r.thread]; s != nil && s.unread > 0 {
			s.unread--
		}
	}
}

// meshThreadsNow brings m's conversations up to date and returns them as
// the page shows them (names not yet resolved against the directory).
func (d *Daemon) meshThreadsNow(m *meshRT) ([]localapi.WebThread, error) {
	c := &d.threads
	// The lock is held while reading: a row marked seen meanwhile is
	// counted off (threadsSeen) only once the read is stored.
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := c.gen.Load()
	mt := c.meshes[m.cfg.MeshID]
	if mt == nil || mt.gen != gen {
		mt = &meshThreads{byKey: map[string]*threadSummary{}, gen: gen}
	}
	self := m.key.PublicHex()
	get := func(key, kind string) *threadSummary {
		s := mt.byKey[key]
		if s == nil {
			s = &threadSummary{kind: kind}
			mt.byKey[key] = s
		}
		return s
	}
	var upTo uint64
	err := d.db.View(func(tx *bolt.Tx) error {
		// The last event id the counts cover, read in the same
		// snapshot (the page counts a message event only past it).
		upTo = tx.Bucket(bEvents).Sequence()
		ic := tx.Bucket(bInbox).Cursor()
		for k, v := ic.Seek(seqKey(mt.inSeq + 1)); k != nil; k, v = ic.Next() {
			mt.inSeq = seqOf(k)
			var row inboxRow
			if decodeRow(v, &row) != nil || row.MeshID != m.cfg.MeshID {
				continue
			}
			key, kind, ok := inboxThread(&row)
			if !ok {
				continue
			}
			s := get(key, kind)
			if row.SeenAt == 0 {
				s.unread++
			}
			if row.ReceivedAt >= s.lastAt {
				s.lastAt, s.preview = row.ReceivedAt, clip(row.Body, 80)
			}
			if row.ReceivedAt >= s.inLastAt {
				s.inLastAt = row.ReceivedAt
				if kind == threadDM && row.Verified && row.SenderName != "" {
					s.inName = row.SenderName
				}
			}
		}
		oc := tx.Bucket(bOutbox).Cursor()
		for k, v := oc.Seek(seqKey(mt.outSeq + 1)); k != nil; k, v = oc.Next() {
			mt.outSeq = seqOf(k)
			var row outboxRow
			if decodeOutbox(v, &row) != nil || row.MeshID != m.cfg.MeshID {
				continue
			}
			key, kind, ok := outboxThread(&row, self)
			if !ok {
				continue
			}
			s := get(key, kind)
			if row.EnqueuedAt >= s.lastAt {
				s.lastAt, s.preview = row.EnqueuedAt, row.Preview
			}
			if s.outName == "" && kind == threadDM {
				s.outName = row.DisplayName
			}
		}
		mt.txid = tx.ID()
		return nil
	})
	if err != nil {
		delete(c.meshes, m.cfg.MeshID) // half read: start again next time
		return nil, err
	}
	if c.meshes == nil {
		c.meshes = map[string]*meshThreads{}
	}
	c.meshes[m.cfg.MeshID] = mt
	out := make([]localapi.WebThread, 0, len(mt.byKey))
	for key, s := range mt.byKey {
		t := localapi.WebThread{Mesh: m.cfg.Slug, Thread: key, Kind: s.kind, LastAt: s.lastAt, LastPreview: s.preview, Unread: s.unread, Name: s.inName, UpTo: upTo}
		if t.Name == "" {
			t.Name = s.outName
		}
		out = append(out, t)
	}
	return out, nil
}
