package wire

import "encoding/binary"

// The hot frames are decoded for every message, on both ends of every
// fan-out: the broker decodes each send and client_ack, each client each
// push, receipt and ack. The reflective decoder spends most of a push's
// decode finding fields and checking bytes that this project's own
// encoders (fast.go) always write the same way. decodeFast reads exactly
// that canonical form — one compact object, every string printable ASCII
// with no escape, integers without sign tricks or exponents, each known
// field at most once — into a zero value, and reports false on anything
// else (another spelling, an unknown field, a duplicate, null, an escape,
// a byte outside printable ASCII), so that Decode runs the strict
// reflective decoder, which accepts or rejects the frame as it always did.
// What the fast path accepts, the reflective decoder accepts with the same
// result (FuzzDecodeFast checks both on the same bytes).
//
// Each string field is its own allocation, never a slice of one copy of
// the frame: a caller that keeps a message id (a recipient's set of ids
// seen) would otherwise keep the whole frame alive with it — that made
// the bench's heap grow by ~1 KB a push.

// decodeFast fills v from data if v is a hot frame type, is zero, and data
// is in canonical form; it reports whether it did, and leaves v zero when
// it did not.
func decodeFast(data []byte, v any) bool {
	switch v := v.(type) {
	case *Push:
		if v.Type != "" || v.MessageID != "" || v.Key != nil || v.Mentions != nil || v.EventData != nil ||
			v.SenderAttestation != nil || v.Topic != nil || v.KeyGen != nil || v.CreatedAt != 0 {
			return false
		}
		if !fastPush(data, v) {
			*v = Push{}
			return false
		}
		return true
	case *Receipt:
		if *v != (Receipt{}) {
			return false
		}
		if !fastReceipt(data, v) {
			*v = Receipt{}
			return false
		}
		return true
	case *Ack:
		if *v != (Ack{}) {
			return false
		}
		if !fastAck(data, v) {
			*v = Ack{}
			return false
		}
		return true
	case *Send:
		if v.Type != "" || v.ID != "" || v.Keys != nil || v.Mentions != nil || v.KeyGen != nil || v.Receipts != nil {
			return false
		}
		if !fastSend(data, v) {
			*v = Send{}
			return false
		}
		return true
	case *ClientAck:
		if v.Type != "" || v.ReqID != "" || v.MessageIDs != nil || v.MessageID != "" {
			return false
		}
		if !fastClientAck(data, v) {
			*v = ClientAck{}
			return false
		}
		return true
	case *Hello:
		if !zeroHello(v) {
			return false
		}
		if !fastHello(data, v) {
			*v = Hello{}
			return false
		}
		return true
	}
	return false
}

// DecodeHelloFast reads a hello in the canonical form decodeFast reads
// into h, which must be zero, and reports whether it did. It is the
// broker's first read of a connection's first frame: a frame it takes
// is one that Peek and Decode would accept, with the same result, so
// the broker skips them; on false (any other spelling, or another
// type) h is left zero and the caller must Peek and Decode as for any
// frame, which accept or refuse it as they always did.
func DecodeHelloFast(data []byte, h *Hello) bool {
	if !decodeFast(data, h) {
		return false
	}
	if h.Type != TypeHello {
		*h = Hello{}
		return false
	}
	return true
}

func zeroHello(h *Hello) bool {
	return h.Type == "" && h.Protocol == 0 && h.MeshID == "" && h.MemberID == "" && h.Pubkey == "" &&
		h.Timestamp == 0 && h.Challenge == "" && h.Signature == "" && h.SessionID == "" && h.Role == "" &&
		h.Presence == nil && h.PeerType == "" && h.DisplayName == "" && h.PID == nil && h.Cwd == "" &&
		h.Hostname == "" && h.Channel == "" && h.Model == "" && h.Groups == nil
}

// scan reads canonical compact JSON; any deviation sets bad, and every
// method returns zero values once it is set.
type scan struct {
	b   []byte
	i   int
	bad bool
}

func (s *scan) eat(c byte) bool {
	if s.bad || s.i >= len(s.b) || s.b[s.i] != c {
		s.bad = true
		return false
	}
	s.i++
	return true
}

// peek reports whether the next byte is c, without consuming it.
func (s *scan) peek(c byte) bool { return !s.bad && s.i < len(s.b) && s.b[s.i] == c }

