package metrics

import (
	"bufio"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounter("t_total", "A counter.")
	g := r.NewGauge("t_gauge", "A gauge\nwith two lines.")
	v := r.NewCounterVec("t_by_reason_total", "By reason.", "reason", "kind")
	h := r.NewHistogram("t_seconds", "Latency.", []float64{0.001, 0.01, 0.1})
	c.Inc()
	c.Add(2.5)
	g.Set(10)
	g.Dec()
	g.Sub(2)
	v.WithLabelValues("rate_limited", "box").Inc()
	v.WithLabelValues("rate_limited", "box").Inc()
	v.WithLabelValues(`a"b\c`, "x\ny").Inc()
	for _, x := range []float64{0.0005, 0.001, 0.005, 0.05, 3} {
		h.Observe(x)
	}
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	want := `# HELP t_by_reason_total By reason.
# TYPE t_by_reason_total counter
t_by_reason_total{reason="a\"b\\c",kind="x\ny"} 1
t_by_reason_total{reason="rate_limited",kind="box"} 2
# HELP t_gauge A gauge\nwith two lines.
# TYPE t_gauge gauge
t_gauge 7
# HELP t_seconds Latency.
# TYPE t_seconds histogram
t_seconds_bucket{le="0.001"} 2
t_seconds_bucket{le="0.01"} 3
t_seconds_bucket{le="0.1"} 4
t_seconds_bucket{le="+Inf"} 5
t_seconds_sum 3.0565
t_seconds_count 5
# HELP t_total A counter.
# TYPE t_total counter
t_total 3.5
`
	if b.String() != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestRuntimeAndHandler(t *testing.T) {
	r := NewRegistry().WithRuntime()
	r.NewGauge("x", "").Set(1)
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	body := rec.Body.String()
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes",
		"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_max_fds"} {
		if !strings.Contains(body, "\n"+name+" ") {
			t.Errorf("no %s in\n%s", name, body)
		}
	}
	// Every sample line is `name[{labels}] value`, and every family has a
	// TYPE line before its samples.
	typed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			typed[strings.Fields(f)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(strings.Fields(line)[0], "{")
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !typed[name] && !typed[base] {
			t.Errorf("sample before its TYPE: %q", line)
		}
		if len(strings.Fields(line)) != 2 {
			t.Errorf("bad sample line %q", line)
		}
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	r := NewRegistry()
	r.NewCounter("a", "")
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	r.NewGauge("a", "")
}

func BenchmarkCounterVec(b *testing.B) {
	v := NewRegistry().NewCounterVec("x", "", "reason")
	for b.Loop() {
		v.WithLabelValues("rate_limited").Inc()
	}
}

func TestValue(t *testing.T) {
	r := NewRegistry()
	r.NewCounterVec("v_total", "", "a", "b").WithLabelValues("x", "y").Add(3)
	r.NewGauge("g", "").Set(4)
	if v := r.Value("v_total", "x", "y"); v != 3 {
		t.Errorf("vec %v", v)
	}
	if v := r.Value("v_total", "x"); v != 0 {
		t.Errorf("partial labels %v", v)
	}
	if v := r.Value("g"); v != 4 {
		t.Errorf("gauge %v", v)
	}
	if v := r.Value("nope"); v != 0 {
		t.Errorf("absent %v", v)
	}
}
