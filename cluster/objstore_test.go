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
	nodes := startNodes(t, "objput", 1)
	js, err := jetstream.New(nodes[0].Conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "PUTTEST"})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "OBJ_PUTTEST")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	setSubjects := func(subjects ...string) {
		t.Helper()
		c := cfg
		c.Subjects = subjects
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
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
			if err := nodes[0].Conn().Flush(); err != nil {
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
