package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// `claudemesh bench --topic` (issue 8's measurement): --peers members in one
// encrypted topic, one of them posting --messages posts at a fixed --rate;
// it times post → live push at every other member, post → ack, post → SSE
// event on a stream of the topic, and a page of history (50 posts, at a
// random place) in a topic of --history posts made beforehand. The crypto is
// real: every post is sealed and signed, every push opened and verified.

// Defaults of the --topic flags.
const (
	DefaultTopicRate    = 20
	DefaultTopicHistory = 100000
	historyPages        = 200 // history requests timed
)

// TopicResult is what a --topic run measured (`bench --topic --json`).
type TopicResult struct {
	Members       int     `json:"members"`
	Posts         int     `json:"posts"`
	RatePerSec    float64 `json:"ratePerSec"`
	Payload       int     `json:"payload"`
	Delivered     int64   `json:"delivered"`
	Expected      int64   `json:"expected"`
	DeliveredPct  float64 `json:"deliveredPct"`
	AckMs         Latency `json:"ackMs"`
	LiveMs        Latency `json:"liveMs"`        // post → push at each other member
	SSEMs         Latency `json:"sseMs"`         // post → event on the topic's stream
	SSEAfterAckMs Latency `json:"sseAfterAckMs"` // ack → event (negative rounds to 0)
	HistoryPosts  int     `json:"historyPosts"`
	HistoryPageMs Latency `json:"historyPageMs"`
	PrefillPerSec float64 `json:"prefillPerSec"`
	Unverified    int64   `json:"unverified"`
	// BrokerPeakRssMB is the child broker's VmHWM (absent with --broker).
	BrokerPeakRssMB *float64 `json:"brokerPeakRssMB,omitzero"`
	BrokerEndRssMB  float64  `json:"brokerEndRssMB,omitzero"`
	BrokerCPUSec    float64  `json:"brokerCpuSec"`
	BenchCPUSec     float64  `json:"benchCpuSec"`
	SetupSec        float64  `json:"setupSec"`
}

// topicRun is the state of one --topic run beside the shared run.
type topicRun struct {
	*run
	topic  wire.TopicInfo
	key    *[32]byte
	poster *peer
	sendAt []atomic.Int64
	ackAt  []atomic.Int64
	idSeq  sync.Map // messageId → seq

	mu        sync.Mutex
	liveNs    []int64
	sseNs     map[string]int64 // messageId → arrival
	seen      map[string]bool  // member|messageId
	delivered atomic.Int64
	bad       atomic.Int64
}

func (c *Config) validateTopic() error {
	switch {
	case c.Peers < 2:
		return cliui.UsageErrorf("--peers must be at least 2 with --topic (one posts, the others read)")
	case c.Peers+1 > maxMembers:
		return cliui.UsageErrorf("--peers must be below %d", maxMembers)
	case c.Messages < 1:
		return cliui.UsageErrorf("--messages must be at least 1 with --topic")
	case c.TopicRate <= 0:
		return cliui.UsageErrorf("--rate must be positive")
	case c.TopicHistory < 0:
		return cliui.UsageErrorf("--history must not be negative")
	}
	return c.validateCommon()
}

