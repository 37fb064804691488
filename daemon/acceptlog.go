package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/fsutil"
	"claudemesh/internal/journal"
	"claudemesh/store"
)

// The accept journal. A `POST /v1/send` is durable once its row is in
// daemon.journal (one write and one fdatasync per group of concurrent
// accepts), not once it is in daemon.db: a bbolt commit costs two
// fdatasyncs and carries the drain's row updates too, and an accept had
// to wait for the commit in progress and then its own. An applier copies
// journaled rows into daemon.db in the background, in journal order (so
// rows keep their enqueue order), and releases them from the journal;
// at start the journal's rows are copied before anything else runs (a
// row already in daemon.db — same clientMessageId — is skipped, which
// makes the copy safe to repeat).
//
// Until a row is in daemon.db it is in byCMID, so idempotency sees it;
// reads that show the outbox (status, the list, the page) first wait
// until every accept answered so far is in daemon.db (settled), so a
// client that got its 202 always finds its row.
type acceptLog struct {
	d *Daemon
	j *journal.Journal

	mu      sync.Mutex
	byCMID  map[string]*journaled // accepted, not yet in daemon.db
	queue   []*journaled          // durable in the journal, to copy, in lsn order
	durable uint64                // last lsn on disk in the journal
	applied uint64                // last lsn copied into daemon.db
	wake    chan struct{}         // the applier's: the queue grew, or closing
	caught  chan struct{}         // closed (and replaced) when applied moves
	closing bool
	hold    bool          // failpoint: nothing is copied (the crash test)
	stop    chan struct{} // closed by close: a failing copy is not retried
	done    chan struct{}

	// applyErr is why the last copy into daemon.db failed (nil once one
	// succeeds), since when, and how many attempts in a row.
	applyErr      error
	applyErrSince time.Time
	applyAttempts int
}

// journaled is one accepted row on its way into daemon.db. ready is
// closed once the journal write finished (err tells how).
type journaled struct {
	row   *outboxRow // never changed once journaled
	lsn   uint64
	ready chan struct{}
	err   error
}

// JournalPath is the accept journal's file, next to daemon.db.
func journalPath(home string) string {
	return filepath.Join(localapi.Dir(home), "daemon.journal")
}

// The applied watermark (bJournal/"applied"): every record of epoch
// ≤ lsn is in daemon.db. It is written in the transaction that stores the
// rows it covers, so a restart replays only what daemon.db lacks, even
// when the rows themselves (and their clientMessageIds) were pruned
// since. Before Start the watermark names the journal's next epoch (lsn
// 0) and keeps the replayed epoch as prev, so a crash between that commit
// and the new header is also recognised.
type watermark struct {
	epoch, lsn         uint64
	prevEpoch, prevLSN uint64
}

var keyApplied = []byte("applied")

func getWatermark(tx *bolt.Tx) (watermark, bool) {
	v := tx.Bucket(bJournal).Get(keyApplied)
	if len(v) != 32 {
		return watermark{}, false
	}
	le := binary.LittleEndian
	return watermark{le.Uint64(v), le.Uint64(v[8:]), le.Uint64(v[16:]), le.Uint64(v[24:])}, true
}

func putWatermark(tx *bolt.Tx, w watermark) error {
	v := make([]byte, 32)
	le := binary.LittleEndian
	le.PutUint64(v, w.epoch)
	le.PutUint64(v[8:], w.lsn)
	le.PutUint64(v[16:], w.prevEpoch)
	le.PutUint64(v[24:], w.prevLSN)
	return tx.Bucket(bJournal).Put(keyApplied, v)
}

