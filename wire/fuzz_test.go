package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// clientFrame returns a fresh value of the concrete type the broker decodes a
// client→broker frame of type typ into (broker/route.go, handshake.go,
// admin.go), or nil for a type the broker answers unknown_message_type.
func clientFrame(typ string) any {
	switch typ {
	case TypeHello:
		return new(Hello)
	case TypeSessionHello:
		return new(SessionHello)
	case TypeSend:
		return new(Send)
	case TypeClientAck:
		return new(ClientAck)
	case TypeFetchQueued:
		return new(FetchQueued)
	case TypeListPeers, TypeMembersList, TypeMeshLeave, TypeInviteList:
		return new(Request)
	case TypeSetStatus, TypeSetSummary, TypeSetVisible, TypeJoinGroup, TypeLeaveGroup:
		return new(ProfileUpdate)
	case TypeMessageStatus:
		return new(MessageStatusRequest)
	case TypeInviteCreate:
		return new(InviteCreate)
	case TypeInviteRevoke:
		return new(InviteRevoke)
	case TypeDisconnect, TypeKick, TypeBan, TypeUnban, TypeListBans, TypeSetRole:
		return new(AdminRequest)
	}
	return nil
}

// brokerFrame is clientFrame for broker→client frames (what the client
// package decodes).
func brokerFrame(typ string) any {
	switch typ {
	case TypeChallenge:
		return new(Challenge)
	case TypeHelloAck:
		return new(HelloAck)
	case TypeAck:
		return new(Ack)
	case TypePush:
		return new(Push)
	case TypeAcked:
		return new(Acked)
	case TypeReceipt:
		return new(Receipt)
	case TypeQueued:
		return new(Queued)
	case TypePeers:
		return new(Peers)
	case TypeMembers:
		return new(Members)
	case TypeMessageStatus:
		return new(MessageStatus)
	case TypeInvite:
		return new(InviteReply)
	case TypeInvites:
		return new(Invites)
	case TypeOK:
		return new(OK)
	case TypeError:
		return new(Error)
	case TypeAdminResult:
		return new(AdminResult)
	case TypeBans:
		return new(Bans)
	}
	return nil
}

