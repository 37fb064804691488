package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
)

func intp(n int) *int    { return &n }
func boolp(b bool) *bool { return &b }

const (
	hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hexB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestDecodeRejectsIllShapedFrames(t *testing.T) {
	cases := []struct {
		name string
		data string
	}{
		{"duplicate key", `{"type":"send","id":"a","id":"b"}`},
		{"duplicate type", `{"type":"send","type":"send"}`},
		{"duplicate unknown key", `{"type":"send","x":1,"x":2}`},
		{"duplicate key in nested object", `{"type":"send","keys":[{"to":"a","to":"b"}]}`},
		{"duplicate key in ignored nested object", `{"type":"send","extra":{"a":1,"a":2}}`},
		{"invalid UTF-8 in value", "{\"type\":\"send\",\"id\":\"\xff\"}"},
		{"invalid UTF-8 in key", "{\"type\":\"send\",\"\xc3\x28\":\"x\"}"},
		{"invalid UTF-8 in unknown value", "{\"type\":\"send\",\"zz\":\"\xed\xa0\x80\"}"},
		{"lone surrogate escape", `{"type":"send","id":"\ud800"}`},
		{"string for int", `{"type":"send","keyGen":"1"}`},
		{"number for string", `{"type":"send","id":1}`},
		{"bool for string", `{"type":"send","targetSpec":true}`},
		{"string for bool", `{"type":"send","receipts":"true"}`},
		{"object for array", `{"type":"send","keys":{"to":"a"}}`},
		{"array of wrong element", `{"type":"send","mentions":[1]}`},
		{"float for int", `{"type":"send","keyGen":1.5}`},
		{"int overflow", `{"type":"send","bodyVersion":99999999999999999999999}`},
		{"trailing garbage", `{"type":"send"} x`},
		{"two objects", `{"type":"send"}{"type":"send"}`},
		{"truncated", `{"type":"send"`},
		{"trailing comma", `{"type":"send",}`},
		{"single quotes", `{'type':'send'}`},
		{"array", `[{"type":"send"}]`},
		{"string", `"send"`},
		{"number", `1`},
		{"bool", `true`},
		{"empty", ``},
		{"whitespace only", "  \n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s Send
			err := Decode([]byte(c.data), &s)
			if err == nil {
				t.Fatalf("Decode(%q) = nil error, decoded %+v", c.data, s)
			}
			if !errors.Is(err, ErrIllShaped) {
				t.Fatalf("Decode(%q) error %v does not wrap ErrIllShaped", c.data, err)
			}
		})
	}
}

// TestDecodeRejectsNull: a frame is a JSON object (01-protocol §1 "One JSON
// object per WebSocket text frame"); a bare `null` is not one, and Decode is
// used on its own (broker/rest.go, client/conn.go) without Peek's
// first-byte check in front of it.
func TestDecodeRejectsNull(t *testing.T) {
	for _, data := range []string{`null`, ` null `} {
		var s Send
		if err := Decode([]byte(data), &s); !errors.Is(err, ErrIllShaped) {
			t.Errorf("Decode(%q) = %v, want ErrIllShaped (a frame must be an object)", data, err)
		}
	}
}