// RunTopic performs one --topic run; it always stops the child broker.
func RunTopic(ctx context.Context, cfg Config) (*TopicResult, error) {
	if err := cfg.validateTopic(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, base: time.Now()}
	defer r.shutdown()
	if err := raiseFileLimit(); err != nil {
		r.warnf("could not raise the open-file limit: %v", err)
	}
	exe := ""
	if cfg.BrokerURL == "" {
		var err error
		if exe, err = executable(cfg, "run the broker"); err != nil {
			return nil, err
		}
	}
	if err := r.startBroker(ctx, exe); err != nil {
		return nil, err
	}
	t := &topicRun{run: r, sseNs: map[string]int64{}, seen: map[string]bool{},
		sendAt: make([]atomic.Int64, cfg.Messages), ackAt: make([]atomic.Int64, cfg.Messages)}
	if err := t.makeMembers(); err != nil {
		return nil, err
	}
	r.joiners = newJoiners(r.url, setupWorkers)
	if err := r.enroll(ctx); err != nil {
		return nil, err
	}
	res := &TopicResult{Members: cfg.Peers, Posts: cfg.Messages, RatePerSec: cfg.TopicRate, Payload: cfg.Payload,
		HistoryPosts: cfg.TopicHistory}
	oc, err := r.dialRetry(ctx, r.owner, client.DialOptions{})
	if err != nil {
		return nil, fmt.Errorf("owner connection: %w", err)
	}
	defer oc.Close()
	r.progressf("creating the topic")
	info, key, err := oc.TopicCreate(ctx, client.TopicCreateOptions{Name: "bench", Description: "claudemesh bench --topic"})
	if err != nil {
		return nil, fmt.Errorf("creating the topic: %w", err)
	}
	t.topic, t.key = *info, key
	if err := t.prefill(ctx, oc, res); err != nil {
		return nil, err
	}
	if err := t.timeHistory(ctx, oc, res); err != nil {
		return nil, err
	}
	if err := t.joinMembers(ctx, oc); err != nil {
		return nil, err
	}
	stream, err := t.openStream(ctx, oc)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	res.SetupSec = round(time.Since(r.base).Seconds(), 2)

	selfCPU0, brokerCPU0 := selfCPU(), r.childCPU()
	if err := t.post(ctx); err != nil {
		return nil, err
	}
	selfCPU1, brokerCPU1 := selfCPU(), r.childCPU()
	res.BenchCPUSec, res.BrokerCPUSec = round((selfCPU1-selfCPU0).Seconds(), 2), round((brokerCPU1-brokerCPU0).Seconds(), 2)
	if r.child != nil {
		if m, err := r.child.memory(); err == nil {
			mb := toMB(m.peak)
			res.BrokerPeakRssMB, res.BrokerEndRssMB = &mb, toMB(m.now)
		} else {
			r.warnf("broker RSS: %v", err)
		}
	}
	stream.Close()
	r.shutdown()
	t.collect(res)
	return res, nil
}

// makeMembers makes the identities (enroll gives them their mesh ids).
func (t *topicRun) makeMembers() error {
	saved := t.cfg
	t.cfg.Broadcast, t.cfg.Messages = false, 0
	err := t.makePeers()
	t.cfg = saved
	if err != nil {
		return err
	}
	t.poster = t.peers[0]
	return nil
}

