package bench

import (
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Segment is one of --segments equal parts of a DM run, in the order the
// messages were written: what send→push cost while the store held that
// many messages, and what the broker's memory and file were when the part
// ended. It answers "does the tail grow with everything ever written?"
// (a queue that keeps delivered ciphertext, a B+tree that deepens, a map
// that only grows), which the whole run's p99 hides.
type Segment struct {
	Index int `json:"segment"`
	// Written is how many sends the broker had acked when the segment
	// ended: its position in the store's history.
	Written int64   `json:"written"`
	E2eMs   Latency `json:"e2eMs"`
	// BrokerRssMB and StoreMB are sampled when the acks crossed the end
	// of the segment (child broker only): the broker's VmRSS and the size
	// of its broker.db.
	BrokerRssMB float64 `json:"brokerRssMB,omitzero"`
	// BrokerAnonMB is the anonymous part of BrokerRssMB (heap, stacks):
	// the rest is the store's memory map, pages the kernel can drop.
	BrokerAnonMB float64 `json:"brokerAnonMB,omitzero"`
	StoreMB      float64 `json:"storeMB,omitzero"`
	// BrokerCores is the broker's CPU over the segment's wall time (child
	// broker only): whether a part of the run was slow because the broker
	// had more to do then (an attack starting, a remap), or not.
	BrokerCores float64 `json:"brokerCores,omitzero"`
}

// segmentOf is the segment of a DM send by its sequence number. With
// every sender keeping the same window and sending the same count, send
// seq of every sender is written at about the same time, so seq orders
// sends as the store received them, within one window of each sender.
func (r *run) segmentOf(seq int) int {
	return min(seq*r.cfg.Segments/max(r.jobs, 1), r.cfg.Segments-1)
}

// sampleSegments records, while the senders run, the broker's RSS and
// store size each time the acks cross the end of a segment. It returns a
// stop function that takes the samples still owed (a run cut short, or the
// last segment) and returns them all.
func (r *run) sampleSegments() (stop func() []Segment) {
	k := r.cfg.Segments
	total := int64(len(r.senders) * r.jobs)
	segs := make([]Segment, k)
	next := 0
	lastAt, lastCPU := time.Now(), r.childCPU()
	take := func() {
		segs[next].Index, segs[next].Written = next, r.acked.Load()
		if r.child != nil {
			now, cpu := time.Now(), r.childCPU()
			if wall := now.Sub(lastAt); wall > 0 {
				segs[next].BrokerCores = round((cpu-lastCPU).Seconds()/wall.Seconds(), 2)
			}
			lastAt, lastCPU = now, cpu
			if m, err := r.child.memory(); err == nil {
				segs[next].BrokerRssMB, segs[next].BrokerAnonMB = toMB(m.now), toMB(m.anon)
			}
			if st, err := os.Stat(filepath.Join(r.child.dir, "data", "broker.db")); err == nil {
				segs[next].StoreMB = toMB(st.Size())
			}
		}
		next++
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			for next < k && r.acked.Load() >= total*int64(next+1)/int64(k) {
				take()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() []Segment {
		close(done)
		wg.Wait()
		for next < k {
			take()
		}
		return segs
	}
}

// segmentLatencies fills each segment's send→push summary from what the
// recipients recorded. Called after shutdown, like collect.
func (r *run) segmentLatencies(segs []Segment) {
	per := make([][]int64, len(segs))
	for _, p := range r.recipients {
		for i, ns := range p.e2eNs {
			s := r.segmentOf(int(p.e2eSeq[i]))
			per[s] = append(per[s], ns)
		}
	}
	for i := range segs {
		segs[i].E2eMs = summarize(per[i])
	}
}
