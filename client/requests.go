package client

import (
	"context"
	"errors"
	"reflect"
	"time"

	"claudemesh/wire"

	"github.com/oklog/ulid/v2"
)

// MaxAckBatch is the most message ids one client_ack may carry
// (01-protocol §2); ClientAck and ClientAckAsync split longer lists.
const MaxAckBatch = 500

// Request sends a request frame and waits for the frame that answers it.
// frame is a wire struct with a ReqID field (wire.Request,
// wire.ProfileUpdate, ...); an empty ReqID is filled with a fresh one —
// through the pointer when frame is a pointer, so the caller can see it.
// The answer is returned raw with its envelope so callers can decode any
// response type, including ones this package has no helper for; an `error`
// frame becomes a *Error (raw and env are still returned).
func (c *Conn) Request(ctx context.Context, frame any) ([]byte, wire.Envelope, error) {
	frame, reqID, err := c.withReqID(frame)
	if err != nil {
		return nil, wire.Envelope{}, err
	}
	data, err := wire.Encode(frame)
	if err != nil {
		return nil, wire.Envelope{}, wrapError(wire.CodeInvalidArgument, err, "encoding request")
	}
	ch := make(chan response, 1)
	c.mu.Lock()
	switch {
	case c.dead:
		c.mu.Unlock()
		return nil, wire.Envelope{}, c.closedError()
	case c.requests[reqID] != nil:
		c.mu.Unlock()
		return nil, wire.Envelope{}, newError(wire.CodeInvalidArgument, "reqId %q is already in flight", reqID)
	}
	c.requests[reqID] = ch
	c.mu.Unlock()

	if err := c.enqueue(ctx, data); err != nil {
		c.forgetRequest(reqID, ch)
		return nil, wire.Envelope{}, err
	}
	sent := time.Now()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, wire.Envelope{}, r.err
		}
		if r.env.Type == wire.TypeError {
			var ef errorFrame
			if err := wire.Decode(r.raw, &ef); err != nil {
				return r.raw, r.env, wrapError(CodeProtocol, err, "error frame")
			}
			return r.raw, r.env, ef.toError()
		}
		return r.raw, r.env, nil
	case <-ctx.Done():
		c.forgetRequest(reqID, ch)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Since(sent) >= blameAfter {
			// The connection is up and the broker is silent: hung,
			// stopped (SIGSTOP) or overloaded. "context deadline
			// exceeded" said none of it. Only when this request waited
			// long: a caller's deadline over many requests may run out
			// while a prompt broker answers the last one.
			return nil, wire.Envelope{}, &Error{Code: CodeTimeout, cause: ctx.Err(),
				Message: "the broker at " + c.id.BrokerURL + " is connected but did not answer in time: it is hung or overloaded",
				Hint:    "ask the broker's operator to check it (its log, GET /health/ready), then try again"}
		}
		return nil, wire.Envelope{}, ctxError(ctx, "waiting for the broker's answer")
	}
}

// blameAfter is how long a request must have waited for its answer
// before a deadline is the broker's silence rather than the caller's own
// budget running out.
const blameAfter = 2 * time.Second

func (c *Conn) forgetRequest(reqID string, ch chan response) {
	c.mu.Lock()
	if c.requests[reqID] == ch {
		delete(c.requests, reqID)
	}
	c.mu.Unlock()
}

