package metrics

import (
	"bufio"
	"runtime"
)

// writeGo writes the Go runtime metrics the dashboard and operators use,
// under the names the Prometheus client library gives them.
func writeGo(w *bufio.Writer) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gauge(w, "go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	gauge(w, "go_threads", "Number of OS threads created.", float64(threads))
	header(w, "go_info", "Information about the Go environment.", "gauge")
	sample(w, "go_info", `version="`+escapeLabel(runtime.Version())+`"`, 1)
	for _, m := range []struct {
		name, help string
		v          uint64
		counter    bool
	}{
		{"go_memstats_alloc_bytes", "Number of bytes allocated and still in use.", ms.Alloc, false},
		{"go_memstats_alloc_bytes_total", "Total number of bytes allocated, even if freed.", ms.TotalAlloc, true},
		{"go_memstats_sys_bytes", "Number of bytes obtained from system.", ms.Sys, false},
		{"go_memstats_mallocs_total", "Total number of mallocs.", ms.Mallocs, true},
		{"go_memstats_frees_total", "Total number of frees.", ms.Frees, true},
		{"go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use.", ms.HeapAlloc, false},
		{"go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system.", ms.HeapSys, false},
		{"go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", ms.HeapIdle, false},
		{"go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", ms.HeapInuse, false},
		{"go_memstats_heap_released_bytes", "Number of heap bytes released to OS.", ms.HeapReleased, false},
		{"go_memstats_heap_objects", "Number of allocated objects.", ms.HeapObjects, false},
		{"go_memstats_stack_inuse_bytes", "Number of bytes in use by the stack allocator.", ms.StackInuse, false},
		{"go_memstats_stack_sys_bytes", "Number of bytes obtained from system for stack allocator.", ms.StackSys, false},
		{"go_memstats_gc_sys_bytes", "Number of bytes used for garbage collection system metadata.", ms.GCSys, false},
		{"go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", ms.NextGC, false},
	} {
		typ := "gauge"
		if m.counter {
			typ = "counter"
		}
		header(w, m.name, m.help, typ)
		sample(w, m.name, "", float64(m.v))
	}
	gauge(w, "go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", float64(ms.LastGC)/1e9)
	header(w, "go_gc_cycles_total", "Completed GC cycles.", "counter")
	sample(w, "go_gc_cycles_total", "", float64(ms.NumGC))
	header(w, "go_gc_pause_seconds_total", "Total time the world was stopped for garbage collection.", "counter")
	sample(w, "go_gc_pause_seconds_total", "", float64(ms.PauseTotalNs)/1e9)
}

func gauge(w *bufio.Writer, name, help string, v float64) {
	header(w, name, help, "gauge")
	sample(w, name, "", v)
}
