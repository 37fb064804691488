package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The log watchdog. A node follows the log through one ordered consumer,
// an R1 consumer the cluster places on some server: when that server is
// killed, the consumer goes with it, and the client notices only after two
// missed idle heartbeats and then recreates it. Meanwhile the node's copy
// stands still: its writes conflict and wait for entries that do not come,
// a presence announced by another node waits for the records it refers to,
// and pushes to its connections of messages written elsewhere stop. A node
// killed in a 3-node cluster stalled a survivor's copy for 10–40 s that
// way (BENCHMARKS.md, follower kills).
//
// So a node does not depend on the consumer alone: when it knows of an
// entry it has not applied (someone waits for it: a write that conflicted,
// a presence that refers to it) and nothing was applied for StallAfter, or
// when nothing at all was applied for a second and the log's leader says
// the log is longer, it reads the missing entries itself (stream.GetMsg,
// answered by the stream's leader) and hands them to the loop, which
// applies them as it applies the consumer's, skipping whichever of the two
// delivers an entry second.

const (
	// idleCheck: with no waiter, how long the copy may stand still before
	// the watchdog asks the leader whether the log moved on.
	idleCheck = time.Second
	// fetchBatch bounds the entries handed to the loop at once.
	fetchBatch = 256
	// refollowAfter: a consumer silent that long while the watchdog had
	// to read entries it should have delivered is replaced by a new one.
	// The client library is meant to recreate it after two missed
	// heartbeats, but after a follower kill it was seen not to for a
	// minute and more.
	refollowAfter = 5 * time.Second
)

// wantEntry tells the watchdog that seq exists and someone waits for it.
func (e *Engine) wantEntry(seq uint64) {
	for {
		cur := e.want.Load()
		if cur >= seq || e.want.CompareAndSwap(cur, seq) {
			break
		}
	}
	select {
	case e.poke <- struct{}{}:
	default:
	}
}

func (e *Engine) watchLog() {
	defer close(e.watchDone)
	var refollowing sync.WaitGroup
	defer refollowing.Wait() // after cancel: it returns at once
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var busy atomic.Bool // a refollow is under way
	go func() {
		select {
		case <-e.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(e.opts.StallAfter / 3)
	defer t.Stop()
	lastAsked, lastRefollow := time.Now(), time.Now()
	for {
		select {
		case <-e.closing:
			return
		case <-t.C:
		case <-e.poke:
		}
		if e.haltErr() != nil || e.watchPaused.Load() {
			continue
		}
		if quiet := time.Since(time.Unix(0, e.delivered.Load())); quiet >= refollowAfter &&
			e.selfReadAt.Load() > e.delivered.Load() && time.Since(lastRefollow) >= refollowAfter && busy.CompareAndSwap(false, true) {
			// Creating a consumer can wait seconds for the cluster's
			// meta leader; the watchdog keeps reading meanwhile.
			lastRefollow = time.Now()
			refollowing.Add(1)
			go func() {
				defer refollowing.Done()
				defer busy.Store(false)
				e.refollow(ctx, quiet)
			}()
		}
		applied := e.applied.Load()
		still := time.Since(time.Unix(0, e.progress.Load()))
		quiet := time.Since(time.Unix(0, e.delivered.Load()))
		target := uint64(0)
		switch want := e.want.Load(); {
		case want > applied && (still >= e.opts.StallAfter || quiet >= e.opts.StallAfter):
			// Nothing applied for a while, or the consumer has been
			// silent for as long (the watchdog kept the copy moving):
			// waiting longer for the consumer would not help.
			target = want
		case still >= idleCheck && time.Since(lastAsked) >= idleCheck:
			lastAsked = time.Now()
			last, err := e.lastSeqWithin(ctx, idleCheck)
			if err != nil || last <= applied {
				continue
			}
			if time.Since(time.Unix(0, e.progress.Load())) < idleCheck {
				continue // the consumer delivered meanwhile
			}
			target = last
		default:
			continue
		}
		if len(e.incoming) > 0 || len(e.fetched) > 0 {
			continue // entries are waiting for the loop, not for the consumer
		}
		e.fetchThrough(ctx, applied, target)
	}
}

// fetchThrough reads the entries after applied up to target from the log
// and hands them to the loop, a batch at a time, until the loop has them
// all, the log has no more, or the engine closes.
func (e *Engine) fetchThrough(ctx context.Context, applied, target uint64) {
	e.fetches.Add(1)
	start, asked := time.Now(), target
	var stopped error
	defer func() {
		if d := time.Since(start); d >= time.Second || (stopped != nil && !errors.Is(stopped, jetstream.ErrMsgNotFound)) {
			e.log.Warn("cluster: reading the log itself was slow or stopped early", "from", applied+1, "through", asked,
				"took", d.Round(time.Millisecond), "stoppedBy", stopped)
		}
	}()
	for next := applied + 1; next <= target; {
		batch := make([]entry, 0, min(fetchBatch, target-next+1))
		for ; next <= target && len(batch) < fetchBatch; next++ {
			c, cancel := context.WithTimeout(ctx, e.opts.PublishTimeout)
			m, err := e.stream.GetMsg(c, next)
			cancel()
			if err != nil {
				// Not found: not written yet, or purged behind a
				// snapshot while this node was that far behind, which
				// halts it (checkGap) rather than skip the entries.
				if ctx.Err() == nil {
					stopped = fmt.Errorf("entry %d: %w", next, err)
				}
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					e.checkGap(next - 1)
				}
				target = next - 1
				break
			}
			batch = append(batch, entry{seq: m.Sequence, data: m.Data, node: writerOf(m.Header.Get(jetstream.MsgIDHeader)), schema: m.Header.Get(schemaHeader)})
		}
		if len(batch) == 0 {
			return
		}
		e.fetchedEntries.Add(uint64(len(batch)))
		e.selfReadAt.Store(time.Now().UnixNano())
		select {
		case e.fetched <- batch:
		case <-e.closing:
			return
		}
	}
}

// refollow replaces the log consumer with a new one that starts after
// the entry the copy is at.
func (e *Engine) refollow(ctx context.Context, quiet time.Duration) {
	e.consMu.Lock()
	old := e.cons
	e.consMu.Unlock()
	if old != nil {
		old.Stop()
	}
	e.refollows.Add(1)
	e.log.Warn("cluster: the log consumer delivered nothing while entries were missing; following the log again",
		"silentFor", quiet.Round(time.Millisecond), "applied", e.applied.Load())
	c, cancel := context.WithTimeout(ctx, e.opts.PublishTimeout)
	defer cancel()
	if err := e.follow(c); err != nil && ctx.Err() == nil {
		e.log.Warn("cluster: follow the log again", "err", err)
	}
}

// consumerHost names the server the log consumer lives on ("" unknown).
func (e *Engine) consumerHost() string {
	e.consMu.Lock()
	c := e.consumer
	e.consMu.Unlock()
	if c == nil {
		return ""
	}
	if info := c.CachedInfo(); info != nil && info.Cluster != nil {
		return info.Cluster.Leader
	}
	return ""
}

// lastSeqWithin asks the log's leader for its last entry, waiting at most d.
func (e *Engine) lastSeqWithin(ctx context.Context, d time.Duration) (uint64, error) {
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	info, err := e.stream.Info(c)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// Fetched counts the watchdog's reads of the log: how many times it found
// the consumer behind, and how many entries it read itself (metrics).
func (e *Engine) Fetched() (times, entries, refollows uint64) {
	return e.fetches.Load(), e.fetchedEntries.Load(), e.refollows.Load()
}
