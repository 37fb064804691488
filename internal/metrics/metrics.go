// Package metrics is the broker's Prometheus exposition: counters, gauges,
// labelled counters and fixed-bucket histograms in a per-instance Registry,
// written in the Prometheus text format (version 0.0.4) together with the Go
// runtime and process metrics the Grafana dashboard reads.
//
// It exists instead of the Prometheus client library because of process
// start: the broker shares its binary with every one-shot verb, and Go runs
// the package initialisers of everything linked before main. The client
// library's (its default registry with Go and process collectors, procfs,
// protobuf descriptors) cost ~1.6 ms of every `claudemesh send`, and the
// smaller libraries considered (VictoriaMetrics/metrics) also read /proc and
// cgroup files at init. This package does no work until a Registry is made,
// and none that the broker does not ask for.
package metrics

import (
	"bufio"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds one broker's metrics; there is no global default (each
// broker in a test process has its own).
type Registry struct {
	mu      sync.Mutex
	metrics []metric
	runtime bool
}

// metric is one metric family.
type metric interface {
	name() string
	write(w *bufio.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) add(m metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.metrics {
		if o.name() == m.name() {
			panic("metrics: " + m.name() + " registered twice")
		}
	}
	r.metrics = append(r.metrics, m)
	slices.SortFunc(r.metrics, func(a, b metric) int { return strings.Compare(a.name(), b.name()) })
}

// WithRuntime adds the Go runtime (go_*) and process (process_*) metrics,
// read at each scrape.
func (r *Registry) WithRuntime() *Registry {
	r.mu.Lock()
	r.runtime = true
	r.mu.Unlock()
	return r
}

// WritePrometheus writes every metric in the text exposition format.
func (r *Registry) WritePrometheus(out io.Writer) error {
	w := bufio.NewWriter(out)
	r.mu.Lock()
	ms := slices.Clone(r.metrics)
	rt := r.runtime
	r.mu.Unlock()
	for _, m := range ms {
		m.write(w)
	}
	if rt {
		writeGo(w)
		writeProcess(w)
	}
	return w.Flush()
}

// Handler serves the registry on GET.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.WritePrometheus(w)
	})
}

// ---- value cells ----