// clientSeeds are realistic client→broker frames plus near misses.
func clientSeeds() [][]byte {
	send := Send{Type: TypeSend, ID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VW", ReqID: "r-1", ClientMessageID: "cm-1", TargetSpec: hexA,
		Kind: KindBox, Priority: PriorityNext, Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Ciphertext: strings.Repeat("QUJD", 91)}
	multi := Send{Type: TypeSend, ID: "m1", TargetSpec: "@ops/db", Kind: KindMulti, Nonce: "bg==", Ciphertext: "Yw==",
		Keys:      []MultiKey{{To: hexA, Nonce: "bg==", Box: "Yg=="}, {To: hexB, Nonce: "bg==", Box: "Yg=="}},
		Signature: strings.Repeat("ab", 64), KeyGen: intp(2), BodyVersion: 2, ReplyToID: "x", Mentions: []string{hexA},
		Subtype: "reply", Receipts: boolp(false)}
	hello := Hello{Type: TypeHello, Protocol: 1, MeshID: "mesh", MemberID: "mem", Pubkey: hexA, Timestamp: 1700000000000,
		Challenge: hexB, Signature: strings.Repeat("cd", 64), SessionID: "daemon", Role: RoleControlPlane,
		Presence: boolp(true), PeerType: PeerHuman, DisplayName: "alice", PID: intp(4242), Cwd: "proj", Hostname: "box",
		Channel: "c", Model: "m", Groups: []Group{{Name: "ops", Role: "lead"}, {Name: "a/b/c/d"}}}
	shello := SessionHello{Type: TypeSessionHello, Protocol: 1, MeshID: "mesh", ParentMemberID: "mem", ParentPubkey: hexA,
		SessionPubkey: hexB, Attestation: &Attestation{SessionPubkey: hexB, ParentPubkey: hexA, ExpiresAt: 1700000360000,
			Signature: strings.Repeat("ef", 64)}, Timestamp: 1700000000000, Challenge: hexA, Signature: "s",
		SessionID: "sess-1", DisplayName: "agent", PeerType: PeerAI, PID: intp(1), Groups: []Group{{Name: "dev"}}}
	frames := [][]byte{
		MustEncode(&send), MustEncode(&multi), MustEncode(&hello), MustEncode(&shello),
		MustEncode(&ClientAck{Type: TypeClientAck, ReqID: "a1", MessageIDs: []string{"01J9Z8Q4K2M3N4P5Q6R7S8T9VW", "x"}}),
		[]byte(`{"type":"client_ack","messageId":"01J9Z8Q4K2M3N4P5Q6R7S8T9VW"}`),
		MustEncode(&FetchQueued{Type: TypeFetchQueued, ReqID: "f", Limit: 500}),
		[]byte(`{"type":"list_peers","reqId":"p"}`),
		[]byte(`{"type":"members_list","reqId":"m"}`),
		[]byte(`{"type":"mesh_leave","reqId":"l"}`),
		[]byte(`{"type":"invite_list","reqId":"il"}`),
		[]byte(`{"type":"set_status","reqId":"s","status":"working"}`),
		[]byte(`{"type":"set_summary","reqId":"s","summary":"refactoring the store 🙂"}`),
		[]byte(`{"type":"set_visible","reqId":"s","visible":false}`),
		[]byte(`{"type":"join_group","reqId":"s","name":"ops/db","role":"lead"}`),
		[]byte(`{"type":"leave_group","reqId":"s","name":"ops"}`),
		[]byte(`{"type":"message_status","reqId":"ms","messageId":"01J9Z8Q4K2M3N4P5Q6R7S8T9VW"}`),
		[]byte(`{"type":"message_status","reqId":"ms","clientMessageId":"cm-1"}`),
		[]byte(`{"type":"invite_create","reqId":"ic","token":"eyJ2IjoxfQ.c2ln"}`),
		[]byte(`{"type":"invite_revoke","reqId":"ir","inviteId":"01J9Z8Q4K2M3N4P5Q6R7S8T9VW"}`),
		[]byte(`{"type":"disconnect","reqId":"d","all":true}`),
		[]byte(`{"type":"kick","reqId":"k","staleMs":60000}`),
		[]byte(`{"type":"ban","reqId":"b","target":"bob","reason":"spam"}`),
		[]byte(`{"type":"unban","reqId":"u","target":"aaaaaaaa"}`),
		[]byte(`{"type":"list_bans","reqId":"lb"}`),
		[]byte(`{"type":"set_role","reqId":"sr","target":"bob","role":"admin"}`),
		// Near misses.
		[]byte(`{"type":"send","id":"a","id":"b"}`),
		[]byte(`{"type":"send","keyGen":"1"}`),
		[]byte(`{"Type":"send"}`),
		[]byte("{\"type\":\"send\",\"id\":\"\xff\"}"),
		[]byte(`{"type":"session_hello"}`),
		[]byte(`{"type":"client_ack","messageIds":[]}`),
		[]byte(`{"type":"hello","groups":[],"presence":null,"pid":-1}`),
		[]byte(`{"type":"nope","reqId":"x"}`),
		[]byte(` {"type":"send","x":{"y":[1,{"z":null}]}} `),
		[]byte(`{"type":"send","id":"\u0000\ud83d\ude00"}`),
		[]byte(`null`), []byte(`[]`), []byte(`{}`), []byte(``),
	}
	return frames
}

func brokerSeeds() [][]byte {
	p := samplePush()
	base := MustEncode(&p)
	return [][]byte{
		MustEncode(&Challenge{Type: TypeChallenge, Nonce: hexA, ServerTime: 1, Protocol: 1, BrokerVersion: "dev", BrokerPubkey: hexB, Signature: "s"}),
		MustEncode(&HelloAck{Type: TypeHelloAck, PresenceID: "p", MeshID: "m", MeshName: "n", MemberID: "i", MemberRole: MemberOwner, Features: []string{"box", "multi"}}),
		[]byte(`{"type":"ack","id":"a","messageId":"m","queued":true,"online":1,"pending":1}`),
		[]byte(`{"type":"ack","id":"a","error":{"code":"rate_limited","message":"slow","retryAfterMs":100}}`),
		base,
		EncodePushWithKey(base, &MultiKey{To: hexA, Nonce: "bg==", Box: "Yg=="}),
		[]byte(`{"type":"push","subtype":"system","event":"peer_joined","eventData":{"pubkey":"` + hexA + `","n":[1,2.5,-0,1e300]},"messageId":"m","createdAt":1}`),
		[]byte(`{"type":"receipt","receiptId":"r","messageId":"m","clientMessageId":"c","recipientPubkey":"` + hexA + `","deliveredAt":1}`),
		[]byte(`{"type":"queued","reqId":"q","messages":[{"type":"push","messageId":"m","createdAt":1}, {"a" : 1}],"receipts":[],"more":false}`),
		[]byte(`{"type":"peers","reqId":"p","peers":[{"pubkey":"` + hexA + `","groups":[],"online":true,"visible":true}]}`),
		[]byte(`{"type":"members","reqId":"m","members":[{"memberId":"x","joinedAt":1,"online":false}]}`),
		[]byte(`{"type":"message_status","reqId":"r","messageId":"m","targetSpec":"*","createdAt":1,"recipients":[{"pubkey":"p","displayName":"d","state":"pending"}]}`),
		[]byte(`{"type":"invite","reqId":"r","inviteId":"i","role":"member","expiresAt":1,"maxUses":1,"uses":0,"createdAt":1}`),
		[]byte(`{"type":"invites","reqId":"r","invites":[]}`),
		[]byte(`{"type":"ok","reqId":"r"}`),
		[]byte(`{"type":"error","code":"ambiguous_target","message":"m","candidates":[{"displayName":"a","pubkey":"b","kind":"member"}]}`),
		[]byte(`{"type":"admin_result","reqId":"r","affected":[],"skipped":[{"displayName":"a","pubkey":"b"}]}`),
		[]byte(`{"type":"bans","reqId":"r","bans":[{"displayName":"a","pubkey":"b","revokedAt":1,"reason":""}]}`),
	}
}

