package wire

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// The hot frames — send, ack, push, receipt, client_ack — are written and
// read for every message, by the broker and by every client, on both ends
// of a fan-out. Their encoders below write the bytes by hand, field by
// field in the struct's order with the same omissions, so the output is
// byte-identical to Encode (a test compares them on random frames); rare
// fields fall back to the reflective encoder. FrameType reads a frame's
// type without parsing it, so a hot frame is parsed once, by its typed
// Decode, instead of twice (Peek, then Decode).

// FrameType returns the type of a frame that begins `{"type":"…"` — how
// every frame this project writes begins — when it is one of the hot
// frame types, so the caller can decode it straight into its struct (whose
// strict decoding still checks the whole frame, duplicate keys included).
// Anything else (another type, other key order, whitespace) reports false,
// and the caller falls back to Peek.
func FrameType(data []byte) (string, bool) {
	const prefix = `{"type":"`
	if len(data) < len(prefix)+2 || string(data[:len(prefix)]) != prefix {
		return "", false
	}
	rest := data[len(prefix):]
	end := -1
	for i, c := range rest {
		if c == '"' {
			end = i
			break
		}
		if c == '\\' || i > 16 {
			return "", false
		}
	}
	if end < 0 || end+1 >= len(rest) || (rest[end+1] != ',' && rest[end+1] != '}') {
		return "", false
	}
	switch string(rest[:end]) { // no allocation: the switch compares in place
	case TypeSend:
		return TypeSend, true
	case TypeClientAck:
		return TypeClientAck, true
	case TypeAck:
		return TypeAck, true
	case TypePush:
		return TypePush, true
	case TypeReceipt:
		return TypeReceipt, true
	}
	return "", false
}