// raw reads a string's bytes: printable ASCII, no quote escapes.
func (s *scan) raw() []byte {
	if !s.eat('"') {
		return nil
	}
	start := s.i
	// Eight bytes at a time while none of them ends the string or is
	// outside printable ASCII (plainASCII8): a 64 KiB ciphertext's ~88 KB
	// took ~0.1 ms a byte at a time. The loop below finds the byte.
	for s.i+8 <= len(s.b) && plainASCII8(binary.LittleEndian.Uint64(s.b[s.i:])) {
		s.i += 8
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '"' {
			s.i++
			return s.b[start : s.i-1]
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			break
		}
		s.i++
	}
	s.bad = true
	return nil
}

// Word-at-a-time byte tests (each exact for "is there such a byte").
const (
	ones8  = 0x0101010101010101
	highs8 = 0x8080808080808080
)

// hasZero8 reports whether some byte of x is 0.
func hasZero8(x uint64) bool { return (x-ones8)&^x&highs8 != 0 }

// plainASCII8 reports whether each byte of x is printable ASCII (0x20 to
// 0x7e) and neither '"' nor '\\': raw's loop would step over all eight.
func plainASCII8(x uint64) bool {
	if x&highs8 != 0 || (x+ones8*(0x80-0x7f))&highs8 != 0 || (x-ones8*0x20)&^x&highs8 != 0 {
		return false // a byte >= 0x80, >= 0x7f, or < 0x20
	}
	return !hasZero8(x^(ones8*'"')) && !hasZero8(x^(ones8*'\\'))
}

func (s *scan) str() string {
	r := s.raw()
	if s.bad {
		return ""
	}
	switch string(r) { // the frames' constant values, without an allocation
	case "":
		return ""
	case TypePush:
		return TypePush
	case TypeReceipt:
		return TypeReceipt
	case TypeAck:
		return TypeAck
	case TypeSend:
		return TypeSend
	case TypeClientAck:
		return TypeClientAck
	case TypeHello:
		return TypeHello
	case RoleCLI:
		return RoleCLI
	case KindBox:
		return KindBox
	case KindMulti:
		return KindMulti
	case PriorityNow:
		return PriorityNow
	case PriorityNext:
		return PriorityNext
	case PriorityLow:
		return PriorityLow
	case "*":
		return "*"
	}
	return string(r)
}

// int reads an integer as the encoders write it: an optional minus, then
// digits without a leading zero, at most 18 of them (no overflow).
func (s *scan) int() int64 {
	if s.bad {
		return 0
	}
	neg := false
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	start := s.i
	var n int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > 18 || (digits > 1 && s.b[start] == '0') || (neg && n == 0) {
		s.bad = true
		return 0
	}
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.bad = true
		return 0
	}
	if neg {
		n = -n
	}
	return n
}

// small reads an integer for an int field (which may be 32 bits wide).
func (s *scan) small() int {
	n := s.int()
	if n > 1<<31-1 || n < -1<<31 {
		s.bad = true
		return 0
	}
	return int(n)
}

func (s *scan) boolean() bool {
	if s.bad {
		return false
	}
	rest := s.b[s.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		s.i += 4
		return true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		s.i += 5
		return false
	}
	s.bad = true
	return false
}

// object reads `{"name":value,...}`, calling field for each name with the
// scanner at the value; field returns a bit unique to the name (0 for a
// name it does not know), and a name seen twice is a deviation.
func (s *scan) object(field func(name []byte) uint64) {
	if !s.eat('{') {
		return
	}
	if s.peek('}') {
		s.i++
		return
	}
	var seen uint64
	for !s.bad {
		name := s.raw()
		if !s.eat(':') {
			return
		}
		bit := field(name)
		if bit == 0 || seen&bit != 0 {
			s.bad = true
			return
		}
		seen |= bit
		if s.peek(',') {
			s.i++
			continue
		}
		s.eat('}')
		return
	}
}

// strings reads a non-empty array of strings.
func (s *scan) strings() []string {
	if !s.eat('[') {
		return nil
	}
	var out []string
	for !s.bad {
		out = append(out, s.str())
		if s.peek(',') {
			s.i++
			continue
		}
		s.eat(']')
		break
	}
	if s.bad {
		return nil
	}
	return out
}

// end accepts the scan if the whole input was one object.
func (s *scan) end() bool { return !s.bad && s.i == len(s.b) }

func (s *scan) multiKey(k *MultiKey) {
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "to":
			k.To = s.str()
			return 1
		case "nonce":
			k.Nonce = s.str()
			return 2
		case "box":
			k.Box = s.str()
			return 4
		}
		return 0
	})
}

