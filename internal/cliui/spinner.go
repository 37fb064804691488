package cliui

import (
	"io"
	"os"
	"sync"
	"time"
)

const spinnerInterval = 100 * time.Millisecond

// Spinner is a one-line progress indicator for long waits (bench, topic tail
// catch-up, daemon up). An inert Spinner (not a terminal) does nothing, so
// callers never check.
type Spinner struct {
	w        io.Writer
	mu       sync.Mutex
	msg      string
	frame    int
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

const spinnerFrames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

// NewSpinner starts a spinner on w labelled msg if w is a terminal (and
// TERM is not dumb); otherwise it returns an inert one.
func NewSpinner(w io.Writer, msg string) *Spinner {
	return startSpinner(w, msg, spinnerWanted(w), spinnerInterval)
}

func spinnerWanted(w io.Writer) bool {
	return os.Getenv("TERM") != "dumb" && IsTerminal(w)
}

func startSpinner(w io.Writer, msg string, on bool, every time.Duration) *Spinner {
	s := &Spinner{w: w, msg: msg}
	if !on {
		return s
	}
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	s.draw()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.draw()
			}
		}
	}()
	return s
}

// draw writes the current frame over the current line.
func (s *Spinner) draw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	frames := []rune(spinnerFrames)
	io.WriteString(s.w, "\r\x1b[K  "+string(frames[s.frame%len(frames)])+" "+s.msg)
	s.frame++
}

// Update changes the label (for example a progress count).
func (s *Spinner) Update(msg string) {
	if s.stop == nil {
		return
	}
	s.mu.Lock()
	s.msg = msg
	s.mu.Unlock()
}

// Stop stops the spinner and clears its line. It is idempotent and returns
// once nothing more will be drawn.
func (s *Spinner) Stop() {
	if s.stop == nil {
		return
	}
	s.stopOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		io.WriteString(s.w, "\r\x1b[K")
		s.mu.Unlock()
	})
}
