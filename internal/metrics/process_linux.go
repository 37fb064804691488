package metrics

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// writeProcess writes the process_* metrics from /proc/self, as the
// Prometheus client's process collector does (clock ticks are USER_HZ, 100
// on every Linux the Go runtime supports).
func writeProcess(w *bufio.Writer) {
	const ticks = 100
	if stat, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command name, which is in parentheses and may
		// itself contain spaces.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) {
			f := bytes.Fields(stat[i+2:])
			// f[0] is field 3 (state): utime is field 14, stime 15,
			// starttime 22, vsize 23, rss 24.
			if len(f) > 21 {
				num := func(j int) float64 { v, _ := strconv.ParseFloat(string(f[j-3]), 64); return v }
				header(w, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter")
				sample(w, "process_cpu_seconds_total", "", (num(14)+num(15))/ticks)
				gauge(w, "process_virtual_memory_bytes", "Virtual memory size in bytes.", num(23))
				gauge(w, "process_resident_memory_bytes", "Resident memory size in bytes.", num(24)*float64(os.Getpagesize()))
				if bt := bootTime(); bt > 0 {
					gauge(w, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", bt+num(22)/ticks)
				}
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge(w, "process_open_fds", "Number of open file descriptors.", float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		gauge(w, "process_max_fds", "Maximum number of open file descriptors.", float64(lim.Cur))
	}
}

// bootTime reads btime from /proc/stat.
func bootTime() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			bt, _ := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
			return bt
		}
	}
	return 0
}
