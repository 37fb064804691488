package broker

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"claudemesh/client"
	"claudemesh/store"
	"claudemesh/wire"
)

// One member streaming large DMs (to herself, never fetched) is held to
// --byte-rate after --byte-burst, whatever --rate allows in messages: 200
// sends of 64 KiB a second were 13 MB/s of ciphertext into the committer
// and the disk every mesh shares (bench --adversary, attack "self"). A
// refused send spends none of the budget, so waiting the retryAfterMs it
// was given gets the next one through; another member is not held. Past
// a refusal the broker reads the connection's next frame only after the
// retryAfterMs it gave (pacing.go): what alice streamed regardless is
// read at the byte rate, never faster. The refused send holds its line
// (sendorder.go) while the rest of the stream is read, however long the
// pauses take, so none behind it is accepted ahead of it and, sent again
// once its client has waited the retryAfterMs it was given, it gets
// through at once (a hold that aged through the pauses ended midway: a
// later send was accepted out of order and a later refusal held the
// resend, refused again and again, the last time with retryAfterMs 1).
func TestByteRateHoldsOneMembersLargeSends(t *testing.T) {
	t.Parallel()
	if def := DefaultConfig(); def.ByteRate <= 0 || def.ByteBurst < def.MaxFrame {
		t.Fatalf("default --byte-rate %d, --byte-burst %d: want a limit on by default", def.ByteRate, def.ByteBurst)
	}
	cfg := testConfig(t)
	cfg.ByteRate = 100 << 10 // 100 KiB/s: the burst (one --max-frame, 1 MiB) matters, not the refill
	cfg.ByteBurst = 0
	// Shorter than the pauses the stream is read after (each refusal of
	// an 80 KB frame pauses the reads ~0.8 s), longer than the broker
	// takes to read and answer a frame.
	cfg.LineHold = time.Second
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	body := strings.Repeat("x", 60000)
	a := connect(t, b, alice, false, nil)
	var sends []wire.Send
	ok, held := 0, 0
	var refusal *wire.AckError
	refusedIDs, acceptedIDs := map[string]bool{}, map[string]bool{}
	var notBefore time.Time // the latest a refusal said to send again
	start := time.Now()
	// 20 frames (1.6 MB) at once, and 20 more until one is refused: a
	// machine so loaded that the broker took 6 s over the first 20 had
	// refilled the budget for all of them.
	for round := 0; refusal == nil; round++ {
		if round == 5 {
			t.Fatalf("%d frames of 60 KB accepted in %v, none refused", len(sends), time.Since(start))
		}
		batch := make([]wire.Send, 20)
		for i := range batch {
			batch[i] = dm(t, alice, alice.pub(), body)
		}
		sends = append(sends, batch...)
		for _, s := range batch {
			a.write(s)
		}
		for range batch {
			var ack wire.Ack
			a.next(&ack, wire.TypeAck)
			if ack.Error != nil {
				if at := time.Now().Add(time.Duration(ack.Error.RetryAfterMs) * time.Millisecond); at.After(notBefore) {
					notBefore = at
				}
			}
			switch {
			case ack.Error == nil:
				ok++
				acceptedIDs[ack.ID] = true
			case ack.Error.Code != wire.CodeRateLimited:
				t.Fatalf("refused with %+v, want rate_limited", ack.Error)
			case strings.HasPrefix(ack.Error.Message, "held behind"):
				// Within the budget again, but behind a refused one of
				// its line (sendorder.go).
				held++
			default:
				refusal = ack.Error
				refusedIDs[ack.ID] = true
			}
		}
	}
	elapsed := time.Since(start)
	frame := len(wire.MustEncode(sends[0]))
	// 1 MiB of burst and 100 KiB/s of refill for as long as the acks
	// took, however slow the machine.
	if allowed := (1 << 20) + int(elapsed.Seconds()*(100<<10)) + frame; ok*frame > allowed {
		t.Fatalf("%d of %d frames of %d bytes accepted in %v (refused: %+v); want at most %d bytes", ok, len(sends), frame, elapsed, refusal, allowed)
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "read_paused") == 0 {
		t.Fatal("the refused connection's reads were not paced")
	}
	if !strings.Contains(refusal.Message, "--byte-rate") || refusal.RetryAfterMs <= 0 {
		t.Fatalf("refusal %+v: want it to name --byte-rate and carry retryAfterMs", refusal)
	}
	if n := counterValue(t, b, "claudemesh_limits_tripped_total", "byte_rate"); n != float64(len(sends)-ok-held) {
		t.Fatalf("limits_tripped{byte_rate} = %v, want %d", n, len(sends)-ok-held)
	}
	// Another member's budget is its own.
	bc := connect(t, b, bob, false, nil)
	if ack := bc.sendAck(dm(t, bob, alice.pub(), body)); ack.Error != nil {
		t.Fatalf("bob's send: %+v", ack.Error)
	}
	// Honouring retryAfterMs works: a refused send took nothing, a held
	// one's retryAfterMs counts what it took. The first refused one goes
	// again (it held the later ones of its line,
	// sendorder.go).
	// (Acks come in another order than the sends: a refusal before
	// decoding is answered at once.)
	first := slices.IndexFunc(sends, func(s wire.Send) bool { return refusedIDs[s.ID] })
	if first < 0 {
		t.Fatal("no send was refused")
	}
	// All go to one target: none after the refused one is taken.
	for _, s := range sends[first+1:] {
		if acceptedIDs[s.ID] {
			t.Fatalf("send %s was accepted ahead of %s, refused before it", s.ID, sends[first].ID)
		}
	}
	// The client honours the retryAfterMs it was given, as a client does
	// (a held send's says when the budget it spent is back).
	time.Sleep(time.Until(notBefore))
	if ack := a.sendAck(sends[first]); ack.Error != nil {
		t.Fatalf("the refused send, sent again after retryAfterMs: %+v", ack.Error)
	}
}

