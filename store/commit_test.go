package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var errBoom = errors.New("boom")

// blockCommitter submits a write that parks the committer goroutine inside
// its transaction until release is called, so writes submitted meanwhile
// queue up and are folded into the next batch deterministically.
func blockCommitter(t testing.TB, s *Store) (release func()) {
	t.Helper()
	started, gate := make(chan struct{}), make(chan struct{})
	if err := s.Submit(func(tx *bolt.Tx) error {
		close(started)
		<-gate
		return nil
	}, nil); err != nil {
		t.Fatalf("Submit blocker: %v", err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("committer never ran the blocking write")
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release
}

func TestConcurrentUpdatesAllDurable(t *testing.T) {
	path := dbPath(t)
	var log commitLog
	s := openAt(t, path, Options{OnCommit: log.observe})
	createTestBucket(t, s)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Update(putRaw(fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	// Every write went through exactly one successful commit.
	if got := log.total(); got != n+1 {
		t.Fatalf("OnCommit saw %d writes, want %d (sizes %v)", got, n+1, log.snapshot())
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openAt(t, path, Options{})
	for i := range n {
		if got, want := getRaw(t, s, fmt.Sprintf("k%03d", i)), fmt.Sprintf("v%d", i); got != want {
			t.Fatalf("after reopen k%03d = %q, want %q", i, got, want)
		}
	}
}

func TestGroupCommitFoldsQueuedWrites(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe})
	createTestBucket(t, s)
	release := blockCommitter(t, s)

	const n = 50
	done := make(chan error, n)
	for i := range n {
		if err := s.Submit(putRaw(fmt.Sprintf("k%d", i), "v"), func(err error) { done <- err }); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	release()
	for range n {
		if err := <-done; err != nil {
			t.Fatalf("write failed: %v", err)
		}
	}
	// bucket creation, the blocker alone, then all n queued writes in one
	// transaction (one fsync).
	want := []int{1, 1, n}
	if got := log.snapshot(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("commit sizes %v, want %v", got, want)
	}
}

func TestGroupCommitRespectsMaxBatch(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, MaxBatch: 2})
	createTestBucket(t, s)
	release := blockCommitter(t, s)
	done := make(chan error, 5)
	for i := range 5 {
		if err := s.Submit(putRaw(fmt.Sprintf("k%d", i), "v"), func(err error) { done <- err }); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	release()
	for range 5 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got, want := fmt.Sprint(log.snapshot()), fmt.Sprint([]int{1, 1, 2, 2, 1}); got != want {
		t.Fatalf("commit sizes %v, want %v", got, want)
	}
}

type result struct {
	i   int
	err error
}

func TestFailingWriteDoesNotFailNeighbours(t *testing.T) {
	path := dbPath(t)
	var log commitLog
	s := openAt(t, path, Options{OnCommit: log.observe})
	createTestBucket(t, s)
	release := blockCommitter(t, s)

	const n, bad = 10, 4
	results := make(chan result, n)
	var runs [n]int // fn invocations; only touched on the committer goroutine
	for i := range n {
		fn := func(tx *bolt.Tx) error {
			runs[i]++
			if err := putRaw(fmt.Sprintf("k%d", i), "v")(tx); err != nil {
				return err
			}
			if i == bad {
				// Fail after writing: the partial write must not survive.
				return fmt.Errorf("write %d: %w", i, errBoom)
			}
			return nil
		}
		if err := s.Submit(fn, func(err error) { results <- result{i, err} }); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	release()
	for want := range n {
		r := <-results
		if r.i != want {
			t.Fatalf("after callback for write %d ran in position %d", r.i, want)
		}
		if r.i == bad {
			if !errors.Is(r.err, errBoom) {
				t.Fatalf("failing write got %v, want errBoom", r.err)
			}
		} else if r.err != nil {
			t.Fatalf("neighbour %d failed with %v", r.i, r.err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The batch transaction stops at the first failure. Then the writes
	// before the failing one commit together again, the failing one runs
	// alone, and the rest commit together: writes up to and including the
	// failing one ran twice, later ones once (Update's doc warns fn may run
	// twice), in two commits, not one per write (a failing member's write
	// beside a broadcast's 1,000 acks cost 1,000 commits).
	for i, r := range runs {
		want := 1
		if i <= bad {
			want = 2
		}
		if r != want {
			t.Errorf("write %d ran %d times, want %d", i, r, want)
		}
	}
	sizes := log.snapshot()
	if len(sizes) < 2 || sizes[len(sizes)-2] != bad || sizes[len(sizes)-1] != n-bad-1 {
		t.Errorf("commit sizes %v, want the last two to be %d (before the failing write) and %d (after it)", sizes, bad, n-bad-1)
	}

	s = openAt(t, path, Options{})
	for i := range n {
		got, want := getRaw(t, s, fmt.Sprintf("k%d", i)), "v"
		if i == bad {
			want = ""
		}
		if got != want {
			t.Errorf("after reopen k%d = %q, want %q", i, got, want)
		}
	}
}

func TestUpdateReturnsItsError(t *testing.T) {
	s := newStore(t)
	createTestBucket(t, s)
	err := s.Update(func(tx *bolt.Tx) error {
		if err := putRaw("partial", "x")(tx); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want errBoom", err)
	}
	if got := getRaw(t, s, "partial"); got != "" {
		t.Fatalf("failed Update left %q behind", got)
	}
	// The committer is still healthy.
	mustUpdate(t, s, putRaw("after", "y"))
	if got := getRaw(t, s, "after"); got != "y" {
		t.Fatalf("write after a failure = %q", got)
	}
	if err := s.Ping(); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// TestSubmitAfterRunsInOrderOnceDurable: after callbacks run in submission
// order, and by the time one runs its write is visible to readers.
func TestSubmitAfterRunsInOrderOnceDurable(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe})
	createTestBucket(t, s)

	const n = 1000
	var order []int // only appended on the committer goroutine
	var problems []string
	done := make(chan struct{})
	for i := range n {
		k := fmt.Sprintf("k%04d", i)
		after := func(err error) {
			if err != nil {
				problems = append(problems, fmt.Sprintf("%d: %v", i, err))
			}
			// Compare inside the transaction: the value aliases bbolt's
			// map, which the committer may remap as soon as View returns.
			var visible bool
			s.View(func(tx *bolt.Tx) error { visible = string(tx.Bucket(testBucket).Get([]byte(k))) == "v"; return nil })
			if !visible {
				problems = append(problems, fmt.Sprintf("%d: not visible in its after callback", i))
			}
			order = append(order, i)
			if i == n-1 {
				close(done)
			}
		}
		if err := s.Submit(putRaw(k, "v"), after); err != nil {
			t.Fatalf("Submit %d: %v", i, err)
		}
		if i%100 == 0 {
			runtime.Gosched() // let the committer start batches mid-stream
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("after callbacks did not all run")
	}
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	if len(order) != n {
		t.Fatalf("%d callbacks ran, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("callback %d ran at position %d", v, i)
		}
	}
	if got := log.total(); got != n+1 {
		t.Fatalf("OnCommit saw %d writes, want %d", got, n+1)
	}
}

func TestCloseCommitsSubmittedThenRefuses(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{})
	createTestBucket(t, s)
	release := blockCommitter(t, s)

	var mu sync.Mutex
	results := map[string]error{}
	submit := func(k string) error {
		return s.Submit(putRaw(k, "v"), func(err error) {
			mu.Lock()
			results[k] = err
			mu.Unlock()
		})
	}
	const n = 20
	for i := range n {
		if err := submit(fmt.Sprintf("before%d", i)); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()

	// Keep submitting until Close has shut the door; whatever was accepted
	// in the meantime must commit too.
	accepted := []string{}
	for i := 0; ; i++ {
		k := fmt.Sprintf("racing%d", i)
		err := submit(k)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatalf("Submit during Close: %v", err)
		}
		accepted = append(accepted, k)
		// The committer is blocked, so every accepted write waits in the
		// queue (8,192 places): stay well below that. Under load the
		// closing goroutine may not run for a while; after the first
		// thousand tries, give it time too.
		if i > 6000 {
			t.Fatal("Close never started refusing writes")
		}
		if i < 1000 {
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the blocked transaction finished", err)
	default:
	}
	release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}

	ran := false
	if err := s.Submit(putRaw("late", "v"), func(error) { ran = true }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := s.Update(putRaw("late2", "v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close = %v, want ErrClosed", err)
	}
	if err := s.Ping(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if ran {
		t.Fatal("after callback of a refused Submit ran")
	}

	want := append([]string{}, accepted...)
	for i := range n {
		want = append(want, fmt.Sprintf("before%d", i))
	}
	mu.Lock()
	if len(results) != len(want) {
		t.Fatalf("%d callbacks ran, want %d", len(results), len(want))
	}
	for _, k := range want {
		if err, ok := results[k]; !ok || err != nil {
			t.Fatalf("write %s: ran=%v err=%v", k, ok, err)
		}
	}
	mu.Unlock()

	s = openAt(t, path, Options{})
	for _, k := range append(want, "late", "late2") {
		got := getRaw(t, s, k)
		if wantV := map[bool]string{true: "", false: "v"}[k == "late" || k == "late2"]; got != wantV {
			t.Fatalf("after reopen %s = %q, want %q", k, got, wantV)
		}
	}
}

func schemaOf(t *testing.T, path string) (uint64, bool) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	defer db.Close()
	var v []byte
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			v = append([]byte(nil), b.Get(keySchema)...)
		}
		return nil
	})
	if len(v) != 8 {
		return 0, false
	}
	return be64(v), true
}

func TestReopenKeepsData(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{})
	mustUpdate(t, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "team", Name: "Team", CreatedAt: 7}, owner())
	})
	m := msg(id("M", 1), key(1), 100, true)
	seqs := appendMsg(t, s, m, key(2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, ok := schemaOf(t, path); !ok || v != SchemaVersion {
		t.Fatalf("schemaVersion on disk = %d (present %v), want %d", v, ok, SchemaVersion)
	}

	s = openAt(t, path, Options{})
	mustView(t, s, func(tx *Tx) error {
		meshes, err := ListMeshes(tx)
		if err != nil || len(meshes) != 1 || meshes[0] != (Mesh{ID: meshID, Slug: "team", Name: "Team", CreatedAt: 7}) {
			t.Errorf("ListMeshes = %+v, %v", meshes, err)
		}
		mem, err := MemberByPubkey(tx, meshID, owner().Pubkey)
		if err != nil || mem.DisplayName != "Alice" {
			t.Errorf("owner after reopen = %+v, %v", mem, err)
		}
		return nil
	})
	got, err := getMsg(t, s, m.ID)
	if err != nil || string(got.Push) != string(m.Push) || got.Recipients != 1 {
		t.Fatalf("message after reopen = %+v, %v", got, err)
	}
	q := scan(t, s, key(2), 0)
	if len(q) != 1 || q[0].Seq != seqs[0] || q[0].ID != m.ID {
		t.Fatalf("queue after reopen = %+v", q)
	}
}

// TestOpenMigratesVersionZero: a file from before the schema key existed
// (here: a bare bbolt file with one legacy slug) is migrated forward and
// keeps its data.
func TestOpenMigratesVersionZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v0.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketSlugs)
		if err != nil {
			return err
		}
		return b.Put([]byte("legacy"), []byte("mesh-0"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, ok := schemaOf(t, path); ok {
		t.Fatal("setup: version-0 file already has a schema version")
	}

	s := openAt(t, path, Options{})
	mustView(t, s, func(tx *Tx) error {
		if v := tx.Bucket(bucketSlugs).Get([]byte("legacy")); string(v) != "mesh-0" {
			t.Errorf("legacy slug after migration = %q", v)
		}
		if tx.Bucket(bucketMeshes) == nil || tx.Bucket(bucketMeta) == nil {
			t.Error("migration did not create the meshes/meta buckets")
		}
		return nil
	})
	// The migrated store is fully usable.
	mustUpdate(t, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "team"}, owner())
	})
	s.Close()
	if v, ok := schemaOf(t, path); !ok || v != SchemaVersion {
		t.Fatalf("schemaVersion after migration = %d (present %v), want %d", v, ok, SchemaVersion)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{})
	createTestBucket(t, s)
	mustUpdate(t, s, putRaw("keep", "me"))
	s.Close()

	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s2, err := Open(path, Options{OpenTimeout: time.Second})
	if !errors.Is(err, ErrNewerSchema) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open of a newer file = %v, want ErrNewerSchema", err)
	}
	if s2 != nil {
		t.Fatal("Open returned a store along with ErrNewerSchema")
	}
	// The refusal released the file lock and left the file untouched.
	if v, ok := schemaOf(t, path); !ok || v != SchemaVersion+1 {
		t.Fatalf("schemaVersion after refusal = %d (present %v), want %d", v, ok, SchemaVersion+1)
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("file still locked after refusal: %v", err)
	}
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(testBucket).Get([]byte("keep")); string(v) != "me" {
			t.Errorf("data after refusal = %q", v)
		}
		return nil
	})
	db.Close()
}

