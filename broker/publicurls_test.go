package broker

import (
	"slices"
	"strings"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// TestPublicURLs: with --public-urls the broker answers mesh creation and
// join with brokerUrls (its own URL first) and puts the list in every
// hello_ack; without it brokerUrls is [brokerUrl] and hello_ack has none.
func TestPublicURLs(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	self := "ws://" + addr + "/ws"
	others := []string{"wss://b2.example.com/ws", "wss://b3.example.com/ws"}
	b := startBroker(t, func(c *Config) {
		c.Listen = addr
		c.PublicURL = self
		c.PublicURLs = append(slices.Clone(others), self)
	})
	want := append([]string{self}, others...)
	key, _ := cmcrypto.GenerateIdentity()
	st, body := postJSON(t, b.HTTPURL()+"/v1/admin/meshes", b.OperatorToken(), map[string]string{
		"name": "Team", "slug": "team", "ownerPubkey": key.PublicHex(), "ownerDisplayName": "alice",
	})
	if st != 201 || body["brokerUrl"] != want[0] || !sameList(body["brokerUrls"], want) {
		t.Fatalf("create: %d %v", st, body)
	}
	alice := ident{key: key, meshID: body["meshId"].(string), memberID: body["memberId"].(string), name: "alice"}
	token, c := invite(t, b, alice, "team", "member", 1, time.Hour)
	var info wire.InviteReply
	c.next(&info, wire.TypeInvite)
	st, jbody, _ := join(t, b, token, "bob")
	if st != 200 || !sameList(jbody["brokerUrls"], want) {
		t.Fatalf("join: %d %v", st, jbody)
	}
	r := dial(t, b)
	if ack := r.hello(alice, nil); !slices.Equal(ack.BrokerURLs, want) {
		t.Fatalf("hello_ack brokerUrls %v, want %v", ack.BrokerURLs, want)
	}

	single := startBroker(t, nil)
	st, body = postJSON(t, single.HTTPURL()+"/v1/admin/meshes", single.OperatorToken(), map[string]string{
		"name": "Solo", "slug": "solo", "ownerPubkey": key.PublicHex(), "ownerDisplayName": "alice",
	})
	if st != 201 || !sameList(body["brokerUrls"], []string{single.URL()}) {
		t.Fatalf("single broker's create: %d %v", st, body)
	}
	solo := ident{key: key, meshID: body["meshId"].(string), memberID: body["memberId"].(string), name: "alice"}
	r = dial(t, single)
	if ack := r.hello(solo, nil); ack.BrokerURLs != nil {
		t.Fatalf("a single broker's hello_ack carries brokerUrls %v", ack.BrokerURLs)
	}
}

func sameList(v any, want []string) bool {
	l, ok := v.([]any)
	if !ok || len(l) != len(want) {
		return false
	}
	for i := range l {
		if l[i] != want[i] {
			return false
		}
	}
	return true
}

func TestPublicURLsRefused(t *testing.T) {
	for _, c := range []struct {
		self string
		list string
		want string
	}{
		{"", "ws://a/ws", "needs --public-url"},
		{"ws://a/ws", "ws://b/ws,https://c/ws", "not a ws"},
		{"http://a/ws", "ws://b/ws", "--public-url"},
		{"ws://a/ws", strings.Repeat("ws://x/ws,", 17) + "ws://y/ws," + "ws://z1/ws,ws://z2/ws,ws://z3/ws,ws://z4/ws,ws://z5/ws,ws://z6/ws,ws://z7/ws,ws://z8/ws,ws://z9/ws,ws://z10/ws,ws://z11/ws,ws://z12/ws,ws://z13/ws,ws://z14/ws,ws://z15/ws", "limit"},
	} {
		if _, err := publicURLsFlag(c.self, c.list); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--public-url %q --public-urls %q: %v, want %q", c.self, c.list, err, c.want)
		}
	}
	if urls, err := publicURLsFlag("ws://a/ws", " ws://b/ws , ws://a/ws ,"); err != nil || len(urls) != 2 {
		t.Errorf("a good list: %v %v", urls, err)
	}
	if urls, err := publicURLsFlag("", ""); err != nil || urls != nil {
		t.Errorf("no flag: %v %v", urls, err)
	}
}