// TestHeldSendSaysWhenItsBudgetIsBack: a send held behind a refused one
// of its line (sendorder.go) was read within its member's byte budget and
// spent it; its retryAfterMs says when the budget can take the refused
// one again, not the refusal's own, given before it was spent: a client
// that waited that one was refused anew.
func TestHeldSendSaysWhenItsBudgetIsBack(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 100 << 10
	cfg.ByteBurst = 0
	cfg.MaxFrame = 100 << 10 // the burst: one frame of 100 KiB
	b := startWith(t, cfg)
	owner := createMesh(t, b, "team", "owner")
	// ~54 KB taken, ~49 KB left: the 80 KB one is refused for a wait of
	// ~0.3 s; read after it, the next 80 KB one is within the budget,
	// held behind the refused one, and spends the budget. A machine so
	// loaded that the broker took longer than that over the first two
	// refused nothing: a fresh member (a fresh budget) tries again.
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatal("in 5 tries, the second send was never refused")
		}
		_, a, small, refused, held, acks, notBefore := sendRefusedAndHeld(t, b, owner, fmt.Sprintf("m%d", try))
		if e := acks[small.ID]; e != nil {
			t.Fatalf("the first send: %+v", e)
		}
		if acks[refused.ID] == nil {
			a.ws.Close()
			continue
		}
		if e := acks[refused.ID]; !strings.Contains(e.Message, "--byte-rate") {
			t.Fatalf("the second send: %+v, want refused for --byte-rate", e)
		}
		if e := acks[held.ID]; e == nil || !strings.HasPrefix(e.Message, "held behind") {
			t.Fatalf("the third send: %+v, want held behind the second", e)
		}
		time.Sleep(time.Until(notBefore))
		if ack := a.sendAck(refused); ack.Error != nil {
			t.Fatalf("the refused send, sent again after every retryAfterMs: %+v (the held one said %d ms)",
				ack.Error, acks[held.ID].RetryAfterMs)
		}
		return
	}
}