func fastPush(data []byte, p *Push) bool {
	s := scan{b: data}
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "type":
			p.Type = s.str()
			return 1 << 0
		case "messageId":
			p.MessageID = s.str()
			return 1 << 1
		case "meshId":
			p.MeshID = s.str()
			return 1 << 2
		case "kind":
			p.Kind = s.str()
			return 1 << 3
		case "targetSpec":
			p.TargetSpec = s.str()
			return 1 << 4
		case "senderPubkey":
			p.SenderPubkey = s.str()
			return 1 << 5
		case "senderMemberPubkey":
			p.SenderMemberPubkey = s.str()
			return 1 << 6
		case "senderName":
			p.SenderName = s.str()
			return 1 << 7
		case "priority":
			p.Priority = s.str()
			return 1 << 8
		case "nonce":
			p.Nonce = s.str()
			return 1 << 9
		case "ciphertext":
			p.Ciphertext = s.str()
			return 1 << 10
		case "key":
			k := new(MultiKey)
			s.multiKey(k)
			p.Key = k
			return 1 << 11
		case "keyGen":
			g := s.small()
			p.KeyGen = &g
			return 1 << 12
		case "signature":
			p.Signature = s.str()
			return 1 << 13
		case "bodyVersion":
			p.BodyVersion = s.small()
			return 1 << 14
		case "replyToId":
			p.ReplyToID = s.str()
			return 1 << 15
		case "mentions":
			p.Mentions = s.strings()
			return 1 << 16
		case "subtype":
			p.Subtype = s.str()
			return 1 << 17
		case "event":
			p.Event = s.str()
			return 1 << 18
		case "clientMessageId":
			p.ClientMessageID = s.str()
			return 1 << 19
		case "createdAt":
			p.CreatedAt = s.int()
			return 1 << 20
		}
		return 0
	})
	return s.end()
}

func fastReceipt(data []byte, r *Receipt) bool {
	s := scan{b: data}
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "type":
			r.Type = s.str()
			return 1 << 0
		case "receiptId":
			r.ReceiptID = s.str()
			return 1 << 1
		case "messageId":
			r.MessageID = s.str()
			return 1 << 2
		case "clientMessageId":
			r.ClientMessageID = s.str()
			return 1 << 3
		case "recipientPubkey":
			r.RecipientPubkey = s.str()
			return 1 << 4
		case "deliveredAt":
			r.DeliveredAt = s.int()
			return 1 << 5
		}
		return 0
	})
	return s.end()
}

// fastAck leaves acks that carry an error to the reflective decoder: they
// are rare, and their message is free text.
func fastAck(data []byte, a *Ack) bool {
	s := scan{b: data}
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "type":
			a.Type = s.str()
			return 1 << 0
		case "id":
			a.ID = s.str()
			return 1 << 1
		case "reqId":
			a.ReqID = s.str()
			return 1 << 2
		case "messageId":
			a.MessageID = s.str()
			return 1 << 3
		case "queued":
			a.Queued = s.boolean()
			return 1 << 4
		case "online":
			n := s.small()
			a.Online = &n
			return 1 << 5
		case "pending":
			n := s.small()
			a.Pending = &n
			return 1 << 6
		case "duplicate":
			a.Duplicate = s.boolean()
			return 1 << 7
		}
		return 0
	})
	return s.end()
}

func fastSend(data []byte, m *Send) bool {
	s := scan{b: data}
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "type":
			m.Type = s.str()
			return 1 << 0
		case "id":
			m.ID = s.str()
			return 1 << 1
		case "reqId":
			m.ReqID = s.str()
			return 1 << 2
		case "clientMessageId":
			m.ClientMessageID = s.str()
			return 1 << 3
		case "targetSpec":
			m.TargetSpec = s.str()
			return 1 << 4
		case "kind":
			m.Kind = s.str()
			return 1 << 5
		case "priority":
			m.Priority = s.str()
			return 1 << 6
		case "nonce":
			m.Nonce = s.str()
			return 1 << 7
		case "ciphertext":
			m.Ciphertext = s.str()
			return 1 << 8
		case "keys":
			m.Keys = s.multiKeys()
			return 1 << 9
		case "signature":
			m.Signature = s.str()
			return 1 << 10
		case "keyGen":
			g := s.small()
			m.KeyGen = &g
			return 1 << 11
		case "bodyVersion":
			m.BodyVersion = s.small()
			return 1 << 12
		case "replyToId":
			m.ReplyToID = s.str()
			return 1 << 13
		case "mentions":
			m.Mentions = s.strings()
			return 1 << 14
		case "subtype":
			m.Subtype = s.str()
			return 1 << 15
		case "receipts":
			b := s.boolean()
			m.Receipts = &b
			return 1 << 16
		}
		return 0
	})
	return s.end()
}