func TestDecodeIsCaseSensitive(t *testing.T) {
	var s Send
	if err := Decode([]byte(`{"Type":"send","ID":"x","targetspec":"y","Kind":"box"}`), &s); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s.Type != "" || s.ID != "" || s.TargetSpec != "" || s.Kind != "" {
		t.Fatalf("miscased names filled fields: %+v", s)
	}
	if _, err := Peek([]byte(`{"Type":"send"}`)); !errors.Is(err, ErrIllShaped) {
		t.Fatalf(`Peek({"Type":"send"}) = %v, want ErrIllShaped (no "type")`, err)
	}
	// Exact names and miscased twins side by side: only the exact one counts
	// (and the twin is not a duplicate).
	if err := Decode([]byte(`{"type":"send","Type":"ack","id":"x","Id":"y"}`), &s); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s.Type != "send" || s.ID != "x" {
		t.Fatalf("got type %q id %q, want send x", s.Type, s.ID)
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	data := `{"type":"client_ack","future":{"nested":[1,2,{"a":null}]},"reqId":"r1","messageIds":["m1","m2"],"zzz":"q"}`
	var a ClientAck
	if err := Decode([]byte(data), &a); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := ClientAck{Type: TypeClientAck, ReqID: "r1", MessageIDs: []string{"m1", "m2"}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("got %+v, want %+v", a, want)
	}
}

func TestDecodeNullLeavesOptionalUnset(t *testing.T) {
	var s Send
	if err := Decode([]byte(`{"type":"send","keyGen":null,"receipts":null,"keys":null}`), &s); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s.KeyGen != nil || s.Receipts != nil || s.Keys != nil {
		t.Fatalf("null filled optional fields: %+v", s)
	}
}

func TestDecodeSendAllFields(t *testing.T) {
	data := `{"type":"send","id":"i1","reqId":"r1","clientMessageId":"c1","targetSpec":"*","kind":"multi",` +
		`"priority":"now","nonce":"bm9uY2U=","ciphertext":"Y3Q=","keys":[{"to":"` + hexA + `","nonce":"bg==","box":"Yg=="}],` +
		`"signature":"sig","keyGen":0,"bodyVersion":2,"replyToId":"p","mentions":["` + hexB + `"],"subtype":"st","receipts":false}`
	var s Send
	if err := Decode([]byte(data), &s); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := Send{Type: TypeSend, ID: "i1", ReqID: "r1", ClientMessageID: "c1", TargetSpec: "*", Kind: KindMulti,
		Priority: PriorityNow, Nonce: "bm9uY2U=", Ciphertext: "Y3Q=",
		Keys:      []MultiKey{{To: hexA, Nonce: "bg==", Box: "Yg=="}},
		Signature: "sig", KeyGen: intp(0), BodyVersion: 2, ReplyToID: "p", Mentions: []string{hexB}, Subtype: "st",
		Receipts: boolp(false)}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", s, want)
	}
	// Pointers keep an explicit zero apart from "absent", and re-encoding
	// keeps them.
	out := MustEncode(&s)
	if !bytes.Contains(out, []byte(`"keyGen":0`)) || !bytes.Contains(out, []byte(`"receipts":false`)) {
		t.Fatalf("explicit zero keyGen/receipts lost in %s", out)
	}
}

func TestPeek(t *testing.T) {
	env, err := Peek([]byte(` {"reqId":"r-1","type":"list_peers","extra":[1]}`))
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	if env != (Envelope{Type: TypeListPeers, ReqID: "r-1"}) {
		t.Fatalf("Peek = %+v", env)
	}
	for _, bad := range []string{
		``, `  `, `null`, `[]`, `"x"`, `42`, `{}`, `{"reqId":"r"}`, `{"type":""}`, `{"type":1}`,
		`{"type":"send","type":"send"}`, `{"type":"send","a":{"b":1,"b":2}}`, "{\"type\":\"send\",\"x\":\"\xff\"}",
		`{"type":"send"`, `{"type":"send"} {}`, `{"type":"send","reqId":5}`,
	} {
		if _, err := Peek([]byte(bad)); !errors.Is(err, ErrIllShaped) {
			t.Errorf("Peek(%q) = %v, want ErrIllShaped", bad, err)
		}
	}
}