// withReqID finds the ReqID and Type fields by reflection, so Request works
// with every wire request type (and future ones) without a registry.
func (c *Conn) withReqID(frame any) (any, string, error) {
	v := reflect.ValueOf(frame)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil, "", newError(wire.CodeInvalidArgument, "nil request frame")
		}
		v = v.Elem()
	} else if v.IsValid() {
		cp := reflect.New(v.Type())
		cp.Elem().Set(v)
		frame, v = cp.Interface(), cp.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil, "", newError(wire.CodeInvalidArgument, "request frame must be a wire struct, not %T", frame)
	}
	typ, rid := v.FieldByName("Type"), v.FieldByName("ReqID")
	if !typ.IsValid() || typ.Kind() != reflect.String || typ.String() == "" {
		return nil, "", newError(wire.CodeInvalidArgument, "request frame %T has no type", frame)
	}
	if !rid.IsValid() || rid.Kind() != reflect.String || !rid.CanSet() {
		return nil, "", newError(wire.CodeInvalidArgument, "request frame %T has no ReqID field", frame)
	}
	if rid.String() == "" {
		rid.SetString(c.nextReqID())
	} else if !wire.ValidReqID(rid.String()) {
		return nil, "", newError(wire.CodeInvalidArgument, "invalid reqId %q", rid.String())
	}
	return frame, rid.String(), nil
}

// roundTrip is Request plus a check of the answer's type and its decoding.
func roundTrip[T any](ctx context.Context, c *Conn, frame any, want string) (*T, error) {
	raw, env, err := c.Request(ctx, frame)
	if err != nil {
		return nil, err
	}
	if env.Type != want {
		return nil, newError(CodeProtocol, "expected %q in answer, got %q", want, env.Type)
	}
	v := new(T)
	if err := wire.Decode(raw, v); err != nil {
		return nil, wrapError(CodeProtocol, err, "%s", want)
	}
	return v, nil
}

func (c *Conn) expectOK(ctx context.Context, frame any) error {
	_, err := roundTrip[wire.OK](ctx, c, frame, wire.TypeOK)
	return err
}

// SendResult is the outcome of one send: the broker's ack, and Err (a
// *Error) when the ack carried an error or none could come.
type SendResult struct {
	Ack *wire.Ack
	Err error
}

// NewID is a fresh ULID, the id of a send and the default clientMessageId.
func NewID() string { return ulid.Make().String() }

// SendAsync queues a send frame and returns at once with a channel that
// receives exactly one SendResult: the ack, or connection_closed if the
// connection ends first. ctx bounds only the wait for write-queue space.
// This is how the bench keeps a window of sends in flight without a
// goroutine per send. s.Type and an empty s.ID are filled in place.
func (c *Conn) SendAsync(ctx context.Context, s *wire.Send) (<-chan SendResult, error) {
	if s == nil {
		return nil, newError(wire.CodeInvalidArgument, "nil send")
	}
	s.Type = wire.TypeSend
	if s.ID == "" {
		s.ID = NewID()
	}
	if s.ReqID != "" && !wire.ValidReqID(s.ReqID) {
		return nil, newError(wire.CodeInvalidArgument, "invalid reqId %q", s.ReqID)
	}
	data, err := wire.EncodeSend(s)
	if err != nil {
		return nil, wrapError(wire.CodeInvalidArgument, err, "encoding send")
	}
	ch := make(chan SendResult, 1)
	c.mu.Lock()
	switch {
	case c.dead:
		c.mu.Unlock()
		return nil, c.closedError()
	case c.acks[s.ID] != nil:
		c.mu.Unlock()
		return nil, newError(wire.CodeInvalidArgument, "a send with id %s is already in flight on this connection", s.ID)
	}
	c.acks[s.ID] = ch
	if s.ReqID != "" {
		// The broker answers a send with an ack, but a frame it cannot
		// read as a send may get an `error` echoing the reqId instead.
		c.sendReqIDs[s.ReqID] = s.ID
	}
	c.mu.Unlock()
	if err := c.enqueue(ctx, data); err != nil {
		c.forgetSend(s, ch)
		return nil, err
	}
	return ch, nil
}

func (c *Conn) forgetSend(s *wire.Send, ch <-chan SendResult) {
	c.mu.Lock()
	if cur, ok := c.acks[s.ID]; ok && (<-chan SendResult)(cur) == ch {
		delete(c.acks, s.ID)
		if s.ReqID != "" {
			delete(c.sendReqIDs, s.ReqID)
		}
	}
	c.mu.Unlock()
}