// FuzzPeekDecode drives the broker's read path: Peek, then Decode into the
// concrete type for the peeked type. Nothing may panic; a frame Peek accepts
// is well-formed JSON (no duplicates, valid UTF-8); anything that decodes
// re-encodes to a frame that decodes to an equal value (nil and empty
// slices are the same value: `[]` for an optional list is omitted on the way
// out; likewise "", [] and {} in Push.eventData, an omitempty `any`) and
// whose encoding is a fixed point.
func FuzzPeekDecode(f *testing.F) {
	for _, s := range clientSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFrame(t, data, clientFrame)
	})
}

// FuzzDecodeBrokerFrame is FuzzPeekDecode for broker→client frames, the
// client package's read path.
func FuzzDecodeBrokerFrame(f *testing.F) {
	for _, s := range brokerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFrame(t, data, brokerFrame)
	})
}

func checkFrame(t *testing.T, data []byte, frameFor func(string) any) {
	env, err := Peek(data)
	if err != nil {
		if !errors.Is(err, ErrIllShaped) {
			t.Fatalf("Peek error %v does not wrap ErrIllShaped", err)
		}
		return
	}
	if env.Type == "" {
		t.Fatalf("Peek accepted a frame without type: %q", data)
	}
	if !jsontext.Value(data).IsValid() {
		t.Fatalf("Peek accepted JSON that is not well-formed: %q", data)
	}
	if k := jsontext.Value(data).Kind(); k != '{' {
		t.Fatalf("Peek accepted a non-object (%v): %q", k, data)
	}
	v1 := frameFor(env.Type)
	if v1 == nil {
		return
	}
	if err := Decode(data, v1); err != nil {
		if !errors.Is(err, ErrIllShaped) {
			t.Fatalf("Decode error %v does not wrap ErrIllShaped", err)
		}
		return
	}
	rv := reflect.ValueOf(v1).Elem()
	if got := rv.FieldByName("Type").String(); got != env.Type {
		t.Fatalf("decoded type %q, Peek said %q", got, env.Type)
	}
	if f := rv.FieldByName("ReqID"); f.IsValid() && f.String() != env.ReqID {
		t.Fatalf("decoded reqId %q, Peek said %q", f.String(), env.ReqID)
	}
	enc1, err := Encode(v1)
	if err != nil {
		t.Fatalf("re-encoding %T: %v (from %q)", v1, err, data)
	}
	v2 := reflect.New(rv.Type()).Interface()
	if err := Decode(enc1, v2); err != nil {
		t.Fatalf("re-encoded %T does not decode: %v\nin:  %q\nout: %s", v1, err, data, enc1)
	}
	if !sameValue(reflect.ValueOf(v1), reflect.ValueOf(v2)) {
		t.Fatalf("%T changed through re-encoding\nin:   %q\nout:  %s\nv1: %+v\nv2: %+v", v1, data, enc1, v1, v2)
	}
	enc2, err := Encode(v2)
	if err != nil || !sameJSON(enc1, enc2) {
		t.Fatalf("encoding is not a fixed point (%v):\n%s\n%s", err, enc1, enc2)
	}
	env2, err := Peek(enc1)
	if err != nil || env2.Type != env.Type {
		t.Fatalf("Peek(re-encoded) = %+v, %v; want type %q", env2, err, env.Type)
	}
	if !utf8.Valid(enc1) {
		t.Fatalf("re-encoding is not UTF-8: %q", enc1)
	}
	if nullPath := findNull(enc1); nullPath != "" {
		// SessionHello.attestation is a required field without omitempty: a
		// frame that lacked it re-encodes with "attestation":null. The broker
		// never encodes a SessionHello and the client always sets it.
		if _, ok := v1.(*SessionHello); !(ok && nullPath == "attestation") {
			t.Fatalf("re-encoded %T carries null at %s: %s", v1, nullPath, enc1)
		}
	}
}

