package daemon

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// TestFailuresThatCountAsAttempts: a cluster without quorum (unavailable)
// and a dropped connection never count toward the attempts that make a
// row dead, however long they last; a refusal on an open connection does.
func TestFailuresThatCountAsAttempts(t *testing.T) {
	for _, c := range []struct {
		code            string
		cancelled       bool
		counted, outage bool
	}{
		{wire.CodeUnavailable, false, false, true},
		{"connection_closed", false, false, false},
		{"unreachable", false, false, false},
		{"canceled", false, false, false},
		{wire.CodeRateLimited, true, false, false},
		{wire.CodeRateLimited, false, true, false},
		{"timeout", false, true, false},
	} {
		counted, outage := classifyFailure(c.code, c.cancelled)
		if counted != c.counted || outage != c.outage {
			t.Errorf("%s (cancelled %v): counted %v outage %v, want %v %v", c.code, c.cancelled, counted, outage, c.counted, c.outage)
		}
	}
}

// TestDuplicateAckAfterReceipts: after a lost ack (the broker restarted,
// or the node died) the resend is answered as a duplicate whose pending
// counts only recipients still waiting; a receipt that came before it
// (matched by clientMessageId) means the row is delivered, not stuck
// queued. A fresh ack and a multi message still wait for every receipt.
func TestDuplicateAckAfterReceipts(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, c := range []struct {
		name              string
		receipts, pending int
		online            int
		dup               bool
		want              string
	}{
		{"dup, its receipt came first", 1, 0, 0, true, stateDelivered},
		{"dup, delivered, receipt not yet here", 0, 0, 0, true, stateQueued},
		{"dup multi, one of two still waiting", 1, 1, 0, true, stateQueued},
		{"dup multi, both receipts came", 2, 0, 0, true, stateDelivered},
		{"fresh, online", 0, 1, 1, false, stateSent},
		{"fresh, receipt raced the ack", 1, 1, 1, false, stateDelivered},
		{"fresh multi, one receipt of two", 1, 2, 2, false, stateSent},
	} {
		cur := &outboxRow{State: stateInflight, Receipts: c.receipts}
		applyAck(cur, &wire.Ack{MessageID: "M", Pending: n(c.pending), Online: n(c.online), Duplicate: c.dup}, nil, 1)
		if cur.State != c.want || cur.BrokerMessageID != "M" || !cur.Acked {
			t.Errorf("%s: state %s, want %s (%+v)", c.name, cur.State, c.want, cur)
		}
	}
}

// TestDuplicateAckCountsFromMessageStatus: after a lost ack, the resend's
// duplicate counts only the recipients still waiting, and the receipts of
// those who got it may not have come yet. With the broker's message_status
// the row counts every recipient and who has it: a message all had is
// delivered (it read "nobody could be reached"), and one a recipient still
// waits for is not delivered when the first late receipt comes (it read
// delivered, so send --wait exited 0).
func TestDuplicateAckCountsFromMessageStatus(t *testing.T) {
	n := func(v int) *int { return &v }
	status := func(states ...string) *wire.MessageStatus {
		st := &wire.MessageStatus{MessageID: "M"}
		for i, s := range states {
			st.Recipients = append(st.Recipients, wire.RecipientState{Pubkey: fmt.Sprintf("k%d", i), State: s})
		}
		return st
	}
	// Everyone had it; no receipt came yet.
	cur := &outboxRow{State: stateInflight, Kind: wire.KindMulti, TargetSpec: "*"}
	applyAck(cur, &wire.Ack{MessageID: "M", Pending: n(0), Online: n(0), Duplicate: true}, status(wire.StateDelivered, wire.StateDelivered), 1)
	if cur.State != stateDelivered || cur.Pending != 2 || cur.Receipts != 2 {
		t.Errorf("all delivered before the lost ack: %+v", cur)
	}
	// k0 has it, k1 waits: not delivered, not even once k0's late
	// receipt is counted (recordReceipts skips a recipient in
	// DeliveredTo).
	cur = &outboxRow{State: stateInflight, Kind: wire.KindMulti, TargetSpec: "*"}
	applyAck(cur, &wire.Ack{MessageID: "M", Pending: n(1), Online: n(0), Duplicate: true}, status(wire.StateDelivered, wire.StatePending), 1)
	if cur.State == stateDelivered || cur.Pending != 2 || cur.Receipts != 1 || !slices.Equal(cur.DeliveredTo, []string{"k0"}) {
		t.Errorf("one of two delivered before the lost ack: %+v", cur)
	}
}