// openAcceptLog opens the journal, copies the rows a crash left in it into
// daemon.db and starts the applier. fresh says daemon.db was just made
// (it did not exist, or --init): a journal with records then belongs to
// the daemon.db it replaced and is set aside, never replayed.
func (d *Daemon) openAcceptLog(fresh, hold bool) (*acceptLog, error) {
	a := &acceptLog{d: d, byCMID: map[string]*journaled{}, wake: make(chan struct{}, 1),
		caught: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), hold: hold}
	path := journalPath(d.home)
	opts := journal.Options{Durable: a.durableGroup, ScrubAfter: d.opts.journalScrubAfter,
		Size: d.opts.journalSize, SpaceWait: d.opts.journalSpaceWait, Sync: d.opts.testJournalSync}
	j, recs, err := journal.Open(path, opts)
	if err != nil {
		return nil, err
	}
	var w watermark
	var have bool
	d.db.View(func(tx *bolt.Tx) error {
		w, have = getWatermark(tx)
		return nil
	})
	// Which of the journal's records daemon.db lacks: those after the
	// watermark of their epoch. A journal whose epoch daemon.db has never
	// seen (a fresh daemon.db, or one restored from a backup) cannot say
	// which of its records were sent since: it is set aside.
	var skip uint64
	foreign := ""
	switch {
	case len(recs) == 0:
	case have && w.epoch == j.Epoch():
		skip = w.lsn
	case have && w.prevEpoch == j.Epoch():
		skip = w.prevLSN
	case have:
		foreign = "daemon.db does not know this journal's epoch (was it restored from a backup?)"
	case fresh:
		foreign = "daemon.db was made new"
	default:
		// A daemon.db from before the watermark: its clientMessageIds
		// are the only guard, as they were then.
	}
	if foreign != "" {
		j.Close()
		aside := path + ".set-aside-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Rename(path, aside); err != nil {
			return nil, fmt.Errorf("setting the accept journal aside: %w", err)
		}
		fsutil.SyncDir(filepath.Dir(path))
		d.log.Warn("accept journal set aside, not replayed: messages accepted but not yet in daemon.db are not sent",
			"why", foreign, "records", len(recs), "file", aside)
		if j, recs, err = journal.Open(path, opts); err != nil {
			return nil, err
		}
	}
	var rows []*outboxRow
	last := skip
	for _, rec := range recs {
		last = max(last, rec.LSN)
		if rec.LSN <= skip {
			continue
		}
		var r outboxRow
		if err := decodeOutbox(rec.Data, &r); err != nil {
			j.Close()
			return nil, fmt.Errorf("%s: a record that passed its checksum does not decode: %w", path, err)
		}
		rows = append(rows, &r)
	}
	// The replayed rows and the watermark of the next epoch commit
	// together, before Start writes that epoch into the journal.
	n := 0
	if err := d.db.Update(func(tx *bolt.Tx) error {
		var err error
		if n, err = insertRows(tx, rows, nil); err != nil {
			return err
		}
		return putWatermark(tx, watermark{epoch: j.NextEpoch(), prevEpoch: j.Epoch(), prevLSN: last})
	}); err != nil {
		j.Close()
		return nil, fmt.Errorf("copying the accept journal into daemon.db: %w", err)
	}
	if len(rows) > 0 {
		d.log.Info("accept journal replayed", "rows", n, "already stored", len(rows)-n, "already applied", len(recs)-len(rows))
	}
	if err := j.Start(); err != nil {
		j.Close()
		return nil, err
	}
	a.j = j
	go a.applyLoop()
	return a, nil
}

// insertRows stores new outbox rows (seq, clientMessageId index, pending
// index) and skips those whose clientMessageId is already stored; stored,
// when not nil, receives the rows as stored (with their seq). It may run
// more than once (store.Update retries), so it only reads its rows.
func insertRows(tx *bolt.Tx, rows []*outboxRow, stored *[]*outboxRow) (int, error) {
	if stored != nil {
		*stored = (*stored)[:0]
	}
	n := 0
	cmids := tx.Bucket(bOutboxCMID)
	for _, src := range rows {
		if cmids.Get([]byte(src.ClientMessageID)) != nil {
			continue
		}
		r := *src
		r.stored, r.indexedAt = "", 0
		seq, err := tx.Bucket(bOutbox).NextSequence()
		if err != nil {
			return 0, err
		}
		r.Seq = seq
		if err := putOutbox(tx, &r); err != nil {
			return 0, err
		}
		if err := cmids.Put([]byte(r.ClientMessageID), seqKey(seq)); err != nil {
			return 0, err
		}
		if err := setPendingIndex(tx, &r, true); err != nil {
			return 0, err
		}
		if stored != nil {
			*stored = append(*stored, &r)
		}
		n++
	}
	return n, nil
}

