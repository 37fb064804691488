// Package proc identifies a running process by its pid and start time, so
// a pid that was reused by another process is not taken for the one that
// registered (the daemon's session reaper, 03-daemon "Sessions"), and walks
// a process's ancestors (the hook finds the `claude` that runs it).
package proc

import "errors"

// ErrGone means no process has that pid (or it is a zombie).
var ErrGone = errors.New("no such process")

// Identity is a process's pid and an opaque start-time stamp: the same pid
// with another stamp is another process.
type Identity struct {
	PID   int    `json:"pid"`
	Start string `json:"start"`
}

// Of returns the identity of the running process pid.
func Of(pid int) (Identity, error) {
	if pid <= 0 {
		return Identity{}, ErrGone
	}
	start, err := startTime(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, Start: start}, nil
}

// Alive reports whether the process id still runs and is the same process.
func (id Identity) Alive() bool {
	now, err := Of(id.PID)
	return err == nil && now.Start == id.Start
}

// Ancestors returns pid's parent, grandparent, ... up to max entries,
// stopping at pid 1.
func Ancestors(pid, max int) []int {
	var out []int
	for len(out) < max {
		pp, err := parent(pid)
		if err != nil || pp <= 1 {
			break
		}
		out = append(out, pp)
		pid = pp
	}
	return out
}