// TestSendOverBudgetRefusedBeforeDecoding: a send frame the member's byte
// budget cannot take is refused before it is parsed (a member streaming
// 64 KiB frames past its budget made the broker decode each one only to
// refuse it): an ill-shaped one gets a rate_limited ack naming its id and
// reqId, not the invalid_argument error only a parse can find; within
// the budget the same frame is parsed and refused for its shape.
func TestSendOverBudgetRefusedBeforeDecoding(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 1 // no refill to speak of: the burst (one --max-frame) is all
	cfg.ByteBurst = 0
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	a := connect(t, b, alice, false, nil)
	pad := strings.Repeat("x", 60000)
	illShaped := func(id string) []byte {
		return []byte(`{"type":"send","id":"` + id + `","reqId":"r-` + id + `","ciphertext":7,"pad":"` + pad + `"}`)
	}
	a.write(illShaped("within"))
	var e wire.Error
	a.next(&e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument || e.ReqID != "r-within" {
		t.Fatalf("an ill-shaped send within the budget: %+v, want invalid_argument", e)
	}
	body := strings.Repeat("y", 60000)
	for i := 0; ; i++ {
		ack := a.sendAck(dm(t, alice, alice.pub(), body))
		if ack.Error != nil {
			if ack.Error.Code != wire.CodeRateLimited {
				t.Fatalf("send %d: %+v", i, ack.Error)
			}
			break
		}
		if i > 100 {
			t.Fatal("100 frames of 60 KB within a 1 MiB budget")
		}
	}
	a.write(illShaped("over"))
	var ack wire.Ack
	a.next(&ack, wire.TypeAck)
	if ack.Error == nil || ack.Error.Code != wire.CodeRateLimited || ack.ID != "over" || ack.ReqID != "r-over" || ack.Error.RetryAfterMs <= 0 {
		t.Fatalf("an ill-shaped send past the budget: %+v %+v, want a rate_limited ack of id over, reqId r-over, before it is parsed", ack, ack.Error)
	}
}

// TestMalformedSendsSpendTheByteBudget: a send frame refused for its
// shape was read and parsed all the same, but spent nothing: 300
// malformed 60 KB sends were all read and answered in 163 ms with
// --byte-rate 100 KiB/s. They now spend the member's budgets like an
// accepted send of their size, and once those are spent the connection
// is read at the byte rate (pacing.go).
func TestMalformedSendsSpendTheByteBudget(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 100 << 10
	cfg.ByteBurst = 0 // one --max-frame, 1 MiB
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	a := connect(t, b, alice, false, nil)
	const n = 30
	body := strings.Repeat("x", 60000)
	var frame int
	start := time.Now()
	// The answers, up to the first rate_limited refusal (they come in
	// the frames' order). The writes may have waited for the paced
	// reads, and a loaded machine answers late: the count is read
	// against the time it took, never within a fixed window (2 s from
	// the first write once ran out before a single answer, at load 20).
	// A machine so slow that the refill kept up with 30 frames (11 s at
	// load 38) refused none: 30 more go until one is.
	parsed, refused := 0, 0
	var last time.Time
	for round := 0; refused == 0; round++ {
		if round == 5 {
			t.Fatalf("%d malformed frames of %d bytes parsed in %v, none refused", parsed, frame, time.Since(start))
		}
		for i := range n {
			id := round*n + i
			bad := map[string]any{"type": wire.TypeSend, "id": fmt.Sprintf("m%d", id), "reqId": fmt.Sprintf("r%d", id),
				"kind": wire.KindBox, "targetSpec": alice.pub(), "ciphertext": body, "nonce": 7}
			frame = len(wire.MustEncode(bad))
			a.write(bad)
		}
		for range n {
			data, err := a.readErr(expectWithin)
			if err != nil {
				t.Fatalf("after %d answers: %v", parsed, err)
			}
			last = time.Now()
			// Parsed and refused for its shape (spending the budget), or
			// refused rate_limited from its size, unparsed.
			switch env, _ := wire.Peek(data); env.Type {
			case wire.TypeError:
				parsed++
			case wire.TypeAck:
				var ack wire.Ack
				wire.Decode(data, &ack)
				if ack.Error == nil || ack.Error.Code != wire.CodeRateLimited {
					t.Fatalf("a malformed send acked: %s", data)
				}
				refused++
			}
			if refused > 0 {
				break
			}
		}
	}
	// The burst and the refill for as long as this took, however slow
	// the machine.
	if allowed := ((1<<20)+int(last.Sub(start).Seconds()*(100<<10)))/frame + 1; parsed > allowed {
		t.Fatalf("%d malformed frames of %d bytes parsed before the first refused rate_limited, in %v; want at most %d parsed", parsed, frame, last.Sub(start), allowed)
	}
	// The reader pauses before it reads the frame after the refusal.
	waitFor(t, "the connection's reads paced", func() bool {
		return counterValue(t, b, "claudemesh_limits_tripped_total", "read_paused") > 0
	})
}

// TestHeldSendIsChargedOnce: a send held behind a refused one of its line
// was charged to its member's byte budget when it was read, and again
// when its client sent it again: a pipelining client past --byte-rate
// paid twice for most of its bytes. Its next read on the connection is
// now paid for already, once: sent again right after the refused one,
// with no budget left for it, it is taken; a third read of it, and any
// other send, is charged as before, so what the member sends stays within
// its budget.
func TestHeldSendIsChargedOnce(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 40 << 10
	cfg.ByteBurst = 0
	cfg.MaxFrame = 100 << 10 // the burst: one frame of 100 KiB
	// Once the set-up is done, the budgets' clock moves only when the
	// test moves it: what they take back between two reads does not
	// depend on how fast a loaded machine runs them (a stall of 2 s gave
	// back a whole send). The set-up runs on the time, as it needs.
	clock := &sendClock{}
	cfg.sendClock = clock.now
	b := startWith(t, cfg)
	owner := createMesh(t, b, "team", "owner")
	// ~54 KB taken, ~49 KB left: the ~80 KB one is refused for a wait
	// of ~0.8 s, after which the next ~80 KB one is read within the
	// budget, held behind the refused one, and spends it (as in
	// TestHeldSendSaysWhenItsBudgetIsBack).
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatal("in 5 tries, the third send was never held")
		}
		m, a, small, refused, held, acks, _ := sendRefusedAndHeld(t, b, owner, fmt.Sprintf("m%d", try))
		if e := acks[held.ID]; acks[small.ID] != nil || acks[refused.ID] == nil || e == nil || !strings.HasPrefix(e.Message, "held behind") {
			a.ws.Close()
			continue
		}
		// Every retryAfterMs passes on the budgets' clock, and nothing
		// more.
		clock.freeze()
		var wait int64
		for _, e := range acks {
			if e != nil {
				wait = max(wait, e.RetryAfterMs)
			}
		}
		clock.advance(time.Duration(wait) * time.Millisecond)
		if ack := a.sendAck(refused); ack.Error != nil {
			t.Fatalf("the refused send, sent again after every retryAfterMs: %+v", ack.Error)
		}
		// The budget is spent (the refused one took what the wait gave
		// back): only the held one's own payment lets it through.
		if ack := a.sendAck(held); ack.Error != nil {
			t.Fatalf("the held send, sent again: %+v (charged a second time)", ack.Error)
		}
		// Its credit was used; stored now, a third read is answered
		// from idempotency and costs no bytes (TestRetryOfStoredMessageCostsNoBytes).
		if ack := a.sendAck(held); ack.Error != nil || !ack.Duplicate {
			t.Fatalf("the held send, a third time: %+v, want its duplicate ack", ack)
		}
		if ack := a.sendAck(dm(t, m, m.pub(), strings.Repeat("n", 60000))); ack.Error == nil || ack.Error.Code != wire.CodeRateLimited {
			t.Fatalf("a new send with the budget spent: %+v, want rate_limited", ack.Error)
		}
		return
	}
}

