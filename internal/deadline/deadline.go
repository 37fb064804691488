// Package deadline makes re-arming a socket's deadline cheap. The WebSocket
// library sets the write deadline before every frame it writes, and a
// reader that counts every frame as proof of life extends its read
// deadline after every frame: each is a runtime timer update on the
// socket (a lock, a heap fix), thousands a second on a busy connection
// for a deadline that moved by microseconds. A Lazy keeps the armed
// deadline while it fires no earlier than asked and at most the slack
// later, the slack being 1/16 of the time left (at most MaxSlack); else it
// arms the deadline asked, plus half the slack when it is later than the
// armed one, so that the extensions of the next moments fall inside.
package deadline

import (
	"net"
	"sync"
	"time"
)

// MaxSlack bounds how much later than asked a deadline may fire.
const MaxSlack = time.Second

// Lazy is one direction's deadline (read or write) of a connection. Its
// zero value has no deadline armed.
type Lazy struct {
	mu    sync.Mutex
	armed time.Time
	slack time.Duration // of the deadline armed
}

// Set asks for deadline t (zero: none), calling arm only when the armed
// deadline must change. Keeping it costs a comparison: no clock reading,
// no timer update.
func (l *Lazy) Set(t time.Time, arm func(time.Time) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case t.IsZero():
		if l.armed.IsZero() {
			return nil
		}
		l.slack = 0
	case !l.armed.IsZero() && !t.After(l.armed) && l.armed.Sub(t) <= l.slack:
		return nil // armed fires after t, and not by much
	case l.armed.IsZero() || t.After(l.armed):
		// Later than armed (or none armed): arm with half the slack, so
		// the extensions of the next moments fall inside it.
		l.slack = min(time.Until(t)/16, MaxSlack)
		if l.slack > 0 {
			t = t.Add(l.slack / 2)
		}
	default:
		// Much earlier than armed (a short deadline to end a wait):
		// exactly as asked.
		l.slack = 0
	}
	l.armed = t
	return arm(t)
}

// Conn is a net.Conn whose deadlines are Lazy.
type Conn struct {
	net.Conn
	read, write Lazy
}

// Wrap returns nc with lazy deadlines.
func Wrap(nc net.Conn) *Conn { return &Conn{Conn: nc} }

func (c *Conn) SetReadDeadline(t time.Time) error  { return c.read.Set(t, c.Conn.SetReadDeadline) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.write.Set(t, c.Conn.SetWriteDeadline) }

// SetDeadline sets both.
func (c *Conn) SetDeadline(t time.Time) error {
	err := c.read.Set(t, c.Conn.SetReadDeadline)
	if werr := c.write.Set(t, c.Conn.SetWriteDeadline); err == nil {
		err = werr
	}
	return err
}