// sameJSON compares two encodings byte for byte, except that objects decoded
// into `any` (Push.eventData) are maps whose member order Marshal does not
// fix; those are compared as values.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if Decode(a, &x) != nil || Decode(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// findNull returns the name of the first member whose value is JSON null, or
// "" if none.
func findNull(b []byte) string {
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	last := ""
	for {
		tok, err := dec.ReadToken()
		if err == io.EOF {
			return ""
		}
		if err != nil {
			return "<" + err.Error() + ">"
		}
		switch tok.Kind() {
		case 'n':
			if last == "" {
				return "<element>"
			}
			return last
		case '"':
			last = tok.String()
		}
	}
}

// sameValue is reflect.DeepEqual except that a nil slice or map equals an
// empty one, and RawJSON values are compared as JSON values (whitespace
// outside strings is not part of the value).
func sameValue(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	if a.Type() == reflect.TypeFor[RawJSON]() {
		x, y := RawJSON(bytes.Clone(a.Bytes())), RawJSON(bytes.Clone(b.Bytes()))
		if x.Compact() != nil || y.Compact() != nil {
			return bytes.Equal(a.Bytes(), b.Bytes())
		}
		return bytes.Equal(x, y)
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Interface:
		// An `any` field tagged omitempty (Push.eventData) drops a value
		// whose JSON is empty ("", [], {}), so it comes back as nil.
		if a.IsNil() || b.IsNil() {
			return (a.IsNil() || emptyJSON(a.Elem())) && (b.IsNil() || emptyJSON(b.Elem()))
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			bv := b.MapIndex(k)
			if !bv.IsValid() || !sameValue(a.MapIndex(k), bv) {
				return false
			}
		}
		return true
	case reflect.Float32, reflect.Float64:
		return a.Float() == b.Float()
	default:
		return a.Equal(b)
	}
}

// emptyJSON reports whether v encodes as "", [] or {}, which omitempty omits.
func emptyJSON(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String, reflect.Slice, reflect.Map:
		return v.Len() == 0
	}
	return false
}

// FuzzEncodePushWithKey: for any push the broker could build (valid UTF-8
// strings) and any key, the spliced frame is one well-formed object that
// decodes to the push with Key set.
func FuzzEncodePushWithKey(f *testing.F) {
	f.Add("01J9Z8Q4K2M3N4P5Q6R7S8T9VW", "@ops", hexA, "alice", "QUJD", hexB, "bg==", "Yg==", int64(1700000000000), 2, true)
	f.Add("", "", "", "", "", "", "", "", int64(0), 0, false)
	f.Add("m\"}", "}", "\\", "\u2028", "\x00", "\"", "{", "}", int64(-1), -5, true)
	f.Fuzz(func(t *testing.T, id, target, sender, name, ct, to, nonce, box string, createdAt int64, keyGen int, withKeyGen bool) {
		for _, s := range []string{id, target, sender, name, ct, to, nonce, box} {
			if !utf8.ValidString(s) {
				// Encode refuses invalid UTF-8 (see TestEncodeRefusesInvalidUTF8);
				// every string in a push comes from a decoded frame or the store.
				return
			}
		}
		p := Push{Type: TypePush, MessageID: id, Kind: KindMulti, TargetSpec: target, SenderPubkey: sender, SenderName: name,
			Ciphertext: ct, CreatedAt: createdAt}
		if withKeyGen {
			p.KeyGen = &keyGen
		}
		key := &MultiKey{To: to, Nonce: nonce, Box: box}
		base, err := Encode(&p)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		spliced := EncodePushWithKey(base, key)
		if !jsontext.Value(spliced).IsValid() {
			t.Fatalf("spliced frame is not well-formed: %s", spliced)
		}
		var got Push
		if err := Decode(spliced, &got); err != nil {
			t.Fatalf("Decode(spliced): %v\n%s", err, spliced)
		}
		want := p
		want.Key = key
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("spliced decodes to %+v, want %+v", got, want)
		}
	})
}

func TestEncodeRefusesInvalidUTF8(t *testing.T) {
	if b, err := Encode(&Send{Type: TypeSend, ID: "\xff"}); err == nil {
		t.Fatalf("Encode of invalid UTF-8 succeeded: %q", b)
	}
}