// add makes a new row durable: it reserves its clientMessageId (or finds
// the request that holds it: dup), writes it to the journal and returns
// once it is on disk. dup is non-nil when the id was already taken,
// accepted a moment ago (and not yet copied) or already in daemon.db
// (stored).
func (a *acceptLog) add(row *outboxRow) (dup *journaled, stored bool, err error) {
	rec, err := encodeOutbox(row)
	if err != nil {
		return nil, false, err
	}
	a.mu.Lock()
	if e := a.byCMID[row.ClientMessageID]; e != nil {
		a.mu.Unlock()
		<-e.ready
		return e, false, nil
	}
	// Under mu the applier cannot move a row from byCMID to daemon.db
	// unseen: it deletes from byCMID only after its commit.
	if a.d.cmids.mayHave(row.ClientMessageID) {
		a.d.db.View(func(tx *bolt.Tx) error {
			stored = tx.Bucket(bOutboxCMID).Get([]byte(row.ClientMessageID)) != nil
			return nil
		})
	}
	if stored {
		a.mu.Unlock()
		return nil, true, nil
	}
	// Before the journal write, so before the row can reach daemon.db.
	a.d.cmids.add(row.ClientMessageID)
	e := &journaled{row: row, ready: make(chan struct{})}
	a.byCMID[row.ClientMessageID] = e
	a.mu.Unlock()
	_, err = a.j.Append(rec, e)
	if err != nil {
		a.mu.Lock()
		if a.byCMID[row.ClientMessageID] == e {
			delete(a.byCMID, row.ClientMessageID)
		}
		a.mu.Unlock()
		e.err = err
	}
	close(e.ready)
	return nil, false, err
}

// lookup returns the journaled row with this clientMessageId that is not
// yet in daemon.db, once its journal write finished (nil if none, or if
// that write failed).
func (a *acceptLog) lookup(cmid string) *outboxRow {
	a.mu.Lock()
	e := a.byCMID[cmid]
	a.mu.Unlock()
	if e == nil {
		return nil
	}
	<-e.ready
	if e.err != nil {
		return nil
	}
	return e.row
}

// durableGroup runs on the journal's writer after each group is on disk,
// before any of its accepts is answered.
func (a *acceptLog) durableGroup(vs []any, last uint64) {
	a.mu.Lock()
	// lsns are consecutive within a group.
	for i, v := range vs {
		e := v.(*journaled)
		e.lsn = last - uint64(len(vs)-1-i)
		a.queue = append(a.queue, e)
	}
	a.durable = last
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// applyLoop copies journaled rows into daemon.db, everything queued in one
// commit, and releases them from the journal.
func (a *acceptLog) applyLoop() {
	defer close(a.done)
	for {
		a.mu.Lock()
		if len(a.queue) == 0 || a.hold {
			closing := a.closing
			a.mu.Unlock()
			if closing {
				return
			}
			<-a.wake
			continue
		}
		batch := a.queue
		a.queue = nil
		a.mu.Unlock()
		rows := make([]*outboxRow, len(batch))
		for i, e := range batch {
			rows[i] = e.row
		}
		last := batch[len(batch)-1].lsn
		var stored []*outboxRow
		// A lone row commits at once: the drain sends it only once it is
		// in daemon.db, and a single message should not wait for company
		// (commitLinger) that is not coming. Rows that came together are
		// a burst: their copy may wait to share a commit with the drain's
		// records.
		commit := a.d.updateLazy
		if len(rows) == 1 {
			commit = a.d.update
		}
		for attempt := 0; ; attempt++ {
			err := commit(func(tx *bolt.Tx) error {
				if h := a.d.opts.testHookApply; h != nil {
					if err := h(); err != nil {
						return err
					}
				}
				if _, err := insertRows(tx, rows, &stored); err != nil {
					return err
				}
				return putWatermark(tx, watermark{epoch: a.j.Epoch(), lsn: last})
			}, nil)
			a.mu.Lock()
			if err == nil {
				a.applyErr, a.applyAttempts = nil, 0
			} else {
				if a.applyErr == nil {
					a.applyErrSince = time.Now()
				}
				a.applyErr = err
				a.applyAttempts++
			}
			a.mu.Unlock()
			if err == nil {
				break
			}
			if errors.Is(err, store.ErrClosed) {
				return
			}
			// The rows are safe in the journal; the copy is retried,
			// and redone at the next start if it never succeeds (a
			// shutdown does not wait for it).
			a.d.log.Error("copying accepted rows into daemon.db", "rows", len(rows), "err", err)
			select {
			case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)):
			case <-a.stop:
				return
			}
		}
		a.j.Release(last)
		meshes := map[string]bool{}
		a.mu.Lock()
		for _, e := range batch {
			if a.byCMID[e.row.ClientMessageID] == e {
				delete(a.byCMID, e.row.ClientMessageID)
			}
			meshes[e.row.MeshID] = true
		}
		a.applied = last
		close(a.caught)
		a.caught = make(chan struct{})
		a.mu.Unlock()
		a.d.handToDrains(stored)
		for id := range meshes {
			if m := a.d.meshByID(id); m != nil {
				m.kick()
			}
		}
	}
}