func TestOpenFailsFastWhenLocked(t *testing.T) {
	path := dbPath(t)
	openAt(t, path, Options{})
	start := time.Now()
	s2, err := Open(path, Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, berrors.ErrTimeout) {
		t.Fatalf("second Open = %v, want bbolt timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open took %v with a 100ms timeout", d)
	}
}

// TestOpenRunsPendingMigrationsOnce: with a custom schema history (the
// daemon's database uses one), reopening under a longer history runs only
// the new steps, in one transaction with the version bump, keeping data; a
// failing step leaves the file at its old version; a shorter history than
// the file's is ErrNewerSchema.
func TestOpenRunsPendingMigrationsOnce(t *testing.T) {
	path := dbPath(t)
	runs := make([]int, 3)
	step := func(i int, fn func(tx *bolt.Tx) error) Migration {
		return func(tx *bolt.Tx) error { runs[i]++; return fn(tx) }
	}
	v1 := step(0, func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("a"))
		return err
	})
	v2 := step(1, func(tx *bolt.Tx) error { // moves a/x to b/x
		b, err := tx.CreateBucketIfNotExists([]byte("b"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("x"), append([]byte("migrated:"), tx.Bucket([]byte("a")).Get([]byte("x"))...)); err != nil {
			return err
		}
		return tx.DeleteBucket([]byte("a"))
	})
	broken := step(2, func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("b")).Put([]byte("x"), []byte("clobbered")); err != nil {
			return err
		}
		return errBoom
	})

	s := openAt(t, path, Options{Migrations: []Migration{v1}})
	mustUpdate(t, s, func(tx *bolt.Tx) error { return tx.Bucket([]byte("a")).Put([]byte("x"), []byte("1")) })
	s.Close()
	if v, _ := schemaOf(t, path); v != 1 {
		t.Fatalf("version after first open = %d, want 1", v)
	}

	for range 2 { // the second open has nothing to do
		s = openAt(t, path, Options{Migrations: []Migration{v1, v2}})
		s.Close()
	}
	if runs[0] != 1 || runs[1] != 1 {
		t.Fatalf("migration runs = %v, want each once", runs)
	}
	if v, _ := schemaOf(t, path); v != 2 {
		t.Fatalf("version after upgrade = %d, want 2", v)
	}

	_, err := Open(path, Options{Migrations: []Migration{v1, v2, broken}})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Open with a failing migration = %v, want errBoom", err)
	}
	if v, _ := schemaOf(t, path); v != 2 {
		t.Fatalf("version after failed migration = %d, want 2", v)
	}

	if _, err := Open(path, Options{Migrations: []Migration{v1}}); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open with a shorter history = %v, want ErrNewerSchema", err)
	}

	s = openAt(t, path, Options{Migrations: []Migration{v1, v2}})
	mustView(t, s, func(tx *Tx) error {
		if tx.Bucket([]byte("a")) != nil {
			t.Error("bucket a survived its migration")
		}
		if v := tx.Bucket([]byte("b")).Get([]byte("x")); string(v) != "migrated:1" {
			t.Errorf("b/x = %q, want migrated:1 (failed migration rolled back)", v)
		}
		return nil
	})
	if runs[0] != 1 || runs[1] != 1 || runs[2] != 1 {
		t.Fatalf("migration runs = %v", runs)
	}
}

