package daemon

import (
	"encoding/binary"
	"fmt"

	json "github.com/go-json-experiment/json"

	"claudemesh/internal/binrec"
	"claudemesh/wire"
)

// Outbox rows are written in binrec's binary layout: a row is rewritten at
// every step of its life (accepted, inflight, sent or queued, delivered),
// each time inside the group commit, where decoding and encoding it as JSON
// was half of the commit's CPU. Rows written as JSON by schema 1 and 2 are
// still read. Layout after the format byte:
//
//	state (1 byte, outboxStates), flags (1 acked, 2 keyGen present),
//	uvarint seq, varint attempts, nextAttemptAt, pending, receipts, sentAt,
//	deliveredAt, enqueuedAt, [varint keyGen], then the strings in
//	outboxStrings order, then keys (count, then to, nonce, box each),
//	mentions and deliveredTo (count, then strings), then, when the flag
//	4 (extra) is set, varint onlineNow and the string errorCode (schema 7;
//	rows without them leave the flag unset, as schema 6 wrote them), then,
//	when the flag 8 (expired) is set, varint expired (schema 8; rows
//	without it leave the flag unset, as schema 7 wrote them), then, when
//	the flag 16 (sendId) is set, the string sendId (schema 10).
//
// The state comes first so a scan for one state (recoverOutbox) needs no
// decoding.

// outboxStates are the states' one-byte codes; the index is the code.
var outboxStates = [...]string{statePending, stateInflight, stateQueued, stateSent, stateDelivered, stateDead, stateAborted, stateUntracked}

func outboxStateCode(state string) (byte, error) {
	for i, s := range outboxStates {
		if s == state {
			return byte(i), nil
		}
	}
	return 0, fmt.Errorf("daemon.db: unknown outbox state %q", state)
}

const (
	outboxAcked = 1 << iota
	outboxKeyGen
	outboxExtra
	outboxExpired
	outboxSendID
)

// outboxStrings lists a row's string fields in layout order.
func outboxStrings(r *outboxRow) [18]*string {
	return [...]*string{&r.ClientMessageID, &r.Fingerprint, &r.Mesh, &r.MeshID, &r.To, &r.DisplayName, &r.TargetSpec,
		&r.Kind, &r.Nonce, &r.Ciphertext, &r.Signature, &r.Priority, &r.ReplyToID, &r.SenderPubkey, &r.SessionToken,
		&r.Preview, &r.LastError, &r.BrokerMessageID}
}

func encodeOutbox(r *outboxRow) ([]byte, error) {
	state, err := outboxStateCode(r.State)
	if err != nil {
		return nil, err
	}
	var flags byte
	if r.Acked {
		flags |= outboxAcked
	}
	if r.KeyGen != nil {
		flags |= outboxKeyGen
	}
	extra := r.OnlineNow != 0 || r.ErrorCode != ""
	if extra {
		flags |= outboxExtra
	}
	if r.Expired != 0 {
		flags |= outboxExpired
	}
	if r.SendID != "" {
		flags |= outboxSendID
	}
	strs := outboxStrings(r)
	size := 3 + 9*binary.MaxVarintLen64
	for _, p := range strs {
		size += len(*p) + binary.MaxVarintLen64
	}
	for _, k := range r.Keys {
		size += binrec.SizeOf(k.To, k.Nonce, k.Box)
	}
	size += binrec.SizeOf(r.Mentions...) + binrec.SizeOf(r.DeliveredTo...) + 4*binary.MaxVarintLen64 + binrec.SizeOf(r.ErrorCode, r.SendID)
	b := make([]byte, 0, size)
	b = append(b, binrec.Format, state, flags)
	b = binary.AppendUvarint(b, r.Seq)
	for _, v := range [...]int64{int64(r.Attempts), r.NextAttemptAt, int64(r.Pending), int64(r.Receipts), r.SentAt, r.DeliveredAt, r.EnqueuedAt} {
		b = binary.AppendVarint(b, v)
	}
	if r.KeyGen != nil {
		b = binary.AppendVarint(b, int64(*r.KeyGen))
	}
	for _, p := range strs {
		b = binrec.AppendStr(b, *p)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Keys)))
	for _, k := range r.Keys {
		b = binrec.AppendStr(binrec.AppendStr(binrec.AppendStr(b, k.To), k.Nonce), k.Box)
	}
	for _, list := range [...][]string{r.Mentions, r.DeliveredTo} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, s := range list {
			b = binrec.AppendStr(b, s)
		}
	}
	if extra {
		b = binrec.AppendStr(binary.AppendVarint(b, int64(r.OnlineNow)), r.ErrorCode)
	}
	if r.Expired != 0 {
		b = binary.AppendVarint(b, int64(r.Expired))
	}
	if r.SendID != "" {
		b = binrec.AppendStr(b, r.SendID)
	}
	return b, nil
}

// decodeOutbox reads a row in either layout into r (which it resets).
func decodeOutbox(v []byte, r *outboxRow) error {
	*r = outboxRow{}
	if binrec.IsJSON(v) {
		if err := json.Unmarshal(v, r); err != nil {
			return fmt.Errorf("daemon.db: corrupt outbox row: %w", err)
		}
		return nil
	}
	rd := binrec.NewReader(v)
	if f := rd.Byte(); f != binrec.Format {
		rd.Fail(fmt.Errorf("unknown record format %#x", f))
	}
	state := rd.Byte()
	flags := rd.Byte()
	if int(state) < len(outboxStates) {
		r.State = outboxStates[state]
	} else {
		rd.Fail(fmt.Errorf("unknown outbox state %d", state))
	}
	r.Seq = rd.Uvarint()
	r.Attempts = int(rd.Varint())
	r.NextAttemptAt = rd.Varint()
	r.Pending = int(rd.Varint())
	r.Receipts = int(rd.Varint())
	r.SentAt = rd.Varint()
	r.DeliveredAt = rd.Varint()
	r.EnqueuedAt = rd.Varint()
	if flags&outboxKeyGen != 0 {
		g := int(rd.Varint())
		r.KeyGen = &g
	}
	r.Acked = flags&outboxAcked != 0
	for _, p := range outboxStrings(r) {
		*p = rd.Str()
	}
	if n := rd.Count(3); n > 0 {
		r.Keys = make([]wire.MultiKey, n)
		for i := range r.Keys {
			r.Keys[i] = wire.MultiKey{To: rd.Str(), Nonce: rd.Str(), Box: rd.Str()}
		}
	}
	r.Mentions = readStrings(rd)
	r.DeliveredTo = readStrings(rd)
	if flags&outboxExtra != 0 {
		r.OnlineNow = int(rd.Varint())
		r.ErrorCode = rd.Str()
	}
	if flags&outboxExpired != 0 {
		r.Expired = int(rd.Varint())
	}
	if flags&outboxSendID != 0 {
		r.SendID = rd.Str()
	}
	if err := rd.Done("outbox row"); err != nil {
		return fmt.Errorf("daemon.db: %w", err)
	}
	return nil
}

func readStrings(rd *binrec.Reader) []string {
	n := rd.Count(1)
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = rd.Str()
	}
	return out
}

// outboxRowState is a stored row's state, read without decoding the row
// when it is binary.
func outboxRowState(v []byte) (string, error) {
	if len(v) >= 2 && v[0] == binrec.Format {
		if int(v[1]) < len(outboxStates) {
			return outboxStates[v[1]], nil
		}
		return "", fmt.Errorf("daemon.db: unknown outbox state %d", v[1])
	}
	var r outboxRow
	if err := decodeOutbox(v, &r); err != nil {
		return "", err
	}
	return r.State, nil
}
