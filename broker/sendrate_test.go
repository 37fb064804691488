package broker

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

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
// read at the byte rate, never faster.
func TestByteRateHoldsOneMembersLargeSends(t *testing.T) {
	t.Parallel()
	if def := DefaultConfig(); def.ByteRate <= 0 || def.ByteBurst < def.MaxFrame {
		t.Fatalf("default --byte-rate %d, --byte-burst %d: want a limit on by default", def.ByteRate, def.ByteBurst)
	}
	cfg := testConfig(t)
	cfg.ByteRate = 100 << 10 // 100 KiB/s: the burst (one --max-frame, 1 MiB) matters, not the refill
	cfg.ByteBurst = 0
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	body := strings.Repeat("x", 60000)
	var sends []wire.Send
	for range 20 {
		sends = append(sends, dm(t, alice, alice.pub(), body))
	}
	a := connect(t, b, alice, false, nil)
	start := time.Now()
	for _, s := range sends {
		a.write(s)
	}
	ok, held := 0, 0
	var refusal *wire.AckError
	refusedIDs := map[string]bool{}
	for range sends {
		var ack wire.Ack
		a.next(&ack, wire.TypeAck)
		switch {
		case ack.Error == nil:
			ok++
		case ack.Error.Code != wire.CodeRateLimited:
			t.Fatalf("refused with %+v, want rate_limited", ack.Error)
		case strings.HasPrefix(ack.Error.Message, "held behind"):
			// Within the budget again, but behind a refused one of its
			// line (sendorder.go).
			held++
		default:
			refusal = ack.Error
			refusedIDs[ack.ID] = true
		}
	}
	elapsed := time.Since(start)
	frame := len(wire.MustEncode(sends[0]))
	// 1 MiB of burst and 100 KiB/s of refill for as long as the acks
	// took, however slow the machine: the 20 frames (1.6 MB) all come
	// in at once.
	if allowed := (1 << 20) + int(elapsed.Seconds()*(100<<10)) + frame; refusal == nil || ok*frame > allowed {
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
	// Honouring retryAfterMs works: refused sends took nothing. The
	// first refused one goes again (it held the later ones of its line,
	// sendorder.go).
	// (Acks come in another order than the sends: a refusal before
	// decoding is answered at once.)
	first := slices.IndexFunc(sends, func(s wire.Send) bool { return refusedIDs[s.ID] })
	if first < 0 {
		t.Fatal("no send was refused")
	}
	next := sends[first]
	// A deadline, not a count of attempts: under CI's load a resend that
	// waited its retryAfterMs was refused again, three times in a row,
	// the last with a retryAfterMs of 1 ms; why is not known yet (issue
	// 13's note of the seventeenth session).
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 0; ; attempt++ {
		ack := a.sendAck(next)
		if ack.Error == nil {
			break
		}
		if ack.Error.Code != wire.CodeRateLimited || time.Now().After(deadline) {
			t.Fatalf("after waiting retryAfterMs %d times: %+v", attempt+1, ack.Error)
		}
		time.Sleep(time.Duration(ack.Error.RetryAfterMs) * time.Millisecond)
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
	for i := range n {
		bad := map[string]any{"type": wire.TypeSend, "id": fmt.Sprintf("m%d", i), "reqId": fmt.Sprintf("r%d", i),
			"kind": wire.KindBox, "targetSpec": alice.pub(), "ciphertext": body, "nonce": 7}
		frame = len(wire.MustEncode(bad))
		a.write(bad)
	}
	// The answers, up to the first rate_limited refusal (they come in
	// the frames' order). The writes above may have waited for the
	// paced reads, and a loaded machine answers late: the count is read
	// against the time it took, never within a fixed window (2 s from
	// the first write once ran out before a single answer, at load 20).
	parsed, refused := 0, 0
	var last time.Time
	for refused == 0 && parsed < n {
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
	}
	// The burst and the refill for as long as this took, however slow
	// the machine.
	if allowed := ((1<<20)+int(last.Sub(start).Seconds()*(100<<10)))/frame + 1; refused == 0 || parsed > allowed {
		t.Fatalf("%d malformed frames of %d bytes parsed before the first refused rate_limited, in %v; want at most %d parsed", parsed, frame, last.Sub(start), allowed)
	}
	// The reader pauses before it reads the frame after the refusal.
	waitFor(t, "the connection's reads paced", func() bool {
		return counterValue(t, b, "claudemesh_limits_tripped_total", "read_paused") > 0
	})
}

// TestDefaultByteBudget: at the defaults a member streaming 64 KiB DMs
// gets 1 MiB at once (one frame of the largest size, eleven such DMs)
// and 256 KiB a second after it. Everything a member sends is written and
// fsynced by the committer every mesh shares: at 1 MiB/s with 2 MiB at
// once, one member's self-DMs made the commits that other members' DMs
// waited on ~40 % longer, and the honest peers' send→push p99 ×1.25–1.4
// of a run without her (bench --adversary, attack "self";
// BENCHMARKS.md, eighteenth session).
func TestDefaultByteBudget(t *testing.T) {
	t.Parallel()
	def := DefaultConfig()
	if def.ByteRate != 256<<10 || max(def.ByteBurst, def.MaxFrame) != 1<<20 {
		t.Fatalf("default --byte-rate %d, --byte-burst %d (--max-frame %d): want 256 KiB/s and 1 MiB at once", def.ByteRate, def.ByteBurst, def.MaxFrame)
	}
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	body := strings.Repeat("x", 60000)
	var sends []wire.Send
	for range 24 {
		sends = append(sends, dm(t, alice, alice.pub(), body))
	}
	a := connect(t, b, alice, false, nil)
	start := time.Now()
	for _, s := range sends {
		a.write(s)
	}
	ok := 0
	for range sends {
		var ack wire.Ack
		a.next(&ack, wire.TypeAck)
		if ack.Error == nil {
			ok++
		} else if ack.Error.Code != wire.CodeRateLimited {
			t.Fatalf("refused with %+v, want rate_limited", ack.Error)
		}
	}
	elapsed := time.Since(start)
	frame := len(wire.MustEncode(sends[0]))
	if allowed := (1 << 20) + int(elapsed.Seconds()*(256<<10)) + frame; ok*frame > allowed {
		t.Fatalf("%d of %d frames of %d bytes accepted in %v; want at most %d bytes", ok, len(sends), frame, elapsed, allowed)
	}
}