// A held send's credit is the held message's: another frame under its
// clientMessageId (another body, to another recipient, 256 bytes larger
// or not) took it, and was stored free with the budgets spent. It is
// charged as any send, and the credit stays for the held one.
func TestHeldSendsCreditIsThatMessages(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 40 << 10
	cfg.ByteBurst = 0
	cfg.MaxFrame = 100 << 10
	clock := &sendClock{}
	cfg.sendClock = clock.now
	b := startWith(t, cfg)
	owner := createMesh(t, b, "team", "owner")
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatal("in 5 tries, the third send was never held")
		}
		m, a, small, refused, held, acks, _ := sendRefusedAndHeld(t, b, owner, fmt.Sprintf("m%d", try))
		if e := acks[held.ID]; acks[small.ID] != nil || acks[refused.ID] == nil || e == nil || !strings.HasPrefix(e.Message, "held behind") {
			a.ws.Close()
			continue
		}
		clock.freeze()
		var wait int64
		for _, e := range acks {
			if e != nil {
				wait = max(wait, e.RetryAfterMs)
			}
		}
		clock.advance(time.Duration(wait) * time.Millisecond)
		if ack := a.sendAck(refused); ack.Error != nil {
			t.Fatalf("the refused send, sent again after every retryAfterMs: %+v", ack.Error)
		}
		cmid := held.ClientMessageID
		if cmid == "" {
			cmid = held.ID
		}
		for _, body := range []string{strings.Repeat("Z", 60150), strings.Repeat("Y", 59000)} {
			other := dm(t, m, owner.pub(), body)
			other.ClientMessageID = cmid
			if ack := a.sendAck(other); ack.Error == nil || ack.Error.Code != wire.CodeRateLimited {
				t.Fatalf("another message under the held one's clientMessageId (%d bytes, to another recipient), with the budget spent: %+v, want rate_limited", len(body), ack.Error)
			}
		}
		if ack := a.sendAck(held); ack.Error != nil {
			t.Fatalf("the held send, sent again after another message tried its credit: %+v", ack.Error)
		}
		return
	}
}

