package broker

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"
	"testing/iotest"
)

// readAll is io.ReadAll(io.LimitReader(r, limit)) for every size around
// the pooled buffer's, for readers that return a byte at a time, and for
// errors; an empty frame is an empty slice, not nil.
func TestReadAllMatchesIOReadAll(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 4095, 4096, 4097, 70000} {
		src := bytes.Repeat([]byte("abcdefg"), n/7+1)[:n]
		for _, limit := range []int64{int64(n) + 1, int64(n), 100, 5000} {
			want, _ := io.ReadAll(io.LimitReader(bytes.NewReader(src), limit))
			for _, r := range []io.Reader{bytes.NewReader(src), iotest.OneByteReader(bytes.NewReader(src))} {
				got, err := readAll(r, limit)
				if err != nil || !bytes.Equal(got, want) || got == nil {
					t.Fatalf("n %d limit %d: %d bytes (nil %v), %v; want %d", n, limit, len(got), got == nil, err, len(want))
				}
			}
		}
	}
	boom := errors.New("boom")
	if _, err := readAll(iotest.ErrReader(boom), 10); !errors.Is(err, boom) {
		t.Fatalf("error: %v", err)
	}
}

// BenchmarkReadFrame reads a send-sized frame (what readFrame does per
// frame): a small DM, one of 64 KiB of plaintext (88 KB of base64), a
// 64 KiB frame before hello (bench --adversary's junk) and a broadcast's
// send to 1,000 recipients.
func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []int{900, 88 << 10, 64 << 10, 200_000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			frame := bytes.Repeat([]byte("x"), size)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := readAll(bytes.NewReader(frame), 1<<20+1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReadAllReusesItsBufferForABroadcast: a broadcast's send to 1,000
// recipients (~200 KB) is read through the pooled buffer, so reading one
// allocates the frame's copy and not a buffer grown from 4 KiB each time.
func TestReadAllReusesItsBufferForABroadcast(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race sync.Pool drops pooled buffers at random; `go test ./broker/` without -race runs this")
	}
	frame := bytes.Repeat([]byte("k"), 200_000)
	r := bytes.NewReader(frame)
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(frame)
		if got, err := readAll(r, 1<<20+1); err != nil || len(got) != len(frame) {
			t.Fatalf("%d bytes, %v", len(got), err)
		}
	})
	if allocs > 2 {
		t.Errorf("reading a %d-byte frame made %.1f allocations, want the copy alone", len(frame), allocs)
	}
}