// maxFresh bounds the rows handed to one mesh's drain and not yet taken.
const maxFresh = 2 * drainWindow

// handToDrains gives rows just copied into daemon.db to their meshes'
// drains (meshRT.fresh), so a drain round sends them without reading
// them back from daemon.db (~2 % of the daemon's CPU; the caller wakes
// the drains).
func (d *Daemon) handToDrains(rows []*outboxRow) {
	for _, r := range rows {
		m := d.meshByID(r.MeshID)
		if m == nil || m.conn() == nil {
			continue // its drain reads it from daemon.db once it can send
		}
		m.freshMu.Lock()
		// Bounded: a drain that is not taking them (its window is
		// full) reads the rest from daemon.db.
		if len(m.fresh) < maxFresh {
			if m.fresh == nil {
				m.fresh = map[uint64]*outboxRow{}
			}
			m.fresh[r.Seq] = r
		}
		m.freshMu.Unlock()
	}
}

// settled waits until every accept answered so far is in daemon.db, or
// ctx ends (then the caller reads what is there).
func (a *acceptLog) settled(ctx context.Context) {
	if a == nil {
		return
	}
	a.mu.Lock()
	target := a.durable
	// While copies fail there is nothing to wait for: the reader sees
	// daemon.db as it is (and status says why).
	for a.applied < target && !a.hold && a.applyErr == nil {
		ch := a.caught
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
		a.mu.Lock()
	}
	a.mu.Unlock()
}

// close copies everything journaled into daemon.db and then closes the
// journal, which zeroes its records once all are released. daemon.db must
// still be open, and the local API already shut down: a row whose journal
// write ends after the applier stopped is copied at the next start.
func (a *acceptLog) close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	close(a.stop)
	select {
	case a.wake <- struct{}{}:
	default:
	}
	<-a.done
	a.j.Close()
}

// problem says, in words for `daemon status`, why accepted rows are not
// being copied into daemon.db ("" when they are).
func (a *acceptLog) problem() string {
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.applyErr == nil {
		return ""
	}
	return fmt.Sprintf("accepted messages cannot be copied into daemon.db (since %s, %d attempts): %v; "+
		"they are safe in the accept journal and are copied once daemon.db can be written (or at the next start), "+
		"but new sends are refused (503) once the journal is full", a.applyErrSince.UTC().Format(time.RFC3339), a.applyAttempts, a.applyErr)
}

// fullError is POST /v1/send's answer when the accept journal has no
// room because nothing is being copied out of it.
func (a *acceptLog) fullError() *apiError {
	why := "accepted messages are not being copied into daemon.db"
	a.mu.Lock()
	if a.applyErr != nil {
		why += ": " + a.applyErr.Error()
	}
	a.mu.Unlock()
	return &apiError{status: 503, code: "unavailable", msg: "the daemon cannot accept the message: its accept journal is full (" + why + ")",
		hint: "nothing was accepted; retry later with the same clientMessageId. claudemesh daemon status shows the daemon.db error; messages already accepted are kept"}
}

// outboxSettled is settled for a request that reads the outbox: bounded,
// so a daemon.db that cannot be written does not hang every read.
func (d *Daemon) outboxSettled(r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	d.acc.settled(ctx)
}
