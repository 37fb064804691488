package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// stat returns the fields of /proc/<pid>/stat after the command name (which
// may itself hold spaces and parentheses, hence the last ')').
func stat(pid int) ([][]byte, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, ErrGone
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, ErrGone
	}
	f := bytes.Fields(data[i+1:])
	// f[0] is field 3 (state); starttime is field 22, ppid field 4.
	if len(f) < 20 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return nil, ErrGone
	}
	return f, nil
}

// startTime is field 22 of /proc/<pid>/stat: clock ticks after boot.
func startTime(pid int) (string, error) {
	f, err := stat(pid)
	if err != nil {
		return "", err
	}
	return string(f[19]), nil
}

func parent(pid int) (int, error) {
	f, err := stat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(f[1]))
}