// atomicFloat is a float64 updated with compare-and-swap.
type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) add(d float64) {
	for {
		old := f.bits.Load()
		if f.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

func (f *atomicFloat) set(v float64) { f.bits.Store(math.Float64bits(v)) }
func (f *atomicFloat) get() float64  { return math.Float64frombits(f.bits.Load()) }

// Counter only goes up.
type Counter struct {
	n, help string
	v       atomicFloat
}

// NewCounter registers a counter.
func (r *Registry) NewCounter(name, help string) *Counter {
	c := &Counter{n: name, help: help}
	r.add(c)
	return c
}

// Inc adds one.
func (c *Counter) Inc() { c.v.add(1) }

// Add adds d, which must not be negative.
func (c *Counter) Add(d float64) {
	if d < 0 {
		panic("metrics: counter " + c.n + " decreased")
	}
	c.v.add(d)
}

// Value is the current count (tests).
func (c *Counter) Value() float64 { return c.v.get() }

func (c *Counter) name() string { return c.n }
func (c *Counter) write(w *bufio.Writer) {
	header(w, c.n, c.help, "counter")
	sample(w, c.n, "", c.v.get())
}

// Gauge goes up and down.
type Gauge struct {
	n, help string
	v       atomicFloat
}

// NewGauge registers a gauge.
func (r *Registry) NewGauge(name, help string) *Gauge {
	g := &Gauge{n: name, help: help}
	r.add(g)
	return g
}

func (g *Gauge) Inc()           { g.v.add(1) }
func (g *Gauge) Dec()           { g.v.add(-1) }
func (g *Gauge) Add(d float64)  { g.v.add(d) }
func (g *Gauge) Sub(d float64)  { g.v.add(-d) }
func (g *Gauge) Set(v float64)  { g.v.set(v) }
func (g *Gauge) Value() float64 { return g.v.get() }
func (g *Gauge) name() string   { return g.n }
func (g *Gauge) write(w *bufio.Writer) {
	header(w, g.n, g.help, "gauge")
	sample(w, g.n, "", g.v.get())
}

// CounterVec is a counter family with labels. Label values come from
// bounded sets (error codes, kinds): never a peer, topic or mesh.
type CounterVec struct {
	n, help string
	labels  []string
	mu      sync.RWMutex
	byKey   map[string]*Counter
}

// NewCounterVec registers a labelled counter family.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	v := &CounterVec{n: name, help: help, labels: labels, byKey: map[string]*Counter{}}
	r.add(v)
	return v
}

// WithLabelValues returns the counter for these label values, in the order
// the labels were declared.
func (v *CounterVec) WithLabelValues(values ...string) *Counter {
	if len(values) != len(v.labels) {
		panic("metrics: " + v.n + " takes " + strconv.Itoa(len(v.labels)) + " label values")
	}
	key := labelString(v.labels, values)
	v.mu.RLock()
	c := v.byKey[key]
	v.mu.RUnlock()
	if c != nil {
		return c
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.byKey[key]; c == nil {
		c = &Counter{n: v.n}
		v.byKey[key] = c
	}
	return c
}

func (v *CounterVec) name() string { return v.n }
func (v *CounterVec) write(w *bufio.Writer) {
	v.mu.RLock()
	keys := make([]string, 0, len(v.byKey))
	for k := range v.byKey {
		keys = append(keys, k)
	}
	v.mu.RUnlock()
	slices.Sort(keys)
	header(w, v.n, v.help, "counter")
	for _, k := range keys {
		v.mu.RLock()
		c := v.byKey[k]
		v.mu.RUnlock()
		sample(w, v.n, k, c.v.get())
	}
}

// Histogram counts observations into fixed upper bounds (seconds, for the
// broker's latencies), as Prometheus' `le` buckets, so histogram_quantile
// over `_bucket` works as with the client library.
type Histogram struct {
	n, help string
	bounds  []float64
	counts  []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	count   atomic.Uint64
	sum     atomicFloat
}

// NewHistogram registers a histogram with the given increasing upper bounds.
func (r *Registry) NewHistogram(name, help string, bounds []float64) *Histogram {
	if !slices.IsSorted(bounds) {
		panic("metrics: " + name + " bounds are not sorted")
	}
	h := &Histogram{n: name, help: help, bounds: slices.Clone(bounds), counts: make([]atomic.Uint64, len(bounds)+1)}
	r.add(h)
	return h
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v) // first bound ≥ v: le is inclusive
	h.counts[i].Add(1)
	h.sum.add(v)
	h.count.Add(1)
}

// Count is the number of observations (tests).
func (h *Histogram) Count() uint64 { return h.count.Load() }

func (h *Histogram) name() string { return h.n }
func (h *Histogram) write(w *bufio.Writer) {
	header(w, h.n, h.help, "histogram")
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		sample(w, h.n+"_bucket", `le="`+formatFloat(b)+`"`, float64(cum))
	}
	cum += h.counts[len(h.bounds)].Load()
	sample(w, h.n+"_bucket", `le="+Inf"`, float64(cum))
	sample(w, h.n+"_sum", "", h.sum.get())
	// The count is the +Inf bucket, so a scrape never shows them disagree.
	sample(w, h.n+"_count", "", float64(cum))
}

// ---- text format ----

func header(w *bufio.Writer, name, help, typ string) {
	if help != "" {
		w.WriteString("# HELP ")
		w.WriteString(name)
		w.WriteByte(' ')
		w.WriteString(escapeHelp(help))
		w.WriteByte('\n')
	}
	w.WriteString("# TYPE ")
	w.WriteString(name)
	w.WriteByte(' ')
	w.WriteString(typ)
	w.WriteByte('\n')
}

func sample(w *bufio.Writer, name, labels string, v float64) {
	w.WriteString(name)
	if labels != "" {
		w.WriteByte('{')
		w.WriteString(labels)
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func labelString(names, values []string) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(escapeLabel(values[i]))
		b.WriteByte('"')
	}
	return b.String()
}

// escapeLabel and escapeHelp apply the format's escapes (backslash,
// newline, and in label values the double quote). Hand-written rather than
// package-level strings.Replacers, which would be built at process start.
func escapeLabel(s string) string { return escape(s, true) }
func escapeHelp(s string) string  { return escape(s, false) }

func escape(s string, quote bool) string {
	if !strings.ContainsAny(s, "\\\n\"") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Value reads a counter or gauge by name and label values (in declaration
// order; none for an unlabelled metric), 0 when there is no such series —
// for tests and health checks, which would otherwise parse the exposition.
func (r *Registry) Value(name string, labelValues ...string) float64 {
	r.mu.Lock()
	ms := slices.Clone(r.metrics)
	r.mu.Unlock()
	for _, m := range ms {
		if m.name() != name {
			continue
		}
		switch x := m.(type) {
		case *Counter:
			return x.Value()
		case *Gauge:
			return x.Value()
		case *CounterVec:
			if len(labelValues) != len(x.labels) {
				return 0
			}
			x.mu.RLock()
			c := x.byKey[labelString(x.labels, labelValues)]
			x.mu.RUnlock()
			if c != nil {
				return c.Value()
			}
		}
	}
	return 0
}
