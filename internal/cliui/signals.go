package cliui

import (
	"context"
	"errors"
	"io"
	"os"
)

// Signals are SIGINT and SIGTERM while a command handles them itself
// (TakeSignals) instead of Run.
type Signals struct {
	// C receives every SIGINT and SIGTERM from the take on, including
	// one that came just before it and that Run had not handled yet. It
	// never receives when the command was not started by Run.
	C        <-chan os.Signal
	s        *signals // nil when the command was not started by Run
	released bool
}

// TakeSignals hands SIGINT and SIGTERM to the command that ctx (its
// c.Context, or a context derived from it) belongs to: from now on they
// arrive on C and do nothing else (they neither cancel the context nor
// kill the process) until Release. There is no gap: a signal is either
// seen by Run before the take, and TakeSignals then returns the context's
// error (the command was interrupted already), or it arrives on C. One
// command takes them at a time.
func TakeSignals(ctx context.Context) (*Signals, error) {
	s, _ := ctx.Value(signalsKey{}).(*signals)
	var ch chan os.Signal
	if s != nil {
		ch = s.take(nil)
	}
	if err := ctx.Err(); err != nil {
		// ctx may be a derived context that merely timed out: that is
		// no signal, and the signals go back as they were (giveBack
		// treats them as interrupted only if Run saw a signal).
		if s != nil {
			s.giveBack(false)
		}
		return nil, err
	}
	return &Signals{C: ch, s: s}, nil
}

// Release gives the signals back to Run. If the command was interrupted
// while it held them (it got one on C and went on), the context is
// cancelled, as Run would have done at that signal, and a later signal
// kills the process; otherwise Run handles the next one as before. Only
// the first Release counts.
func (g *Signals) Release(interrupted bool) {
	if g.s != nil && !g.released {
		g.released = true
		g.s.giveBack(interrupted)
	}
}

// Hold runs ask, a request whose answer must not be abandoned at the
// first signal: the other side may act on it whether or not this process
// waits (a message accepted, a key enrolled), and a caller who is told
// only "interrupted" cannot know whether to ask again. The signals are
// taken (TakeSignals) while ask runs. The first SIGINT or SIGTERM prints
// note on stderr (a human line, dropped under --json as warnings are) and
// ask goes on; a second one cancels ask's context, and ask must then
// return at once, saying what is known. When ask returns, a signal that
// came meanwhile cancels the command's context, so what follows ask sees
// the command as interrupted. ask's context is never cancelled by the
// command's: bound it with a timeout.
//
// If the command was interrupted before Hold, ask does not run and Hold
// returns the context's error: nothing was asked yet. If ctx (derived from
// the command's) has passed its deadline, ask does not run either, and
// Hold returns the error timeout (wrapping context.DeadlineExceeded); the
// command is not interrupted. A command not started by Run has no signals
// to take: the end of ctx while ask runs counts as the first signal.
//
// The second signal also gives the signals back (Release(true)): a third
// one kills the process, even if ask ignores its context.
func Hold(ctx context.Context, note string, ask func(ctx context.Context) error) error {
	s, _ := ctx.Value(signalsKey{}).(*signals)
	actx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	// ask runs on this goroutine; the signals that come meanwhile are
	// handled on Run's watcher goroutine, which calls hook for each (no
	// goroutine of Hold's own to start and hand the answer back). A
	// signal handed to it interrupts the command when ask returns
	// (giveBack).
	if s != nil {
		s.take(func(n int) {
			switch n {
			case 1:
				s.note(note)
			case 2:
				// Default handling first, so that by the time ask sees
				// its context end, a third signal kills the process.
				s.giveBack(true)
				abandon()
			}
		})
	}
	if err := ctx.Err(); err != nil {
		// As TakeSignals: a derived context that merely timed out is no
		// signal, and the signals go back as they were.
		if s != nil {
			s.giveBack(false)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			if interruptedBy(ctx) {
				return context.Canceled // a signal came too: interrupted
			}
			return &Error{Code: "timeout", Message: "ran out of time before the request was made (nothing was asked)", Cause: err}
		}
		return err
	}
	err := ask(actx)
	if s != nil {
		s.giveBack(false) // after the second signal, already given back
	}
	return err
}

// interruptedBy says whether ctx belongs to a command started by Run
// whose context a signal ended.
func interruptedBy(ctx context.Context) bool {
	s, _ := ctx.Value(signalsKey{}).(*signals)
	if s == nil {
		return false
	}
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// note prints a human line on stderr, as Out.Warn does (not under --json
// unless CLAUDEMESH_DEBUG=1).
func (s *signals) note(msg string) {
	st := s.state()
	if st == nil || (st.json && !st.debug) {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	io.WriteString(st.stderr, "  "+st.errStyle.Yellow("…")+" "+msg+"\n")
}