// A refused hook (SubmitRefusable) runs on the committer as its write
// fails, before any later write is applied: a write queued behind a
// refused one sees the refusal every time it runs, so the broker can refuse
// it too (broker/sendorder.go) instead of letting it overtake.
func TestRefusedHookRunsBeforeLaterWrites(t *testing.T) {
	s := openAt(t, dbPath(t), Options{})
	createTestBucket(t, s)
	release := blockCommitter(t, s)
	refused := false // committer goroutine only
	sawRefusal := []bool{}
	done := make(chan error, 2)
	if err := s.SubmitRefusable(func(tx *bolt.Tx) error { return errBoom },
		func(err error) { done <- err }, func(err error) { refused = true }, 10, "k"); err != nil {
		t.Fatal(err)
	}
	if err := s.SubmitRefusable(func(tx *bolt.Tx) error {
		sawRefusal = append(sawRefusal, refused)
		return putRaw("later", "v")(tx)
	}, func(err error) { done <- err }, nil, 10, "k"); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; !errors.Is(err, errBoom) {
		t.Fatalf("the first write: %v, want errBoom", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the later write: %v", err)
	}
	if len(sawRefusal) == 0 || slices.Contains(sawRefusal, false) {
		t.Fatalf("the later write's runs saw the refusal: %v, want true every time", sawRefusal)
	}
}