// multiKeys reads a non-empty array of key entries, sized by a first
// count of its entries (a hint only, capped: a frame of braces must not
// size a large slice).
func (s *scan) multiKeys() []MultiKey {
	if !s.peek('[') {
		s.bad = true
		return nil
	}
	n := 0
	for _, c := range s.b[s.i:] {
		if c == '{' {
			n++
		} else if c == ']' || n == 1024 {
			break
		}
	}
	s.i++
	out := make([]MultiKey, 0, n)
	for !s.bad {
		out = append(out, MultiKey{})
		s.multiKey(&out[len(out)-1])
		if s.peek(',') {
			s.i++
			continue
		}
		s.eat(']')
		break
	}
	if s.bad {
		return nil
	}
	return out
}

func fastClientAck(data []byte, a *ClientAck) bool {
	s := scan{b: data}
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "type":
			a.Type = s.str()
			return 1 << 0
		case "reqId":
			a.ReqID = s.str()
			return 1 << 1
		case "messageIds":
			a.MessageIDs = s.strings()
			return 1 << 2
		case "messageId":
			a.MessageID = s.str()
			return 1 << 3
		}
		return 0
	})
	return s.end()
}

func fastHello(data []byte, h *Hello) bool {
	s := scan{b: data}
	s.object(func(name []byte) uint64 {
		switch string(name) {
		case "type":
			h.Type = s.str()
			return 1 << 0
		case "protocol":
			h.Protocol = s.small()
			return 1 << 1
		case "meshId":
			h.MeshID = s.str()
			return 1 << 2
		case "memberId":
			h.MemberID = s.str()
			return 1 << 3
		case "pubkey":
			h.Pubkey = s.str()
			return 1 << 4
		case "timestamp":
			h.Timestamp = s.int()
			return 1 << 5
		case "challenge":
			h.Challenge = s.str()
			return 1 << 6
		case "signature":
			h.Signature = s.str()
			return 1 << 7
		case "sessionId":
			h.SessionID = s.str()
			return 1 << 8
		case "role":
			h.Role = s.str()
			return 1 << 9
		case "presence":
			b := s.boolean()
			h.Presence = &b
			return 1 << 10
		case "peerType":
			h.PeerType = s.str()
			return 1 << 11
		case "displayName":
			h.DisplayName = s.str()
			return 1 << 12
		case "pid":
			n := s.small()
			h.PID = &n
			return 1 << 13
		case "cwd":
			h.Cwd = s.str()
			return 1 << 14
		case "hostname":
			h.Hostname = s.str()
			return 1 << 15
		case "channel":
			h.Channel = s.str()
			return 1 << 16
		case "model":
			h.Model = s.str()
			return 1 << 17
		case "groups":
			h.Groups = s.groups()
			return 1 << 18
		}
		return 0
	})
	return s.end()
}

// groups reads a non-empty array of group objects, sized like multiKeys.
// The names and roles are substrings of one copy of the array's text
// (strings without escapes are their own text), not an allocation each:
// a hello's groups are kept, or dropped, together.
func (s *scan) groups() []Group {
	if !s.peek('[') {
		s.bad = true
		return nil
	}
	n, end := 0, len(s.b)
	for i, c := range s.b[s.i:] {
		if c == '{' && n < 1024 {
			n++
		} else if c == ']' {
			end = s.i + i + 1
			break
		}
	}
	// The first ']' ends the array unless a string holds one; then the
	// copy is short and a string past it is copied on its own.
	text := string(s.b[s.i:end])
	base := s.i
	str := func() string {
		start := s.i + 1
		r := s.raw()
		if s.bad {
			return ""
		}
		if from, to := start-base, start-base+len(r); to < len(text) {
			return text[from:to]
		}
		return string(r)
	}
	s.i++
	out := make([]Group, 0, n)
	for !s.bad {
		out = append(out, Group{})
		g := &out[len(out)-1]
		s.object(func(name []byte) uint64 {
			switch string(name) {
			case "name":
				g.Name = str()
				return 1
			case "role":
				g.Role = str()
				return 2
			}
			return 0
		})
		if s.peek(',') {
			s.i++
			continue
		}
		s.eat(']')
		break
	}
	if s.bad {
		return nil
	}
	return out
}