// appendString appends s as a JSON string exactly as the encoder does:
// printable ASCII other than the quote and backslash as is, anything else
// through jsontext's quoting (the encoder's own).
func appendString(b []byte, s string) []byte {
	i := 0
	// Eight bytes at a time, as scan.raw reads them (fastdecode.go): a
	// 64 KiB ciphertext's ~88 KB cost the broker ~0.1 ms a push a byte
	// at a time.
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if !plainASCII8(w) {
			break
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b, _ = jsontext.AppendQuote(b, s)
			return b
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// field appends `,"name":` (or `"name":` for the first field).
func field(b []byte, name string) []byte {
	if b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func strField(b []byte, name, v string) []byte { return appendString(field(b, name), v) }

// optStr appends a field tagged omitempty, unless it is empty.
func optStr(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return strField(b, name, v)
}

func intField(b []byte, name string, v int64) []byte {
	return strconv.AppendInt(field(b, name), v, 10)
}

// EncodePush encodes p, byte-identical to Encode(p).
func EncodePush(p *Push) []byte { return AppendPush(make([]byte, 0, PushSize(p)), p) }

// PushSize is enough room for the hand-encoded push p (unless a string
// needs escaping), so that encoding it never grows the buffer.
func PushSize(p *Push) int {
	n := 400 + len(p.MessageID) + len(p.MeshID) + len(p.Kind) + len(p.TargetSpec) + len(p.SenderPubkey) +
		len(p.SenderMemberPubkey) + len(p.SenderName) + len(p.Priority) + len(p.Nonce) + len(p.Ciphertext) +
		len(p.Signature) + len(p.ReplyToID) + len(p.Subtype) + len(p.Event) + len(p.ClientMessageID)
	if p.Key != nil {
		n += 40 + len(p.Key.To) + len(p.Key.Nonce) + len(p.Key.Box)
	}
	for _, m := range p.Mentions {
		n += len(m) + 3
	}
	return n
}

// AppendPush appends the encoding of p to b (EncodePush's bytes).
func AppendPush(b []byte, p *Push) []byte {
	if p.SenderAttestation != nil || p.Topic != nil || p.EventData != nil {
		return append(b, MustEncode(p)...)
	}
	b = append(b, '{')
	b = strField(b, "type", p.Type)
	b = strField(b, "messageId", p.MessageID)
	b = optStr(b, "meshId", p.MeshID)
	b = optStr(b, "kind", p.Kind)
	b = optStr(b, "targetSpec", p.TargetSpec)
	b = optStr(b, "senderPubkey", p.SenderPubkey)
	b = optStr(b, "senderMemberPubkey", p.SenderMemberPubkey)
	b = optStr(b, "senderName", p.SenderName)
	b = optStr(b, "priority", p.Priority)
	b = optStr(b, "nonce", p.Nonce)
	b = optStr(b, "ciphertext", p.Ciphertext)
	if p.Key != nil {
		b = appendMultiKey(field(b, "key"), p.Key)
	}
	if p.KeyGen != nil {
		b = intField(b, "keyGen", int64(*p.KeyGen))
	}
	b = optStr(b, "signature", p.Signature)
	if p.BodyVersion != 0 {
		b = intField(b, "bodyVersion", int64(p.BodyVersion))
	}
	b = optStr(b, "replyToId", p.ReplyToID)
	if len(p.Mentions) > 0 {
		b = append(field(b, "mentions"), '[')
		for i, m := range p.Mentions {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m)
		}
		b = append(b, ']')
	}
	b = optStr(b, "subtype", p.Subtype)
	b = optStr(b, "event", p.Event)
	b = optStr(b, "clientMessageId", p.ClientMessageID)
	b = intField(b, "createdAt", p.CreatedAt)
	return append(b, '}')
}

func appendMultiKey(b []byte, k *MultiKey) []byte {
	b = append(b, '{')
	b = strField(b, "to", k.To)
	b = strField(b, "nonce", k.Nonce)
	b = strField(b, "box", k.Box)
	return append(b, '}')
}

// EncodeAck encodes a, byte-identical to Encode(a).
func EncodeAck(a *Ack) []byte {
	b := make([]byte, 0, 160)
	b = append(b, '{')
	b = strField(b, "type", a.Type)
	b = strField(b, "id", a.ID)
	b = optStr(b, "reqId", a.ReqID)
	b = optStr(b, "messageId", a.MessageID)
	if a.Queued {
		b = append(field(b, "queued"), "true"...)
	}
	if a.Online != nil {
		b = intField(b, "online", int64(*a.Online))
	}
	if a.Pending != nil {
		b = intField(b, "pending", int64(*a.Pending))
	}
	if a.Duplicate {
		b = append(field(b, "duplicate"), "true"...)
	}
	if e := a.Error; e != nil {
		b = append(field(b, "error"), '{')
		b = strField(b, "code", e.Code)
		b = strField(b, "message", e.Message)
		if e.RetryAfterMs != 0 {
			b = intField(b, "retryAfterMs", e.RetryAfterMs)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// EncodeReceipt encodes r, byte-identical to Encode(r).
func EncodeReceipt(r *Receipt) []byte {
	b := make([]byte, 0, 128+len(r.ClientMessageID))
	b = append(b, '{')
	b = strField(b, "type", r.Type)
	b = strField(b, "receiptId", r.ReceiptID)
	b = strField(b, "messageId", r.MessageID)
	b = strField(b, "clientMessageId", r.ClientMessageID)
	b = strField(b, "recipientPubkey", r.RecipientPubkey)
	b = intField(b, "deliveredAt", r.DeliveredAt)
	return append(b, '}')
}

// EncodeSend encodes s, byte-identical to Encode(s), and fails as Encode
// does on a string that is not valid UTF-8.
func EncodeSend(s *Send) ([]byte, error) {
	strs := []string{s.ID, s.ReqID, s.ClientMessageID, s.TargetSpec, s.Kind, s.Priority, s.Nonce, s.Ciphertext, s.Signature, s.ReplyToID, s.Subtype}
	strs = append(strs, s.Mentions...)
	for _, k := range s.Keys {
		strs = append(strs, k.To, k.Nonce, k.Box)
	}
	for _, v := range strs {
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("wire: encoding send: invalid UTF-8 in %q", v)
		}
	}
	return encodeSend(s), nil
}

func encodeSend(s *Send) []byte {
	n := 256 + len(s.Ciphertext) + len(s.Signature)
	for _, k := range s.Keys {
		n += 160 + len(k.To) + len(k.Nonce) + len(k.Box)
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	b = strField(b, "type", s.Type)
	b = strField(b, "id", s.ID)
	b = optStr(b, "reqId", s.ReqID)
	b = optStr(b, "clientMessageId", s.ClientMessageID)
	b = strField(b, "targetSpec", s.TargetSpec)
	b = strField(b, "kind", s.Kind)
	b = optStr(b, "priority", s.Priority)
	b = strField(b, "nonce", s.Nonce)
	b = strField(b, "ciphertext", s.Ciphertext)
	if len(s.Keys) > 0 {
		b = append(field(b, "keys"), '[')
		for i := range s.Keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendMultiKey(b, &s.Keys[i])
		}
		b = append(b, ']')
	}
	b = optStr(b, "signature", s.Signature)
	if s.KeyGen != nil {
		b = intField(b, "keyGen", int64(*s.KeyGen))
	}
	if s.BodyVersion != 0 {
		b = intField(b, "bodyVersion", int64(s.BodyVersion))
	}
	b = optStr(b, "replyToId", s.ReplyToID)
	if len(s.Mentions) > 0 {
		b = append(field(b, "mentions"), '[')
		for i, m := range s.Mentions {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m)
		}
		b = append(b, ']')
	}
	b = optStr(b, "subtype", s.Subtype)
	if s.Receipts != nil {
		b = append(field(b, "receipts"), strconv.FormatBool(*s.Receipts)...)
	}
	return append(b, '}')
}

// EncodeClientAck encodes a, byte-identical to Encode(a).
func EncodeClientAck(a *ClientAck) []byte {
	n := 64 + len(a.ReqID) + len(a.MessageID)
	for _, id := range a.MessageIDs {
		n += len(id) + 3
	}
	return AppendClientAck(make([]byte, 0, n), a)
}

// AppendClientAck appends EncodeClientAck(a) to b: a connection's writer
// encodes the acks it coalesces into one buffer it keeps.
func AppendClientAck(b []byte, a *ClientAck) []byte {
	b = append(b, '{')
	b = strField(b, "type", a.Type)
	b = optStr(b, "reqId", a.ReqID)
	if len(a.MessageIDs) > 0 {
		b = append(field(b, "messageIds"), '[')
		for i, id := range a.MessageIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, id)
		}
		b = append(b, ']')
	}
	b = optStr(b, "messageId", a.MessageID)
	return append(b, '}')
}

// EncodeHelloAck encodes a, byte-identical to Encode(a) (which it is,
// panicking, for a string that is not valid UTF-8): the broker writes it
// while it holds the mesh lock every send of the mesh waits on, and the
// reflective encoder took ~5 us of it a hello.
func EncodeHelloAck(a *HelloAck) []byte {
	n := 160 + len(a.MeshName) + len(a.DisplayName)
	valid := true
	for _, list := range [][]string{{a.Type, a.PresenceID, a.MeshID, a.MeshName, a.MemberID, a.MemberRole, a.DisplayName, a.BrokerPubkey}, a.Features, a.BrokerURLs} {
		for _, s := range list {
			n += len(s) + 4
			valid = valid && utf8.ValidString(s)
		}
	}
	if !valid {
		return MustEncode(a)
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	b = strField(b, "type", a.Type)
	b = optStr(b, "presenceId", a.PresenceID)
	b = strField(b, "meshId", a.MeshID)
	b = strField(b, "meshName", a.MeshName)
	b = strField(b, "memberId", a.MemberID)
	b = strField(b, "memberRole", a.MemberRole)
	b = strField(b, "displayName", a.DisplayName)
	b = strField(b, "brokerPubkey", a.BrokerPubkey)
	b = intField(b, "serverTime", a.ServerTime)
	b = appendStrings(field(b, "features"), a.Features)
	if len(a.BrokerURLs) > 0 {
		b = appendStrings(field(b, "brokerUrls"), a.BrokerURLs)
	}
	return append(b, '}')
}

// appendStrings appends a JSON array of strings ([] for none).
func appendStrings(b []byte, list []string) []byte {
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}