func TestEncodeAckSuccessExact(t *testing.T) {
	a := Ack{Type: TypeAck, ID: "a", MessageID: "m", Queued: true, Online: intp(1), Pending: intp(1)}
	got := string(MustEncode(&a))
	want := `{"type":"ack","id":"a","messageId":"m","queued":true,"online":1,"pending":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// Zero counts are information, not absence.
	a = Ack{Type: TypeAck, ID: "a", ReqID: "r", MessageID: "m", Queued: true, Online: intp(0), Pending: intp(0), Duplicate: true}
	got = string(MustEncode(&a))
	want = `{"type":"ack","id":"a","reqId":"r","messageId":"m","queued":true,"online":0,"pending":0,"duplicate":true}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestEncodeAckFailureExact(t *testing.T) {
	a := Ack{Type: TypeAck, ID: "a", Error: &AckError{Code: CodeRateLimited, Message: "slow down", RetryAfterMs: 250}}
	got := string(MustEncode(&a))
	want := `{"type":"ack","id":"a","error":{"code":"rate_limited","message":"slow down","retryAfterMs":250}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	a.Error.RetryAfterMs = 0
	got = string(MustEncode(&a))
	want = `{"type":"ack","id":"a","error":{"code":"rate_limited","message":"slow down"}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if strings.Contains(got, "messageId") || strings.Contains(got, "queued") {
		t.Fatalf("failure ack carries success fields: %s", got)
	}
}

// TestEncodeNeverNull encodes every frame type with all optional fields unset
// and checks no `null` appears: optional fields are omitted (01-protocol §1).
// Required slices of list responses must be `[]`, not null, when empty.
func TestEncodeNeverNull(t *testing.T) {
	frames := []any{
		&Challenge{Type: TypeChallenge},
		&Hello{Type: TypeHello},
		&SessionHello{Type: TypeSessionHello, Attestation: &Attestation{}},
		&HelloAck{Type: TypeHelloAck, Features: []string{}},
		&Send{Type: TypeSend},
		&Ack{Type: TypeAck},
		&Push{Type: TypePush},
		&ClientAck{Type: TypeClientAck},
		&Acked{Type: TypeAcked, MessageIDs: []string{}},
		&Receipt{Type: TypeReceipt},
		&FetchQueued{Type: TypeFetchQueued},
		&Queued{Type: TypeQueued, Messages: []RawJSON{}, Receipts: []Receipt{}},
		&Request{Type: TypeListPeers},
		&Peers{Type: TypePeers, Peers: []Peer{{Groups: []Group{}}}},
		&Members{Type: TypeMembers, Members: []Member{{}}},
		&ProfileUpdate{Type: TypeSetStatus},
		&MessageStatusRequest{Type: TypeMessageStatus},
		&MessageStatus{Type: TypeMessageStatus, Recipients: []RecipientState{{}}},
		&InviteCreate{Type: TypeInviteCreate},
		&InviteRevoke{Type: TypeInviteRevoke},
		&InviteReply{Type: TypeInvite},
		&Invites{Type: TypeInvites, Invites: []InviteInfo{{}}},
		&OK{Type: TypeOK},
		&Error{Type: TypeError},
		&AdminRequest{Type: TypeKick},
		&AdminResult{Type: TypeAdminResult, Affected: []PeerRef{}, Skipped: []PeerRef{}},
		&Bans{Type: TypeBans, Bans: []BanInfo{{}}},
		&AuditQuery{Type: TypeAuditQuery},
		&AuditEntries{Type: TypeAuditEntries, Entries: []AuditEntry{{Payload: RawJSON(`{}`)}}},
		&AuditCheckpoint{Type: TypeAuditCheckpoint},
		&GrantsSet{Type: TypeGrantsSet, Grants: map[string]*[]string{}},
		&Grants{Type: TypeGrants, Grants: map[string][]string{}, Defaults: []string{}},
		&SkillPublish{Type: TypeSkillPublish},
		&SkillRequest{Type: TypeSkillList},
		&Skill{Type: TypeSkill, SkillInfo: SkillInfo{Tags: []string{}}},
		&Skills{Type: TypeSkills, Skills: []SkillInfo{{Tags: []string{}}}},
	}
	for _, f := range frames {
		b := MustEncode(f)
		if bytes.Contains(b, []byte("null")) {
			t.Errorf("%T encodes a null: %s", f, b)
		}
	}
	// Optional fields are absent, spot-checked on the frames with most of them.
	if got := string(MustEncode(&Send{Type: TypeSend, ID: "i", TargetSpec: hexA, Kind: KindBox, Nonce: "n", Ciphertext: "c"})); got !=
		`{"type":"send","id":"i","targetSpec":"`+hexA+`","kind":"box","nonce":"n","ciphertext":"c"}` {
		t.Errorf("minimal send = %s", got)
	}
	if got := string(MustEncode(&Push{Type: TypePush, MessageID: "m", CreatedAt: 5})); got != `{"type":"push","messageId":"m","createdAt":5}` {
		t.Errorf("minimal push = %s", got)
	}
	if got := string(MustEncode(&Hello{Type: TypeHello, Protocol: 1, SessionID: "s"})); got !=
		`{"type":"hello","protocol":1,"meshId":"","memberId":"","pubkey":"","timestamp":0,"challenge":"","signature":"","sessionId":"s"}` {
		t.Errorf("minimal hello = %s", got)
	}
	if got := string(MustEncode(&Member{MemberID: "x", JoinedAt: 1})); got !=
		`{"memberId":"x","pubkey":"","displayName":"","memberRole":"","joinedAt":1,"online":false}` {
		t.Errorf("minimal member row = %s", got)
	}
	// Explicit false/0 behind pointers survives (presence:false means transient).
	if got := string(MustEncode(&Hello{Type: TypeHello, Presence: boolp(false), PID: intp(0)})); !strings.Contains(got, `"presence":false`) || !strings.Contains(got, `"pid":0`) {
		t.Errorf("hello with presence:false pid:0 = %s", got)
	}
}

func TestInviteReplyInlinesInfo(t *testing.T) {
	r := InviteReply{Type: TypeInvite, ReqID: "r", InviteInfo: InviteInfo{InviteID: "i", Role: "member", ExpiresAt: 2, MaxUses: 3, Uses: 1, CreatedAt: 1}}
	got := string(MustEncode(&r))
	want := `{"type":"invite","reqId":"r","inviteId":"i","role":"member","expiresAt":2,"maxUses":3,"uses":1,"createdAt":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var back InviteReply
	if err := Decode([]byte(got), &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func samplePush() Push {
	return Push{
		Type: TypePush, MessageID: "01J0000000000000000000000A", MeshID: "mesh-1", Kind: KindMulti, TargetSpec: "@ops",
		SenderPubkey: hexA, SenderMemberPubkey: hexB, SenderName: "alice",
		SenderAttestation: &Attestation{SessionPubkey: hexA, ParentPubkey: hexB, ExpiresAt: 99, Signature: "s"},
		Priority:          PriorityNext, Nonce: "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25j", Ciphertext: strings.Repeat("Q", 364),
		KeyGen: intp(3), Signature: strings.Repeat("c", 128), BodyVersion: 2, ReplyToID: "01J0000000000000000000000B",
		Mentions: []string{hexB}, ClientMessageID: "cm-1", CreatedAt: 1700000000000,
	}
}

// TestEncodePushWithKey: the spliced frame decodes to exactly the push with
// Key set. Its bytes are NOT those of json-encoding that push: Push declares
// `key` between `ciphertext` and `topic`, while the splice appends it as the
// last member, after `createdAt`. Receivers must therefore not depend on
// member order (JSON does not promise one); the byte-level check below pins
// the splice's own layout (base minus '}' + `,"key":{…}}`).
func TestEncodePushWithKey(t *testing.T) {
	p := samplePush()
	key := &MultiKey{To: hexB, Nonce: "a2V5bm9uY2U=", Box: "Ym94"}
	base := MustEncode(&p)
	spliced := EncodePushWithKey(base, key)

	withKey := p
	withKey.Key = key
	direct := MustEncode(&withKey)

	var a, b Push
	if err := Decode(spliced, &a); err != nil {
		t.Fatalf("Decode(spliced): %v\n%s", err, spliced)
	}
	if err := Decode(direct, &b); err != nil {
		t.Fatalf("Decode(direct): %v", err)
	}
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a, withKey) {
		t.Fatalf("spliced decodes to\n%+v\nwant\n%+v", a, withKey)
	}
	wantBytes := string(base[:len(base)-1]) + `,"key":{"to":"` + hexB + `","nonce":"a2V5bm9uY2U=","box":"Ym94"}}`
	if string(spliced) != wantBytes {
		t.Fatalf("spliced bytes\n%s\nwant\n%s", spliced, wantBytes)
	}
	if bytes.Equal(spliced, direct) {
		t.Fatalf("spliced equals struct encoding; key position changed, update this test's doc")
	}
	if i, j := bytes.Index(direct, []byte(`"key":`)), bytes.Index(direct, []byte(`"ciphertext":`)); i < j {
		t.Fatalf("struct order: key at %d before ciphertext at %d", i, j)
	}
	// Same value, same semantic content: compare as generic JSON too.
	var ga, gb map[string]any
	if err := json.Unmarshal(spliced, &ga); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(direct, &gb); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ga, gb) {
		t.Fatalf("generic JSON differs:\n%v\n%v", ga, gb)
	}
	// A nil key returns the base untouched.
	if got := EncodePushWithKey(base, nil); !bytes.Equal(got, base) {
		t.Fatalf("nil key changed the frame: %s", got)
	}
	// The base is not modified (it is shared by every recipient of a fan-out).
	if !bytes.Equal(base, MustEncode(&p)) {
		t.Fatalf("EncodePushWithKey modified its base")
	}
	// A minimal base (no optional fields) splices to a valid frame too.
	min := MustEncode(&Push{Type: TypePush, MessageID: "m", CreatedAt: 1})
	if got := string(EncodePushWithKey(min, key)); got != `{"type":"push","messageId":"m","createdAt":1,"key":{"to":"`+hexB+`","nonce":"a2V5bm9uY2U=","box":"Ym94"}}` {
		t.Fatalf("minimal splice = %s", got)
	}
}

func TestRoundTripEveryFrame(t *testing.T) {
	frames := []any{
		&Challenge{Type: TypeChallenge, Nonce: hexA, ServerTime: 5, Protocol: 1, BrokerVersion: "v", BrokerPubkey: hexB, Signature: "s"},
		&Hello{Type: TypeHello, Protocol: 1, MeshID: "m", MemberID: "mm", Pubkey: hexA, Timestamp: 3, Challenge: hexB, Signature: "s",
			SessionID: "daemon", Role: RoleControlPlane, Presence: boolp(true), PeerType: PeerAI, DisplayName: "d", PID: intp(7),
			Cwd: "/x", Hostname: "h", Channel: "c", Model: "m", Groups: []Group{{Name: "ops", Role: "lead"}, {Name: "dev"}}},
		&SessionHello{Type: TypeSessionHello, Protocol: 1, MeshID: "m", ParentMemberID: "p", ParentPubkey: hexA, SessionPubkey: hexB,
			Attestation: &Attestation{SessionPubkey: hexB, ParentPubkey: hexA, ExpiresAt: 9, Signature: "s"}, Timestamp: 1,
			Challenge: hexA, Signature: "s", SessionID: "s1", DisplayName: "d", PeerType: PeerAI, PID: intp(1), Groups: []Group{{Name: "a/b"}}},
		&HelloAck{Type: TypeHelloAck, PresenceID: "p", MeshID: "m", MeshName: "n", MemberID: "i", MemberRole: MemberOwner,
			DisplayName: "d", BrokerPubkey: hexA, ServerTime: 1, Features: []string{"box"}},
		&Ack{Type: TypeAck, ID: "a", ReqID: "r", MessageID: "m", Queued: true, Online: intp(0), Pending: intp(2), Duplicate: true},
		func() *Push {
			p := samplePush()
			p.Key = &MultiKey{To: hexA, Nonce: "n", Box: "b"}
			p.Topic = &TopicRef{ID: "t", Name: "n"}
			return &p
		}(),
		&Push{Type: TypePush, Subtype: SubtypeSystem, Event: EventPeerJoined, MessageID: "m", CreatedAt: 1,
			EventData: map[string]any{"pubkey": hexA, "n": 1.5, "list": []any{"x", true}}},
		&ClientAck{Type: TypeClientAck, ReqID: "r", MessageIDs: []string{"a", "b"}, MessageID: "c"},
		&Acked{Type: TypeAcked, ReqID: "r", MessageIDs: []string{"a"}},
		&Receipt{Type: TypeReceipt, ReceiptID: "r", MessageID: "m", ClientMessageID: "c", RecipientPubkey: hexA, DeliveredAt: 4},
		&FetchQueued{Type: TypeFetchQueued, ReqID: "r", Limit: 500},
		&Queued{Type: TypeQueued, ReqID: "r", Messages: []RawJSON{RawJSON(`{"type":"push","messageId":"m","createdAt":1}`)},
			Receipts: []Receipt{{Type: TypeReceipt, ReceiptID: "x"}}, More: true},
		&Peers{Type: TypePeers, ReqID: "r", Peers: []Peer{{Pubkey: hexA, Groups: []Group{}, Online: true, Visible: true,
			Attestation: &Attestation{ExpiresAt: 1}}}},
		&Members{Type: TypeMembers, ReqID: "r", Members: []Member{{MemberID: "m", LastSeenAt: 2, RevokedAt: 3, Online: true}}},
		&ProfileUpdate{Type: TypeSetVisible, ReqID: "r", Visible: boolp(false)},
		&MessageStatusRequest{Type: TypeMessageStatus, ReqID: "r", ClientMessageID: "c"},
		&MessageStatus{Type: TypeMessageStatus, ReqID: "r", MessageID: "m", TargetSpec: "*", CreatedAt: 1,
			Recipients: []RecipientState{{Pubkey: hexA, State: StateDelivered, DeliveredAt: 2}, {Pubkey: hexB, State: StatePending}}},
		&InviteCreate{Type: TypeInviteCreate, ReqID: "r", Token: "tok"},
		&InviteRevoke{Type: TypeInviteRevoke, ReqID: "r", InviteID: "i"},
		&Invites{Type: TypeInvites, ReqID: "r", Invites: []InviteInfo{{InviteID: "i", RevokedAt: 3}}},
		&Error{Type: TypeError, ReqID: "r", Code: CodeAmbiguousTarget, Message: "m", Candidates: []Candidate{{DisplayName: "a", Pubkey: hexA, Kind: "member"}}},
		&AdminRequest{Type: TypeDisconnect, ReqID: "r", All: true, StaleMs: 1000, Reason: "x"},
		&AdminResult{Type: TypeAdminResult, ReqID: "r", Affected: []PeerRef{{DisplayName: "a", Pubkey: hexA}}, Skipped: []PeerRef{}},
		&Bans{Type: TypeBans, ReqID: "r", Bans: []BanInfo{{DisplayName: "a", Pubkey: hexA, RevokedAt: 1, Reason: "r", BannedBy: hexB}}},
		&AuditQuery{Type: TypeAuditQuery, ReqID: "r", Limit: 5, Before: 9, EventType: AuditKick},
		&AuditEntries{Type: TypeAuditEntries, ReqID: "r", More: true, Entries: []AuditEntry{{Seq: 1, EventType: AuditKick,
			ActorPubkey: hexA, Payload: RawJSON(`{"a":1}`), PrevHash: hexA, Hash: hexB, CreatedAt: "2025-11-25T18:00:00.000000000Z"}}},
		&AuditCheckpoint{Type: TypeAuditCheckpoint, ReqID: "r", MeshID: "m", Seq: 3, Hash: hexA, Signature: "s", BrokerPubkey: hexB},
		&GrantsSet{Type: TypeGrantsSet, ReqID: "r", Grants: map[string]*[]string{hexA: {CapDM}, hexB: {}}},
		&Grants{Type: TypeGrants, ReqID: "r", Grants: map[string][]string{hexA: {}}, Defaults: DefaultCaps},
		&SkillPublish{Type: TypeSkillPublish, ReqID: "r", Name: "n", Description: "d", Body: "b", Tags: []string{"t"}},
		&SkillRequest{Type: TypeSkillGet, ReqID: "r", Name: "n"},
		&Skill{Type: TypeSkill, ReqID: "r", SkillInfo: SkillInfo{Name: "n", Tags: []string{"t"}, Size: 1, UpdatedAt: 2}, Body: "b"},
		&Skills{Type: TypeSkills, ReqID: "r", Skills: []SkillInfo{{Name: "n", Tags: []string{}}}},
	}
	for _, f := range frames {
		b, err := Encode(f)
		if err != nil {
			t.Fatalf("Encode(%T): %v", f, err)
		}
		if !bytes.HasPrefix(b, []byte(`{"type":"`)) && reflect.TypeOf(f).Elem().Field(0).Name == "Type" {
			t.Errorf("%T does not start with type: %s", f, b)
		}
		back := reflect.New(reflect.TypeOf(f).Elem())
		if err := Decode(b, back.Interface()); err != nil {
			t.Fatalf("Decode(%T): %v\n%s", f, err, b)
		}
		if !reflect.DeepEqual(back.Interface(), f) {
			t.Errorf("%T round trip\n got %+v\nwant %+v\njson %s", f, back.Elem().Interface(), reflect.ValueOf(f).Elem().Interface(), b)
		}
		env, err := Peek(b)
		if err != nil {
			t.Errorf("Peek(%T): %v", f, err)
		}
		if want := reflect.ValueOf(f).Elem().FieldByName("Type").String(); env.Type != want {
			t.Errorf("Peek(%T).Type = %q, want %q", f, env.Type, want)
		}
	}
}

