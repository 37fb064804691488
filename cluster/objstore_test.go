package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// chunkedReader gives an object's bytes one chunk per Read and runs
// before(i) before giving chunk i: the object store's Put reads the next
// chunk only after publishing the previous one, so before(i) runs between
// the publishes of chunks i-1 and i.
type chunkedReader struct {
	chunks [][]byte
	i      int
	before func(i int)
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if r.i == len(r.chunks) {
		return 0, io.EOF
	}
	r.before(r.i)
	n := copy(p, r.chunks[r.i])
	r.i++
	if r.i == len(r.chunks) {
		return n, io.EOF
	}
	return n, nil
}

// objectStoreOnOneNode starts a one-node cluster named name with an
// object store bucket, and returns its stream's config and a function
// that gives the stream these subjects instead (taking a kind of
// message's subjects away makes its publishes find no stream).
func objectStoreOnOneNode(t *testing.T, ctx context.Context, name, bucket string) (jetstream.JetStream, jetstream.ObjectStore, jetstream.StreamConfig, func(subjects ...string)) {
	t.Helper()
	nodes := startNodes(t, name, 1)
	js, err := jetstream.New(nodes[0].Conn())
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	return js, obs, cfg, func(subjects ...string) {
		t.Helper()
		c := cfg
		c.Subjects = subjects
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
}

// A snapshot's chunk published while its bucket's stream has no leader
// (a bucket created a moment ago, a leader change) gets "no responders".
// nats.go's Put published the chunks asynchronously with retries of such
// a publish 250 ms later, out of order and with the bytes its reused
// message held by then (the last chunk's), while the object's description
// carried the digest of the real bytes: Put succeeded, and every download
// of that snapshot failed with "digests do not match" until a newer one
// was stored (TestClusterCompactionRestoresWipedNode, once under load: the
// wiped node's restore failed six downloads in a row). Now a Put either
// fails and leaves no object under the name, or stores the bytes it read.
//
// The no-responders window is made here by taking the chunks' subjects
// away from the bucket's stream between two chunks and giving them back
// before the next.
func TestObjectPutStoresWhatItReadOrNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, obs, cfg, setSubjects := objectStoreOnOneNode(t, ctx, "objput", "PUTTEST")
	const chunkSize = 1024
	var want []byte
	var chunks [][]byte
	for i, n := range []int{chunkSize, chunkSize, chunkSize, 100} {
		c := bytes.Repeat([]byte{byte('a' + i)}, n)
		chunks = append(chunks, c)
		want = append(want, c...)
	}
	r := &chunkedReader{chunks: chunks, before: func(i int) {
		switch i {
		case 1: // chunk 0 is stored; chunk 1 finds no stream
			setSubjects("$O.PUTTEST.M.>")
		case 2: // chunk 1's publish has been answered; the stream is back
			if err := js.Conn().Flush(); err != nil {
				t.Fatal(err)
			}
			setSubjects(cfg.Subjects...)
		}
	}}
	meta := jetstream.ObjectMeta{Name: "snap", Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}}
	_, putErr := obs.Put(ctx, meta, r)
	got, getErr := obs.GetBytes(ctx, "snap")
	switch {
	case putErr != nil && errors.Is(getErr, jetstream.ErrObjectNotFound):
		t.Logf("the put failed (%v) and left nothing", putErr)
	case putErr != nil:
		t.Fatalf("the put failed (%v), but the name gives %d bytes, %v", putErr, len(got), getErr)
	case getErr != nil:
		t.Fatalf("the put succeeded, but the object cannot be read: %v", getErr)
	case !bytes.Equal(got, want):
		t.Fatalf("the put succeeded, but the object holds %d other bytes", len(got))
	}
	// Put again, as the snapshot loop does: it stores the bytes. The
	// stream gets its subjects back first: a put that saw chunk 1 fail
	// before it read chunk 2 never asked the reader for it, which is
	// where they came back (the second put then failed "no response from
	// stream", 1 run in ~20 under -race).
	setSubjects(cfg.Subjects...)
	if _, err := obs.Put(ctx, meta, bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if got, err := obs.GetBytes(ctx, "snap"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the second put stored %d bytes (%v), want the %d put", len(got), err, len(want))
	}
}

// A Put whose description (meta) fails to publish leaves its chunks, and
// when the description was not stored nothing names them: before the
// snapshot loop swept them, each such failed upload kept a snapshot's
// size in the bucket for good. The sweep purges a chunk set only once it
// has been seen named by no description for orphanGrace, and never the
// chunks of a stored object.
func TestFailedUploadsChunksArePurgedAfterGrace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const bucket = "ORPHANTEST"
	js, obs, cfg, setSubjects := objectStoreOnOneNode(t, ctx, "objorphan", bucket)
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	chunkSubjects := func() map[string]uint64 {
		t.Helper()
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter("$O."+bucket+".C.>"))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	const chunkSize = 1024
	keep := bytes.Repeat([]byte("k"), 3*chunkSize)
	meta := func(name string) jetstream.ObjectMeta {
		return jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}}
	}
	if _, err := obs.Put(ctx, meta("keep"), bytes.NewReader(keep)); err != nil {
		t.Fatal(err)
	}
	// The failed upload: its chunks are stored, its description finds no
	// stream (the descriptions' subjects are taken away before its last
	// chunk is read, and given back once Put has failed).
	chunks := [][]byte{bytes.Repeat([]byte("a"), chunkSize), bytes.Repeat([]byte("b"), chunkSize), []byte("c")}
	r := &chunkedReader{chunks: chunks, before: func(i int) {
		if i == len(chunks)-1 {
			setSubjects("$O." + bucket + ".C.>")
		}
	}}
	if _, err := obs.Put(ctx, meta("failed"), r); err == nil {
		t.Fatal("the put whose description found no stream succeeded")
	}
	setSubjects(cfg.Subjects...)
	if got := len(chunkSubjects()); got != 2 {
		t.Fatalf("%d chunk sets stored, want 2 (the kept object's and the failed upload's)", got)
	}

	var o orphanChunks
	t0 := time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{t0, t0.Add(orphanGrace - time.Nanosecond)} {
		if n, err := o.sweep(ctx, js, obs, bucket, at, orphanGrace); err != nil || n != 0 {
			t.Fatalf("sweep at +%v purged %d (%v), want 0: not unnamed for the grace yet", at.Sub(t0), n, err)
		}
	}
	if n, err := o.sweep(ctx, js, obs, bucket, t0.Add(orphanGrace), orphanGrace); err != nil || n != 1 {
		t.Fatalf("sweep after the grace purged %d (%v), want the failed upload's 1", n, err)
	}
	if got := len(chunkSubjects()); got != 1 {
		t.Fatalf("%d chunk sets left, want the kept object's 1", got)
	}
	if got, err := obs.GetBytes(ctx, "keep"); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("the kept object reads %d bytes (%v) after the sweep, want its %d", len(got), err, len(keep))
	}
	if n, err := o.sweep(ctx, js, obs, bucket, t0.Add(2*orphanGrace), orphanGrace); err != nil || n != 0 {
		t.Fatalf("a later sweep purged %d (%v), want 0", n, err)
	}
}
