package daemon

import (
	"reflect"
	"testing"

	json "github.com/go-json-experiment/json"

	"claudemesh/wire"
)

func fullOutboxRow() *outboxRow {
	gen := 3
	return &outboxRow{
		Seq: 1 << 40, ClientMessageID: "c-1", Fingerprint: "f", Mesh: "team", MeshID: "01MESH", To: "bob",
		DisplayName: "Bob", TargetSpec: "*", Kind: wire.KindMulti, Nonce: "bm9uY2U=", Ciphertext: "Y2lwaGVy",
		Keys:   []wire.MultiKey{{To: "aa", Nonce: "n1", Box: "b1"}, {To: "bb", Nonce: "n2", Box: "b2"}},
		KeyGen: &gen, Signature: "sig", Priority: wire.PriorityNow, ReplyToID: "r-1", Mentions: []string{"bob", "carol"},
		SenderPubkey: "pk", SessionToken: "tok", Preview: "héllo", State: stateDelivered, Attempts: 7,
		NextAttemptAt: 1764100000123, LastError: "rate_limited", BrokerMessageID: "01MSG", Pending: 2, Receipts: 2,
		DeliveredTo: []string{"aa", "bb"}, Acked: true, SentAt: 1764100000200, DeliveredAt: 1764100000300,
		EnqueuedAt: -5, OnlineNow: 1, ErrorCode: "blocked_by_recipient", Expired: 4, SendID: "01SENDID",
	}
}

// TestOutboxRecordRoundTrip: every field survives the binary layout, and
// rows written as JSON by earlier versions read the same.
func TestOutboxRecordRoundTrip(t *testing.T) {
	for _, want := range []*outboxRow{fullOutboxRow(), {State: statePending}, {State: stateSent, OnlineNow: 3}, {State: stateDead, ErrorCode: "forbidden"}, {State: stateDead, Expired: 2}, {State: statePending, SendID: "01SEND"}} {
		v, err := encodeOutbox(want)
		if err != nil {
			t.Fatal(err)
		}
		var got outboxRow
		if err := decodeOutbox(v, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, *want)
		}
		if st, err := outboxRowState(v); err != nil || st != want.State {
			t.Errorf("state peek = %q, %v", st, err)
		}
		legacy, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var old outboxRow
		if err := decodeOutbox(legacy, &old); err != nil || !reflect.DeepEqual(&old, want) {
			t.Errorf("legacy JSON row: %+v, %v", old, err)
		}
		if st, err := outboxRowState(legacy); err != nil || st != want.State {
			t.Errorf("legacy state peek = %q, %v", st, err)
		}
	}
	if _, err := encodeOutbox(&outboxRow{State: "bogus"}); err == nil {
		t.Error("a row with an unknown state was encoded")
	}
}

// TestOutboxRecordCorrupt: a damaged row is an error, never a panic or a
// silently different row.
func TestOutboxRecordCorrupt(t *testing.T) {
	v, err := encodeOutbox(fullOutboxRow())
	if err != nil {
		t.Fatal(err)
	}
	var r outboxRow
	for n := 0; n < len(v); n++ {
		if err := decodeOutbox(v[:n], &r); err == nil {
			t.Errorf("truncated to %d of %d bytes decoded without error", n, len(v))
		}
	}
	if err := decodeOutbox(append(append([]byte(nil), v...), 0), &r); err == nil {
		t.Error("a trailing byte decoded without error")
	}
	bad := append([]byte(nil), v...)
	bad[1] = 200 // the state
	if err := decodeOutbox(bad, &r); err == nil {
		t.Error("an unknown state decoded without error")
	}
	if _, err := outboxRowState(bad); err == nil {
		t.Error("the state peek accepted an unknown state")
	}
}