// A send's fingerprint (a hash of its whole ciphertext, up to 87 KB) is
// computed once, on its connection's goroutine. A send refused at its
// commit (a retry let through without its bytes whose stored message was
// purged meanwhile, refused rate_limited; a send held behind a refusal)
// was hashed again for its credit on the store's dispatcher, which every
// mesh's commits wait for, before the check that it had paid at all.
func TestSendRefusedAtCommitIsNotHashedThere(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 1 << 10
	cfg.ByteBurst = 0
	cfg.MaxFrame = 100 << 10 // the burst: one frame of 100 KiB
	clock := &sendClock{}
	cfg.sendClock = clock.now
	b := startWith(t, cfg)
	owner := createMesh(t, b, "team", "owner")
	m := addMember(t, b, owner, "team", "hashed")
	a := connect(t, b, m, false, nil)
	clock.freeze()
	first := dm(t, m, owner.pub(), strings.Repeat("f", 60000)) // ~80 KB of ~100
	first.ClientMessageID = first.ID
	stored := a.sendAck(first)
	if stored.Error != nil {
		t.Fatalf("the first send: %+v", stored.Error)
	}
	var mu sync.Mutex
	hashed := 0
	count := func(s *wire.Send) {
		if s.ClientMessageID == first.ClientMessageID {
			mu.Lock()
			hashed++
			mu.Unlock()
		}
	}
	fingerprinted.Store(&count)
	t.Cleanup(func() { fingerprinted.Store(nil) })
	// The committer waits on a write of the test's until the retry is
	// read and submitted; that write then purges the message (owner got
	// it), as the retention sweep does.
	release, blocked, purged := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	err := b.store.Submit(func(tx *store.Tx) error {
		close(blocked)
		<-release
		now := time.Now().UnixMilli()
		if _, err := store.Ack(tx, owner.meshID, owner.pub(), []string{stored.MessageID}, now); err != nil {
			return err
		}
		_, _, err := store.PurgeBefore(tx, owner.meshID, now+1, 1000)
		return err
	}, func(err error) { purged <- err })
	if err != nil {
		t.Fatal(err)
	}
	<-blocked
	retry := first
	retry.ID = first.ID + "-again"
	a.write(retry)
	// Frames are handled in order: the answer to the next one means the
	// retry was read, let through free (no room for its bytes, its
	// message stored) and submitted.
	a.write(map[string]any{"type": wire.TypeListPeers, "reqId": "peers"})
	var ack *wire.Ack
	for peers, released := false, false; !peers || ack == nil; {
		if peers && !released {
			released = true
			close(release)
			if err := <-purged; err != nil {
				t.Fatal(err)
			}
		}
		data := a.read()
		env, _ := wire.Peek(data)
		switch env.Type {
		case wire.TypePeers:
			peers = true
		case wire.TypeAck:
			var x wire.Ack
			if err := wire.Decode(data, &x); err != nil {
				t.Fatal(err)
			}
			if x.ID == retry.ID {
				if !peers {
					t.Fatalf("the retry was answered before its commit: %+v %+v", x, x.Error)
				}
				ack = &x
			}
		}
	}
	if ack.Error == nil || ack.Error.Code != wire.CodeRateLimited {
		t.Fatalf("the free retry whose message was purged before its commit: %+v %+v, want rate_limited", ack, ack.Error)
	}
	mu.Lock()
	defer mu.Unlock()
	if hashed != 1 {
		t.Fatalf("the retry was fingerprinted %d times, want once (when it was read)", hashed)
	}
}