func TestMustEncodePanicsOnUnencodable(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("MustEncode of a channel did not panic")
		}
	}()
	MustEncode(make(chan int))
}

func TestValidReqID(t *testing.T) {
	good := []string{"a", "r-1", "A.b_c:d-9", strings.Repeat("x", 64), "req:01J", "..", "::"}
	bad := []string{"", strings.Repeat("x", 65), "a b", "a/b", "é", "a\n", "\na", "a\x00", "a+b", "a@b", "a#b"}
	for _, s := range good {
		if !ValidReqID(s) {
			t.Errorf("ValidReqID(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidReqID(s) {
			t.Errorf("ValidReqID(%q) = true", s)
		}
	}
}

func TestValidSessionID(t *testing.T) {
	good := []string{"daemon", "cli-abc", "S.1_2-3", strings.Repeat("z", 64)}
	bad := []string{"", strings.Repeat("z", 65), "a:b", "a b", "a/b", "x\n", "ß"}
	for _, s := range good {
		if !ValidSessionID(s) {
			t.Errorf("ValidSessionID(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidSessionID(s) {
			t.Errorf("ValidSessionID(%q) = true", s)
		}
	}
}

func TestValidGroup(t *testing.T) {
	seg32 := "a" + strings.Repeat("b", 31)
	good := []string{"ops", "0", "a-b_c", "ops/db", "a/b/c/d", seg32, seg32 + "/" + seg32 + "/" + seg32 + "/" + seg32}
	bad := []string{
		"", "Ops", "-ops", "_ops", "ops/", "/ops", "ops//db", "a/b/c/d/e", seg32 + "x", "a/" + seg32 + "x",
		"a b", "a.b", "a/-b", "ops\n", "é",
	}
	for _, s := range good {
		if !ValidGroup(s) {
			t.Errorf("ValidGroup(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidGroup(s) {
			t.Errorf("ValidGroup(%q) = true", s)
		}
	}
}

func TestValidTopicName(t *testing.T) {
	name64 := "t" + strings.Repeat("x", 63)
	good := []string{"general", "0day", "a-b_c", name64}
	bad := []string{"", name64 + "x", "General", "-x", "_x", "a/b", "a b", "a.b", "x\n"}
	for _, s := range good {
		if !ValidTopicName(s) {
			t.Errorf("ValidTopicName(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidTopicName(s) {
			t.Errorf("ValidTopicName(%q) = true", s)
		}
	}
}

func TestValidULID(t *testing.T) {
	good := []string{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "00000000000000000000000000", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"}
	bad := []string{
		"", "01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAVX", "01arz3ndektsv4rrffq69g5fav",
		"01ARZ3NDEKTSV4RRFFQ69G5FAI", "01ARZ3NDEKTSV4RRFFQ69G5FAL", "01ARZ3NDEKTSV4RRFFQ69G5FAO", "01ARZ3NDEKTSV4RRFFQ69G5FAU",
		"01ARZ3NDEKTSV4RRFFQ69G5FA-", "01ARZ3NDEKTSV4RRFFQ69G5FA\n",
	}
	for _, s := range good {
		if !ValidULID(s) {
			t.Errorf("ValidULID(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidULID(s) {
			t.Errorf("ValidULID(%q) = true", s)
		}
	}
}

func TestIsHex(t *testing.T) {
	if !IsHex(hexA, 64) || !IsHex("0123456789abcdef", 16) || !IsHex("", 0) {
		t.Error("IsHex rejects valid lowercase hex")
	}
	for _, c := range []struct {
		s string
		n int
	}{
		{strings.ToUpper(hexA), 64},
		{"0123456789ABCDEF", 16},
		{"0123456789abcdeF", 16},
		{hexA, 63},
		{hexA, 65},
		{hexA[:63] + "g", 64},
		{hexA[:63] + " ", 64},
		{"0x" + hexA[:62], 64},
		{"", 64},
	} {
		if IsHex(c.s, c.n) {
			t.Errorf("IsHex(%q, %d) = true", c.s, c.n)
		}
	}
}

func TestValidText(t *testing.T) {
	good := []struct {
		s string
		n int
	}{
		{"", 0}, {"hello world", 11}, {"/home/ü/proj", 13}, {"日本", 6}, {"emoji 🙂", 10}, {"\u00a0nbsp", 10}, {"~", 1},
	}
	for _, c := range good {
		if !ValidText(c.s, c.n) {
			t.Errorf("ValidText(%q, %d) = false", c.s, c.n)
		}
	}
	bad := []struct {
		s string
		n int
	}{
		{"hello", 4},         // over length
		{"日本", 5},            // 6 bytes, limit counts bytes not runes
		{"a\tb", 10},         // tab
		{"a\nb", 10},         // newline
		{"a\rb", 10},         // CR
		{"\x00", 10},         // NUL
		{"\x1b[31m", 10},     // ESC (terminal escape)
		{"a\x7f", 10},        // DEL
		{"a\u0085b", 10},     // C1 NEL
		{"a\u009bb", 10},     // C1 CSI
		{"\xff", 10},         // invalid UTF-8
		{"a\xc3", 10},        // truncated sequence
		{"\xed\xa0\x80", 10}, // encoded surrogate
	}
	for _, c := range bad {
		if ValidText(c.s, c.n) {
			t.Errorf("ValidText(%q, %d) = true", c.s, c.n)
		}
	}
}

// TestPeekSalvagesReqID: when a frame is ill-shaped after its reqId, Peek
// still returns the reqId it read (with the error), so the broker's error
// frame can be correlated. Callers must validate it before echoing it: the
// salvaged value has not been checked against the reqId pattern.
func TestPeekSalvagesReqID(t *testing.T) {
	env, err := Peek([]byte(`{"type":"send","reqId":"r1","id":}`))
	if !errors.Is(err, ErrIllShaped) {
		t.Fatalf("Peek = %v, want ErrIllShaped", err)
	}
	if env.ReqID != "r1" {
		t.Fatalf("salvaged reqId %q, want r1", env.ReqID)
	}
	env, err = Peek([]byte(`{"reqId":"not a valid reqId!","type":"send","type":"x"}`))
	if err == nil || env.ReqID != "not a valid reqId!" || ValidReqID(env.ReqID) {
		t.Fatalf("Peek = %+v, %v", env, err)
	}
}

func TestPeekFields(t *testing.T) {
	for _, c := range []struct{ frame, id, reqID string }{
		{`{"type":"send","id":"a","reqId":"b","ciphertext":"zz"}`, "a", "b"},
		{`{"ciphertext":"zz","keys":[{"k":"v"}],"reqId":"b","type":"send","id":"a"}`, "a", "b"},
		{`{"type":"send","id":7,"reqId":"b"}`, "", "b"},
		{`{"type":"send","id":"a"`, "a", ""},
		{`{{{{`, "", ""},
		{`[]`, "", ""},
	} {
		f := PeekFields([]byte(c.frame), "id", "reqId")
		if f[0] != c.id || f[1] != c.reqID {
			t.Errorf("%s: %q, want %q %q", c.frame, f, c.id, c.reqID)
		}
	}
}