// TestDuplicateAckWithExpiredRecipientsSettles: a recipient that
// message_status lists as expired (its queue timed out, its member removed,
// its session forgotten) never has the message and sends no receipt. It
// is counted among the recipients (as a fresh ack counts every one) and as
// expired, and a row whose every recipient has it or expired ends failed
// with delivery_expired, saying how many have it: a row whose every
// recipient expired stayed queued for ever ("nobody could be reached"),
// and one with a delivered recipient was delivered to "1 recipient".
func TestDuplicateAckWithExpiredRecipientsSettles(t *testing.T) {
	n := func(v int) *int { return &v }
	status := func(states ...string) *wire.MessageStatus {
		st := &wire.MessageStatus{MessageID: "M"}
		for i, s := range states {
			st.Recipients = append(st.Recipients, wire.RecipientState{Pubkey: fmt.Sprintf("k%d", i), State: s})
		}
		return st
	}
	for _, c := range []struct {
		name                       string
		states                     []string
		pending, receipts, expired int
		state                      string
	}{
		{"one has it, one expired", []string{wire.StateDelivered, wire.StateExpired}, 2, 1, 1, stateDead},
		{"every one expired", []string{wire.StateExpired, wire.StateExpired}, 2, 0, 2, stateDead},
		{"one waits, one expired", []string{wire.StatePending, wire.StateExpired}, 2, 0, 1, stateQueued},
		{"every one has it", []string{wire.StateDelivered, wire.StateDelivered}, 2, 2, 0, stateDelivered},
	} {
		cur := &outboxRow{State: stateInflight, Kind: wire.KindMulti, TargetSpec: "*"}
		waiting := 0
		for _, s := range c.states {
			if s == wire.StatePending {
				waiting++
			}
		}
		applyAck(cur, &wire.Ack{MessageID: "M", Pending: n(waiting), Online: n(0), Duplicate: true}, status(c.states...), 1)
		if cur.State != c.state || cur.Pending != c.pending || cur.Receipts != c.receipts || cur.Expired != c.expired {
			t.Errorf("%s: state %s pending %d receipts %d expired %d, want %s %d %d %d", c.name,
				cur.State, cur.Pending, cur.Receipts, cur.Expired, c.state, c.pending, c.receipts, c.expired)
			continue
		}
		row := cur.api()
		if row.Recipients == nil || *row.Recipients != c.pending || row.Expired != c.expired {
			t.Errorf("%s: the API row says recipients %v expired %d", c.name, row.Recipients, row.Expired)
		}
		if c.state == stateDead && (row.Status != localapi.StatusFailed || row.ErrorCode != localapi.CodeDeliveryExpired ||
			!strings.Contains(row.Error, fmt.Sprintf("%d of %d recipients expired", c.expired, c.pending))) {
			t.Errorf("%s: %+v, want failed with delivery_expired and the counts", c.name, row)
		}
	}
	// The recipient still waiting gets it: the row ends then, failed for
	// the one that expired, not delivered (recordReceipts settles so).
	cur := &outboxRow{State: stateInflight, Kind: wire.KindMulti, TargetSpec: "*"}
	applyAck(cur, &wire.Ack{MessageID: "M", Pending: n(1), Online: n(0), Duplicate: true}, status(wire.StatePending, wire.StateExpired), 1)
	cur.DeliveredTo = append(cur.DeliveredTo, "k0")
	cur.Receipts = len(cur.DeliveredTo)
	settle(cur, 2)
	if cur.State != stateDead || cur.ErrorCode != localapi.CodeDeliveryExpired || !strings.Contains(cur.LastError, "it reached 1") {
		t.Errorf("the last receipt after an expiry: %+v", cur)
	}
}