// prefill makes --history posts (the owner, alone in the topic, on a
// transient connection, so they are stored but pushed to nobody) to measure
// a history page in a large topic.
func (t *topicRun) prefill(ctx context.Context, oc *client.Conn, res *TopicResult) error {
	n := t.cfg.TopicHistory
	if n == 0 {
		return nil
	}
	start := time.Now()
	body := plaintext(0, t.cfg.Payload)
	const window = 512
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	var done atomic.Int64
	defer t.ticking(func() { t.progressf("filling the history: %d/%d posts", done.Load(), n) })()
	for i := range n {
		if failed.Load() != nil || ctx.Err() != nil {
			break
		}
		s, err := client.SealTopicPost(t.meshID, t.topic.ID, 1, t.key, body, t.owner.Member, client.SendOptions{ID: fmt.Sprintf("h%d", i)})
		if err != nil {
			return err
		}
		sem <- struct{}{}
		ch, err := oc.SendAsync(ctx, s)
		if err != nil {
			return fmt.Errorf("filling the history: %w", err)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if r := <-ch; r.Err != nil {
				failed.CompareAndSwap(nil, &r.Err)
				return
			}
			done.Add(1)
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		return fmt.Errorf("filling the history: %w", *e)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	res.PrefillPerSec = round(float64(n)/time.Since(start).Seconds(), 1)
	return nil
}

// timeHistory times history pages (50 posts) before random posts.
func (t *topicRun) timeHistory(ctx context.Context, oc *client.Conn, res *TopicResult) error {
	if t.cfg.TopicHistory == 0 {
		return nil
	}
	t.progressf("timing history pages")
	// Collect ids to page before: one walk over a sample of pages.
	var ids []string
	before := ""
	for len(ids) < 2000 {
		page, err := oc.TopicHistory(ctx, t.topic.ID, client.HistoryPage{Limit: wire.MaxTopicHistory, Before: before})
		if err != nil {
			return fmt.Errorf("reading the history: %w", err)
		}
		for _, m := range page.Messages {
			if m.Push != nil {
				ids = append(ids, m.Push.MessageID)
			}
		}
		if !page.More || len(page.Messages) == 0 {
			break
		}
		before = ids[len(ids)-1]
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	samples := make([]int64, 0, historyPages)
	for i := range historyPages {
		b := ""
		if i > 0 && len(ids) > 0 {
			b = ids[rng.IntN(len(ids))]
		}
		t0 := time.Now()
		page, err := oc.TopicHistory(ctx, t.topic.ID, client.HistoryPage{Limit: wire.MaxTopicHistory, Before: b})
		if err != nil {
			return fmt.Errorf("timing history: %w", err)
		}
		samples = append(samples, int64(time.Since(t0)))
		for _, m := range page.Messages {
			if m.Push == nil {
				return errors.New("a history page held an undecodable post")
			}
		}
	}
	res.HistoryPageMs = summarize(samples)
	return nil
}

// joinMembers connects every member as a presence that records topic
// pushes, has each join the topic, seals the key for all (as a key
// holder's client would) and has each open its seal.
func (t *topicRun) joinMembers(ctx context.Context, oc *client.Conn) error {
	var done atomic.Int64
	err := parallel(ctx, len(t.peers), func(_, i int) error {
		p := t.peers[i]
		c, err := t.dialRetry(ctx, p.ident, client.DialOptions{Presence: true, Role: wire.RoleCLI, SessionID: "bench",
			OnPush: func(_ []byte, m *wire.Push) { t.onPush(p, m) }})
		if err != nil {
			return fmt.Errorf("member %d connecting: %w", i, err)
		}
		p.conn = c
		if err := c.TopicJoin(ctx, t.topic.ID); err != nil {
			return fmt.Errorf("member %d joining: %w", i, err)
		}
		t.progressf("members joining: %d/%d", done.Add(1), len(t.peers))
		return nil
	})
	if err != nil {
		return err
	}
	t.progressf("sealing the key for %d members", len(t.peers))
	keeper := &client.TopicKeeper{MeshID: t.meshID, Member: t.owner.Member, Ring: client.NewTopicKeyring()}
	keeper.Ring.Put(t.topic.ID, 1, t.key)
	if err := keeper.SealPending(ctx, oc, t.topic.ID); err != nil {
		return fmt.Errorf("sealing the key: %w", err)
	}
	err = parallel(ctx, len(t.peers), func(_, i int) error {
		p := t.peers[i]
		k := &client.TopicKeeper{MeshID: t.meshID, Member: p.key, Ring: client.NewTopicKeyring()}
		if _, err := k.Refresh(ctx, p.conn, t.topic.ID); err != nil {
			return err
		}
		if !k.Ring.Has(t.topic.ID, 1) {
			return fmt.Errorf("member %d could not open its seal", i)
		}
		return nil
	})
	return err
}

// onPush records a live post at a member: the time first, then the
// verification (every push is opened and its signature checked).
func (t *topicRun) onPush(p *peer, m *wire.Push) {
	at := t.now()
	if m.Kind != wire.KindTopic || p == t.poster {
		return
	}
	seq, ok := parseSendID(m.ClientMessageID, t.poster.idx)
	if !ok || seq >= len(t.sendAt) {
		return // a history post
	}
	// Every member gets the same post: its signature is checked once per
	// post (the first member to see it), as the DM bench does for
	// broadcasts, so the load generator does not starve the broker of
	// CPU; each member still opens its copy.
	ok = false
	if v, seen := t.verified.Load(m.MessageID); seen {
		body, err := cmcrypto.SecretOpen(m.Nonce, m.Ciphertext, t.key)
		ok = v.(bool) && err == nil && string(body) == string(t.poster.plain)
	} else {
		msg := client.OpenTopicPush(m, t.meshID, t.topic.ID, func(int) *[32]byte { return t.key })
		ok = msg.Verified && msg.Body == string(t.poster.plain)
		t.verified.Store(m.MessageID, ok)
	}
	if !ok {
		t.bad.Add(1)
		return
	}
	k := p.pubHex + "|" + m.MessageID
	t.mu.Lock()
	if !t.seen[k] {
		t.seen[k] = true
		t.liveNs = append(t.liveNs, at-t.sendAt[seq].Load())
		t.delivered.Add(1)
	}
	t.mu.Unlock()
}

// sseStream is the topic's SSE stream, read on its own goroutine.
type sseStream struct {
	resp *http.Response
	once sync.Once
}

func (s *sseStream) Close() { s.once.Do(func() { s.resp.Body.Close() }) }

// openStream creates a read key and opens GET /v1/topics/{id}/stream.
func (t *topicRun) openStream(ctx context.Context, oc *client.Conn) (*sseStream, error) {
	k, err := oc.APIKeyCreate(ctx, wire.APIKeyCreate{Label: "bench stream", Capabilities: []string{wire.CapRead}})
	if err != nil {
		return nil, fmt.Errorf("creating an API key: %w", err)
	}
	base := strings.Replace(strings.Replace(strings.TrimSuffix(t.url, "/ws"), "wss://", "https://", 1), "ws://", "http://", 1)
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/topics/"+t.topic.ID+"/stream", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("opening the topic stream: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("opening the topic stream: HTTP %d", resp.StatusCode)
	}
	s := &sseStream{resp: resp}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		first := true
		for sc.Scan() {
			line := sc.Text()
			if first {
				close(ready)
				first = false
			}
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				at := t.now()
				t.mu.Lock()
				t.sseNs[id] = at
				t.mu.Unlock()
			}
		}
		if first {
			close(ready)
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	return s, nil
}

// post has the poster post at the fixed rate, then waits for the
// deliveries (at most 10 s after the last ack).
func (t *topicRun) post(ctx context.Context) error {
	n := t.cfg.Messages
	others := int64(len(t.peers) - 1)
	defer t.ticking(func() {
		t.progressf("posting: %d/%d posts delivered to %d/%d members", t.acked.Load(), n, t.delivered.Load(), int64(n)*others)
	})()
	tick := time.NewTicker(time.Duration(float64(time.Second) / t.cfg.TopicRate))
	defer tick.Stop()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for seq := range n {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		id := sendID(t.poster.idx, seq)
		s, err := client.SealTopicPost(t.meshID, t.topic.ID, 1, t.key, t.poster.plain, t.poster.key, client.SendOptions{ID: id})
		if err != nil {
			return err
		}
		t.sendAt[seq].Store(t.now())
		ch, err := t.poster.conn.SendAsync(ctx, s)
		if err != nil {
			return fmt.Errorf("posting: %w", err)
		}
		wg.Go(func() {
			r := <-ch
			if r.Err != nil {
				failed.CompareAndSwap(nil, &r.Err)
				return
			}
			t.ackAt[seq].Store(t.now())
			t.idSeq.Store(r.Ack.MessageID, seq)
			t.acked.Add(1)
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		return fmt.Errorf("a post was refused: %w", *e)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		t.mu.Lock()
		streamed := len(t.sseNs)
		t.mu.Unlock()
		if t.delivered.Load() >= int64(n)*others && streamed >= n {
			break
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func (t *topicRun) collect(res *TopicResult) {
	n := t.cfg.Messages
	res.Expected = int64(n) * int64(len(t.peers)-1)
	res.Delivered = t.delivered.Load()
	res.Unverified = t.bad.Load()
	if res.Expected > 0 {
		res.DeliveredPct = round(100*float64(res.Delivered)/float64(res.Expected), 2)
	}
	var ack []int64
	for seq := range n {
		if a := t.ackAt[seq].Load(); a > 0 {
			ack = append(ack, a-t.sendAt[seq].Load())
		}
	}
	res.AckMs = summarize(ack)
	res.LiveMs = summarize(t.liveNs)
	var sse, afterAck []int64
	t.idSeq.Range(func(k, v any) bool {
		seq := v.(int)
		if at, ok := t.sseNs[k.(string)]; ok {
			sse = append(sse, at-t.sendAt[seq].Load())
			afterAck = append(afterAck, max(at-t.ackAt[seq].Load(), 0))
		}
		return true
	})
	res.SSEMs, res.SSEAfterAckMs = summarize(sse), summarize(afterAck)
	if len(sse) < n {
		t.warnf("%d of %d posts reached the SSE stream", len(sse), n)
	}
}

// reportTopic prints the human summary of --topic.
func reportTopic(out *cliui.Out, r *TopicResult) {
	out.Linef("claudemesh bench --topic: %d members in one encrypted topic, %d posts at %.0f/s, %d-byte payload",
		r.Members, r.Posts, r.RatePerSec, r.Payload)
	lat := func(l Latency) string {
		return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s", ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max))
	}
	out.Resultf("delivered   %d/%d live pushes to the other members (%.2f %%)", r.Delivered, r.Expected, r.DeliveredPct)
	out.Resultf("post→ack    %s", lat(r.AckMs))
	out.Resultf("post→push   %s   (each other member, live)", lat(r.LiveMs))
	out.Resultf("post→SSE    %s", lat(r.SSEMs))
	out.Resultf("ack→SSE     %s", lat(r.SSEAfterAckMs))
	if r.HistoryPosts > 0 {
		out.Resultf("history     %s   (a page of 50 in %d posts; filled at %.0f posts/s)", lat(r.HistoryPageMs), r.HistoryPosts, r.PrefillPerSec)
	}
	if r.BrokerPeakRssMB != nil {
		out.Resultf("broker RSS  %.1f MB peak, %.1f MB at the end", *r.BrokerPeakRssMB, r.BrokerEndRssMB)
	}
	out.Linef("cpu         broker %.2f s, bench %.2f s while posting", r.BrokerCPUSec, r.BenchCPUSec)
	if r.Unverified > 0 {
		out.Linef("notes       %d pushes did not verify or open to what was sent", r.Unverified)
	}
}
