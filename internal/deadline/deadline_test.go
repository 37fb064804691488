package deadline

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestLazyArms: extensions by a little are not armed again; what is armed
// is never before what was asked, and at most the slack after; an earlier
// deadline and "none" are armed as asked.
func TestLazyArms(t *testing.T) {
	var l Lazy
	var armed []time.Time
	arm := func(d time.Time) error { armed = append(armed, d); return nil }
	now := time.Now()
	asked := now.Add(15 * time.Second)
	l.Set(asked, arm)
	if len(armed) != 1 || armed[0].Before(asked) || armed[0].Sub(asked) > MaxSlack {
		t.Fatalf("armed %v for %v", armed, asked)
	}
	// A thousand extensions by a few microseconds each: none armed.
	for i := range 1000 {
		d := asked.Add(time.Duration(i) * 500 * time.Nanosecond)
		l.Set(d, arm)
		if l.armed.Before(d) {
			t.Fatalf("armed %v is before the asked %v", l.armed, d)
		}
	}
	if len(armed) != 1 {
		t.Fatalf("%d arms for extensions inside the slack, want 1", len(armed))
	}
	// Past the armed deadline: armed again, with slack.
	later := armed[0].Add(time.Millisecond)
	l.Set(later, arm)
	if len(armed) != 2 || armed[1].Before(later) || armed[1].Sub(later) > MaxSlack {
		t.Fatalf("arms %v after asking %v", armed, later)
	}
	// Much earlier (a short wait): exactly as asked.
	soon := time.Now().Add(100 * time.Millisecond)
	l.Set(soon, arm)
	if len(armed) != 3 || !armed[2].Equal(soon) {
		t.Fatalf("arms %v after asking %v", armed, soon)
	}
	// None: cleared once.
	l.Set(time.Time{}, arm)
	l.Set(time.Time{}, arm)
	if len(armed) != 4 || !armed[3].IsZero() {
		t.Fatalf("arms %v after clearing", armed)
	}
	// A short timeout gets a short slack (1/16 of it).
	short := time.Now().Add(160 * time.Millisecond)
	l.Set(short, arm)
	if got := armed[4].Sub(short); got < 0 || got > 5*time.Millisecond {
		t.Fatalf("a 160 ms deadline armed %v late", got)
	}
}

// TestConnDeadlinesFire: through a real socket, a read deadline extended
// again and again fires no earlier than the last one asked, and soon after.
func TestConnDeadlinesFire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			var b [1]byte
			c.Read(b[:]) // hold it open, silent
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := Wrap(nc)
	defer c.Close()
	var asked time.Time
	for range 100 {
		asked = time.Now().Add(200 * time.Millisecond)
		c.SetReadDeadline(asked)
	}
	var b [1]byte
	_, err = c.Read(b[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want the deadline", err)
	}
	if now := time.Now(); now.Before(asked) {
		t.Fatalf("the deadline fired %v before the one asked", asked.Sub(now))
	}
	// Cleared: a write deadline of none, then one in the past, fails the
	// write at once.
	c.SetWriteDeadline(time.Time{})
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past its deadline: %v", err)
	}
}

func BenchmarkLazyExtend(b *testing.B) {
	var l Lazy
	arm := func(time.Time) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		l.Set(time.Now().Add(15*time.Second), arm)
	}
}

// BenchmarkConnSetWriteDeadline is what gorilla does before every frame,
// on a real socket, lazily and (Direct) as it was.
func BenchmarkConnSetWriteDeadline(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			var buf [1]byte
			c.Read(buf[:])
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	b.Run("Lazy", func(b *testing.B) {
		c := Wrap(nc)
		b.ReportAllocs()
		for b.Loop() {
			c.SetWriteDeadline(time.Now().Add(15 * time.Second))
		}
	})
	b.Run("Direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			nc.SetWriteDeadline(time.Now().Add(15 * time.Second))
		}
	})
}