// Send sends one message and waits for its ack, correlated by s.ID (filled
// with a fresh ULID when empty). Many Sends may be in flight at once on one
// connection. A refused send returns the ack and a *Error with the ack's
// code and retryAfterMs.
func (c *Conn) Send(ctx context.Context, s *wire.Send) (*wire.Ack, error) {
	ch, err := c.SendAsync(ctx, s)
	if err != nil {
		return nil, err
	}
	return c.AwaitAck(ctx, s, ch)
}

// AwaitAck waits for the ack of a send that SendAsync queued. When ctx ends
// first, the send is forgotten (a late ack is dropped), so the same id can
// be sent again. Queuing several sends with SendAsync and then awaiting
// them keeps their order on the wire, which goroutines calling Send each
// would not.
func (c *Conn) AwaitAck(ctx context.Context, s *wire.Send, ch <-chan SendResult) (*wire.Ack, error) {
	select {
	case r := <-ch:
		return r.Ack, r.Err
	case <-ctx.Done():
		c.forgetSend(s, ch)
		return nil, ctxError(ctx, "waiting for the ack of "+s.ID)
	}
}

// rememberReceipts keeps receipts for WaitReceipts and wakes its waiters. A
// redelivered receipt (same receiptId) is kept once.
func (c *Conn) rememberReceipts(rs ...wire.Receipt) {
	if c.opts.NoReceiptWaits {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	for _, r := range rs {
		list, known := c.receipts[r.MessageID]
		dup := false
		for _, old := range list {
			if old.ReceiptID == r.ReceiptID {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if !known {
			c.receiptOrder = append(c.receiptOrder, r.MessageID)
		}
		c.receipts[r.MessageID] = append(list, r)
		for ch := range c.receiptWaiters[r.MessageID] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	for len(c.receiptOrder) > maxRememberedReceipts {
		oldest := c.receiptOrder[0]
		c.receiptOrder = c.receiptOrder[1:]
		delete(c.receipts, oldest)
	}
}

// WaitReceipt waits for the first delivery receipt of messageID (the
// broker's messageId from the ack). Receipts that arrived before the call
// are remembered, so the race between the ack and a fast recipient's
// receipt cannot lose one. The caller settles the receipt with ClientAck.
func (c *Conn) WaitReceipt(ctx context.Context, messageID string) (*wire.Receipt, error) {
	rs, err := c.WaitReceipts(ctx, messageID, 1)
	if err != nil {
		return nil, err
	}
	return &rs[0], nil
}

// WaitReceipts waits until n distinct receipts of messageID have arrived:
// a multi message is fully delivered when its receipts equal the ack's
// `pending` (01-protocol §4). On timeout it returns the receipts so far
// together with the error.
func (c *Conn) WaitReceipts(ctx context.Context, messageID string, n int) ([]wire.Receipt, error) {
	if c.opts.NoReceiptWaits {
		return nil, errors.New("client: WaitReceipts on a connection dialled with NoReceiptWaits")
	}
	if n < 1 {
		n = 1
	}
	wake := make(chan struct{}, 1)
	c.mu.Lock()
	if c.receiptWaiters[messageID] == nil {
		c.receiptWaiters[messageID] = make(map[chan struct{}]struct{})
	}
	c.receiptWaiters[messageID][wake] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.receiptWaiters[messageID], wake)
		if len(c.receiptWaiters[messageID]) == 0 {
			delete(c.receiptWaiters, messageID)
		}
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		got := append([]wire.Receipt(nil), c.receipts[messageID]...)
		dead := c.dead
		c.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		if dead {
			return got, c.closedError()
		}
		select {
		case <-wake:
		case <-c.done:
		case <-ctx.Done():
			return got, ctxError(ctx, "waiting for the receipt of "+messageID)
		}
	}
}

// ListPeers returns the mesh's presences as the broker lists them,
// following the broker's pages (`more`/`next`) to the end.
func (c *Conn) ListPeers(ctx context.Context) ([]wire.Peer, error) {
	var all []wire.Peer
	after := ""
	for {
		r, err := roundTrip[wire.Peers](ctx, c, &wire.ListPeers{Type: wire.TypeListPeers, After: after}, wire.TypePeers)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = r.Peers
		} else {
			all = append(all, r.Peers...)
		}
		if !r.More || r.Next == "" || r.Next == after || len(r.Peers) == 0 {
			return all, nil
		}
		after = r.Next
	}
}

// MembersList returns every member of the mesh, online or not.
func (c *Conn) MembersList(ctx context.Context) ([]wire.Member, error) {
	r, err := roundTrip[wire.Members](ctx, c, &wire.Request{Type: wire.TypeMembersList}, wire.TypeMembers)
	if err != nil {
		return nil, err
	}
	return r.Members, nil
}

// RawPush is one queued message: the decoded push and the exact bytes the
// broker sent, which the daemon and cold inbox may store as they came.
// Err is set (and Push nil) when the frame did not decode; the message
// stays queued on the broker until someone acks its id.
type RawPush struct {
	Push *wire.Push
	Raw  []byte
	Err  error
}

// FetchResult is one page of fetch_queued.
type FetchResult struct {
	Messages []RawPush
	Receipts []wire.Receipt
	More     bool
}

// FetchQueued asks for up to limit (≤ 500; 0 = the broker's default)
// queued messages and receipts. Nothing is settled until ClientAck; callers
// loop while More. Fetched receipts are also remembered for WaitReceipt.
func (c *Conn) FetchQueued(ctx context.Context, limit int) (*FetchResult, error) {
	q, err := roundTrip[wire.Queued](ctx, c, &wire.FetchQueued{Type: wire.TypeFetchQueued, Limit: limit}, wire.TypeQueued)
	if err != nil {
		return nil, err
	}
	res := &FetchResult{Receipts: q.Receipts, More: q.More, Messages: make([]RawPush, 0, len(q.Messages))}
	for _, m := range q.Messages {
		rp := RawPush{Raw: []byte(m)}
		var p wire.Push
		if err := wire.Decode(m, &p); err != nil {
			rp.Err = wrapError(CodeProtocol, err, "queued push")
		} else {
			rp.Push = &p
		}
		res.Messages = append(res.Messages, rp)
	}
	if len(q.Receipts) > 0 {
		c.rememberReceipts(q.Receipts...)
	}
	return res, nil
}

func chunks(ids []string) [][]string {
	var out [][]string
	for len(ids) > MaxAckBatch {
		out = append(out, ids[:MaxAckBatch])
		ids = ids[MaxAckBatch:]
	}
	if len(ids) > 0 {
		out = append(out, ids)
	}
	return out
}

// ClientAck settles deliveries (message ids, or receipt ids) and waits for
// the broker's `acked`, which comes after its durable commit: when this
// returns nil, the messages will not be redelivered.
func (c *Conn) ClientAck(ctx context.Context, ids []string) error {
	for _, batch := range chunks(ids) {
		_, err := roundTrip[wire.Acked](ctx, c, &wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: batch}, wire.TypeAcked)
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Conn) profile(ctx context.Context, u *wire.ProfileUpdate) error {
	return c.expectOK(ctx, u)
}

// SetStatus sets idle, working or dnd; next/low messages are held while
// working or dnd (01-protocol §4).
func (c *Conn) SetStatus(ctx context.Context, status string) error {
	return c.profile(ctx, &wire.ProfileUpdate{Type: wire.TypeSetStatus, Status: status})
}

// SetSummary sets the one-line summary other peers see (≤ 280 code points).
func (c *Conn) SetSummary(ctx context.Context, summary string) error {
	return c.profile(ctx, &wire.ProfileUpdate{Type: wire.TypeSetSummary, Summary: summary})
}

// SetVisible shows or hides this presence in other peers' lists.
func (c *Conn) SetVisible(ctx context.Context, visible bool) error {
	return c.profile(ctx, &wire.ProfileUpdate{Type: wire.TypeSetVisible, Visible: &visible})
}

// JoinGroup adds a group (member-wide over a member connection, this
// session's alone over a session connection).
func (c *Conn) JoinGroup(ctx context.Context, name, role string) error {
	return c.profile(ctx, &wire.ProfileUpdate{Type: wire.TypeJoinGroup, Name: name, Role: role})
}

// LeaveGroup removes a group, with the same scope as JoinGroup.
func (c *Conn) LeaveGroup(ctx context.Context, name string) error {
	return c.profile(ctx, &wire.ProfileUpdate{Type: wire.TypeLeaveGroup, Name: name})
}

// MessageStatus asks where a message this member sent stands, by broker
// messageId or by clientMessageId (give one).
func (c *Conn) MessageStatus(ctx context.Context, messageID, clientMessageID string) (*wire.MessageStatus, error) {
	return roundTrip[wire.MessageStatus](ctx, c, &wire.MessageStatusRequest{
		Type: wire.TypeMessageStatus, MessageID: messageID, ClientMessageID: clientMessageID,
	}, wire.TypeMessageStatus)
}

// MeshLeave removes this member from the mesh. The broker then closes every
// connection of the member with 1000 `left`, this one included.
func (c *Conn) MeshLeave(ctx context.Context) error {
	return c.expectOK(ctx, &wire.Request{Type: wire.TypeMeshLeave})
}

// InviteCreate registers a signed invite token (02-crypto "Invite links");
// the link must not be shown before this succeeds, since the broker refuses
// unregistered invites.
func (c *Conn) InviteCreate(ctx context.Context, token string) (*wire.InviteInfo, error) {
	r, err := roundTrip[wire.InviteReply](ctx, c, &wire.InviteCreate{Type: wire.TypeInviteCreate, Token: token}, wire.TypeInvite)
	if err != nil {
		return nil, err
	}
	return &r.InviteInfo, nil
}

// InviteList lists the mesh's registered invites.
func (c *Conn) InviteList(ctx context.Context) ([]wire.InviteInfo, error) {
	r, err := roundTrip[wire.Invites](ctx, c, &wire.Request{Type: wire.TypeInviteList}, wire.TypeInvites)
	if err != nil {
		return nil, err
	}
	return r.Invites, nil
}

// InviteRevoke revokes a registered invite by id.
func (c *Conn) InviteRevoke(ctx context.Context, inviteID string) error {
	return c.expectOK(ctx, &wire.InviteRevoke{Type: wire.TypeInviteRevoke, InviteID: inviteID})
}

// Admin runs disconnect, kick, ban, unban or set_role (r.Type) and returns
// who was affected and who was skipped (01-protocol §6). An ambiguous
// target is a *Error with code ambiguous_target and its Candidates.
func (c *Conn) Admin(ctx context.Context, r *wire.AdminRequest) (*wire.AdminResult, error) {
	return roundTrip[wire.AdminResult](ctx, c, r, wire.TypeAdminResult)
}

// ListBans lists the mesh's banned members.
func (c *Conn) ListBans(ctx context.Context) ([]wire.BanInfo, error) {
	r, err := roundTrip[wire.Bans](ctx, c, &wire.Request{Type: wire.TypeListBans}, wire.TypeBans)
	if err != nil {
		return nil, err
	}
	return r.Bans, nil
}

// IsPermanent reports whether a send error will fail the same way on retry
// (03-daemon "Drain"): the outbox marks such rows dead instead of retrying.
func IsPermanent(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case wire.CodeInvalidArgument, wire.CodeUnknownRecipient, wire.CodeBlockedByRecipient,
		wire.CodeForbidden, wire.CodePayloadTooLarge, wire.CodeIdempotencyKeyReused,
		wire.CodeNotAMember, wire.CodeStaleKeyGen, wire.CodeTopicKeyMissing:
		return true
	}
	return false
}

// RetryAfter is the wait a rate_limited error asks for (0 if none).
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.RetryAfterMs > 0 {
		return time.Duration(e.RetryAfterMs) * time.Millisecond
	}
	return 0
}
