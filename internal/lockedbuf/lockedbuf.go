// Package lockedbuf is a buffer that goroutines may write while another
// reads it: a logger's sink, or what exec's copying goroutine collects of a
// child's output, read by a test as it runs. The tests of several packages
// used to carry a copy each.
package lockedbuf

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer safe for concurrent use. Max, when not zero,
// caps what it keeps (writes past it are accepted and dropped), for a
// child whose output a test never needs whole.
type Buffer struct {
	Max int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write keeps p (up to Max) and never fails.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max == 0 || l.b.Len() < l.Max {
		l.b.Write(p)
	}
	return len(p), nil
}

// String is what was kept so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