// BenchmarkFingerprint87KB: what a send of the largest ciphertext costs
// its connection's goroutine once (handleSend), and what a refusal at its
// commit cost the dispatcher again before it was carried on its place.
func BenchmarkFingerprint87KB(b *testing.B) {
	s := &wire.Send{TargetSpec: strings.Repeat("a", 64), Kind: wire.KindBox, Nonce: strings.Repeat("n", 32), Ciphertext: strings.Repeat("c", 87<<10)}
	b.SetBytes(int64(len(s.Ciphertext)))
	for b.Loop() {
		fingerprint(s)
	}
}

// sendClock is a clock of the members' send budgets (Config.sendClock):
// the time until frozen, then moving only when advanced.
type sendClock struct {
	mu     sync.Mutex
	frozen bool
	t      time.Time
}

func (c *sendClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen {
		c.t = time.Now()
	}
	return c.t
}

// freeze stops the clock where it is (a time it gave already, or later).
func (c *sendClock) freeze() {
	c.mu.Lock()
	if !c.frozen {
		c.frozen, c.t = true, time.Now()
	}
	c.mu.Unlock()
}

func (c *sendClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sendRefusedAndHeld writes, as a new member name on a fresh connection,
// a 40 KB DM and then two of 60 KB (over a tight --byte-rate the second
// is refused and the third held behind it), and reads their acks: it
// returns the three sends, their errors by id, and the time by which
// every retryAfterMs has passed.
func sendRefusedAndHeld(t *testing.T, b *Broker, owner ident, name string) (m ident, a *rawConn, small, refused, held wire.Send, acks map[string]*wire.AckError, notBefore time.Time) {
	t.Helper()
	m = addMember(t, b, owner, "team", name)
	a = connect(t, b, m, false, nil)
	small = dm(t, m, m.pub(), strings.Repeat("s", 40000))
	refused = dm(t, m, m.pub(), strings.Repeat("r", 60000))
	held = dm(t, m, m.pub(), strings.Repeat("h", 60000))
	for _, s := range []wire.Send{small, refused, held} {
		a.write(s)
	}
	acks = map[string]*wire.AckError{}
	for range 3 {
		var ack wire.Ack
		a.next(&ack, wire.TypeAck)
		acks[ack.ID] = ack.Error
		if ack.Error != nil {
			if at := time.Now().Add(time.Duration(ack.Error.RetryAfterMs) * time.Millisecond); at.After(notBefore) {
				notBefore = at
			}
		}
	}
	return
}

// A retry of a message the broker stored already (its ack was lost: the
// daemon sends its in-flight rows again on a new connection) stores
// nothing: the broker answers it from its idempotency records, and it
// costs no bytes of --byte-rate, whether the budget has room for it (it
// is charged, then given back) or not (it is let through without its
// bytes, instead of rate_limited). It was charged each time, so a few
// retries spent the budget that the member's new messages needed. New
// bytes stay within the budget: past what is left, a new send is refused.
// The byte rate is 1 KiB/s, so what comes back during the test is small.
func TestRetryOfStoredMessageCostsNoBytes(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 1 << 10
	cfg.ByteBurst = 0
	cfg.MaxFrame = 100 << 10 // the burst: one frame of 100 KiB
	b := startWith(t, cfg)
	owner := createMesh(t, b, "team", "owner")
	send := func(a *rawConn, s wire.Send) wire.Ack {
		t.Helper()
		ack := a.sendAck(s)
		return ack
	}
	again := func(s wire.Send, i int) wire.Send {
		s.ID = fmt.Sprintf("%s-again-%d", s.ClientMessageID, i) // a new request, the same message
		return s
	}
	for _, c := range []struct {
		name          string
		first, fresh  int // plaintext bytes of the first send and of the new one after the retries
		overAfterward int // a new send the budget then has no room for
		retries       int // what the retry allowance (as large as the budget) takes
	}{
		// ~53 KB of 100: the retry is over what is left (refused
		// before it was read, until now).
		{"over", 40000, 20000, 40000, 1},
		// ~13 KB: each retry fits, and was charged (four took ~54 KB).
		{"within", 10000, 50000, 30000, 4},
	} {
		m := addMember(t, b, owner, "team", c.name)
		a := connect(t, b, m, false, nil)
		first := dm(t, m, m.pub(), strings.Repeat("f", c.first))
		first.ClientMessageID = first.ID
		ack := send(a, first)
		if ack.Error != nil || ack.Duplicate {
			t.Fatalf("%s: the first send: %+v", c.name, ack)
		}
		for i := range c.retries {
			if dup := send(a, again(first, i)); dup.Error != nil || !dup.Duplicate || dup.MessageID != ack.MessageID {
				t.Fatalf("%s: retry %d of the stored message: %+v, want its duplicate ack", c.name, i, dup)
			}
		}
		if ack := send(a, dm(t, m, m.pub(), strings.Repeat("n", c.fresh))); ack.Error != nil {
			t.Fatalf("%s: a new send after the retries: %+v (the retries were charged)", c.name, ack.Error)
		}
		if ack := send(a, dm(t, m, m.pub(), strings.Repeat("o", c.overAfterward))); ack.Error == nil || ack.Error.Code != wire.CodeRateLimited {
			t.Fatalf("%s: a new send past what is left: %+v, want rate_limited", c.name, ack)
		}
		a.ws.Close()
		if c.name == "over" {
			// Retries have an allowance of their own, as large as the
			// budget: past it they wait like any send. (On a new
			// connection: the refusal above holds this one's line.)
			a := connect(t, b, m, false, nil)
			if dup := send(a, again(first, 99)); dup.Error == nil || dup.Error.Code != wire.CodeRateLimited {
				t.Fatalf("a retry past the retry allowance: %+v, want rate_limited", dup)
			}
			a.ws.Close()
		}
	}
}

// Topic posts keep to the same rule on both ways they come in, a `send`
// frame and a REST post by an API key: a retry of a stored post (the
// same clientMessageId, or Idempotency-Key) is answered as a duplicate
// and costs no bytes, whether the budget has room for it or not, and new
// posts stay within the budget. The REST path charged every retry, and
// refused it 429 once the budget had no room (it had none of the send
// frame's rules). Steps: a post of ~20 KB, two retries of it (within the
// budget: charged, then given back), a new post of ~54 KB (it fits only
// if the retries cost nothing), a retry of that one (over what is left:
// read against the retry allowance), a new post that fits what is left,
// and one that does not.
func TestTopicPostRetriesCostNoBytes(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ByteRate = 1 << 10 // 1 KiB/s: what comes back during the test is small
	cfg.ByteBurst = 0
	cfg.MaxFrame = 100 << 10 // the burst
	b := startWith(t, cfg)

	type answer struct {
		stored, duplicate, limited bool
		id                         string
	}
	run := func(path string, post func(text, cmid string) answer) {
		t.Helper()
		n := 0
		fresh := func(size int) (string, string) {
			n++
			return strings.Repeat(string(rune('a'+n)), size), fmt.Sprintf("%s-%d", path, n)
		}
		small, smallID := fresh(15000)
		first := post(small, smallID)
		if !first.stored {
			t.Fatalf("%s: the first post: %+v", path, first)
		}
		for range 2 {
			if a := post(small, smallID); !a.duplicate || a.id != first.id {
				t.Fatalf("%s: a retry of the stored post, within the budget: %+v, want its duplicate", path, a)
			}
		}
		large, largeID := fresh(40000)
		if a := post(large, largeID); !a.stored {
			t.Fatalf("%s: a new post after the retries: %+v (the retries were charged)", path, a)
		}
		if a := post(large, largeID); !a.duplicate {
			t.Fatalf("%s: a retry of the stored post, past what is left: %+v, want its duplicate", path, a)
		}
		if text, id := fresh(15000); !post(text, id).stored {
			t.Fatalf("%s: a new post within what is left was refused", path)
		}
		if text, id := fresh(15000); !post(text, id).limited {
			t.Fatalf("%s: a new post past what is left was not refused", path)
		}
	}

	alice := topicMesh(t, b, "acme", "alice")[0]
	bots := alice.create("bots", client.TopicCreateOptions{Plaintext: true})
	raw := connect(t, b, alice.id, false, nil)
	sealed := map[string]*wire.Send{} // a retry is the same frame, sent again
	run("send", func(text, cmid string) answer {
		s := sealed[cmid]
		if s == nil {
			var err error
			if s, err = client.SealTopicPost(alice.id.meshID, bots.ID, 0, nil, []byte(text), alice.id.key, client.SendOptions{ClientMessageID: cmid}); err != nil {
				t.Fatal(err)
			}
			sealed[cmid] = s
		}
		s.Type, s.ID, s.ClientMessageID = wire.TypeSend, ulid.Make().String(), cmid
		ack := raw.sendAck(*s)
		return answer{stored: ack.Error == nil && !ack.Duplicate, duplicate: ack.Error == nil && ack.Duplicate,
			limited: ack.Error != nil && ack.Error.Code == wire.CodeRateLimited, id: ack.MessageID}
	})

	carol := topicMesh(t, b, "beta", "carol")[0]
	carol.create("bots", client.TopicCreateOptions{Plaintext: true})
	key := apiKey(t, carol, "bot", []string{"read", "send"})
	run("rest", func(text, cmid string) answer {
		st, out := rest(t, b, "POST", "/v1/topics/bots/messages", key.Secret, map[string]string{"text": text, "clientMessageId": cmid})
		id, _ := out["messageId"].(string)
		dup, _ := out["duplicate"].(bool)
		return answer{stored: st == 201, duplicate: st == 200 && dup, limited: st == 429, id: id}
	})
}
