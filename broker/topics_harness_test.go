package broker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"claudemesh/client"
	"claudemesh/wire"
)

// topicPeer is a member connected through the real client library, with a
// TopicKeeper acting on the broker's topic events as the daemon's does.
type topicPeer struct {
	t      *testing.T
	id     ident
	conn   *client.Conn
	cur    atomic.Pointer[client.Conn]
	keeper *client.TopicKeeper
	pushes chan *wire.Push
	keys   chan string // topic ids whose keys were opened
}

func (p *topicPeer) identity(b *Broker) client.MeshIdentity {
	return client.MeshIdentity{MeshID: p.id.meshID, MemberID: p.id.memberID, BrokerURL: b.URL(), BrokerPubkey: b.PublicKey(), Member: p.id.key}
}

// connectPeer dials id as a member presence (or a transient connection)
// whose keeper reacts to topic events.
func connectPeer(t *testing.T, b *Broker, id ident, presence bool) *topicPeer {
	t.Helper()
	p := &topicPeer{t: t, id: id, pushes: make(chan *wire.Push, 1000), keys: make(chan string, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p.keeper = &client.TopicKeeper{MeshID: id.meshID, Member: id.key, Ring: client.NewTopicKeyring(), Jitter: time.Millisecond,
		OnKey: func(topicID string) {
			select {
			case p.keys <- topicID:
			default:
			}
		}}
	opts := client.DialOptions{Presence: presence, Role: wire.RoleCLI,
		OnPush: func(_ []byte, push *wire.Push) { p.pushes <- push },
		OnSystem: func(push *wire.Push) {
			p.keeper.OnEvent(ctx, push, func() *client.Conn { return p.cur.Load() })
		}}
	c, err := client.Dial(ctx, p.identity(b), opts)
	if err != nil {
		t.Fatalf("%s dial: %v", id.name, err)
	}
	p.conn = c
	p.cur.Store(c)
	t.Cleanup(func() { c.Close() })
	return p
}

func (p *topicPeer) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	p.t.Cleanup(cancel)
	return ctx
}

// create makes a topic and keeps its first key.
func (p *topicPeer) create(name string, o client.TopicCreateOptions) wire.TopicInfo {
	p.t.Helper()
	o.Name = name
	info, key, err := p.conn.TopicCreate(p.ctx(), o)
	if err != nil {
		p.t.Fatalf("%s creates %s: %v", p.id.name, name, err)
	}
	if key != nil {
		p.keeper.Ring.Put(info.ID, 1, key)
	}
	return *info
}

// topic reads the current state of a topic by name.
func (p *topicPeer) topic(name string) wire.TopicInfo {
	p.t.Helper()
	list, err := p.conn.TopicList(p.ctx())
	if err != nil {
		p.t.Fatal(err)
	}
	for _, t := range list {
		if t.Name == name {
			return t
		}
	}
	p.t.Fatalf("%s does not see topic %s in %+v", p.id.name, name, list)
	return wire.TopicInfo{}
}

// post seals a post under the given generation with the keyring's key.
func (p *topicPeer) post(t wire.TopicInfo, gen int, text string) (*wire.Ack, error) {
	p.t.Helper()
	key := p.keeper.Ring.Get(t.ID, gen)
	if key == nil && t.Encrypted {
		p.t.Fatalf("%s holds no key %d of %s", p.id.name, gen, t.Name)
	}
	s, err := client.SealTopicPost(p.id.meshID, t.ID, gen, key, []byte(text), p.id.key, client.SendOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	return p.conn.Send(p.ctx(), s)
}

// waitKey waits until the keyring holds generation gen of a topic.
func (p *topicPeer) waitKey(topicID string, gen int) {
	p.t.Helper()
	deadline := time.After(10 * time.Second)
	for !p.keeper.Ring.Has(topicID, gen) {
		select {
		case <-p.keys:
		case <-deadline:
			p.t.Fatalf("%s never got key %d of %s", p.id.name, gen, topicID)
		}
	}
}

// nextTopicPush waits for the next live topic push.
func (p *topicPeer) nextTopicPush() *wire.Push {
	p.t.Helper()
	for {
		select {
		case push := <-p.pushes:
			if push.Kind == wire.KindTopic {
				return push
			}
		case <-time.After(10 * time.Second):
			p.t.Fatalf("%s got no topic push", p.id.name)
			return nil
		}
	}
}

// history reads a page of history newest first and opens it for topicID.
func (p *topicPeer) history(topicID string, page client.HistoryPage) ([]client.TopicMessage, bool) {
	p.t.Helper()
	h, err := p.conn.TopicHistory(p.ctx(), topicID, page)
	if err != nil {
		p.t.Fatal(err)
	}
	var out []client.TopicMessage
	for _, m := range h.Messages {
		out = append(out, client.OpenTopicPush(m.Push, p.id.meshID, topicID, func(g int) *[32]byte { return p.keeper.Ring.Get(topicID, g) }))
	}
	return out, h.More
}

func (p *topicPeer) open(push *wire.Push, topicID string) client.TopicMessage {
	return client.OpenTopicPush(push, p.id.meshID, topicID, func(g int) *[32]byte { return p.keeper.Ring.Get(topicID, g) })
}

// topicMesh makes a mesh whose owner is the first name and the others
// members, each connected as a presence.
func topicMesh(t *testing.T, b *Broker, slug string, names ...string) []*topicPeer {
	t.Helper()
	owner := createMesh(t, b, slug, names[0])
	ids := []ident{owner}
	for _, n := range names[1:] {
		ids = append(ids, addMember(t, b, owner, slug, n))
	}
	peers := make([]*topicPeer, len(ids))
	for i, id := range ids {
		peers[i] = connectPeer(t, b, id, true)
	}
	return peers
}

// joinAndWaitKey has each peer join the topic and waits until a key holder
// (the creator's keeper) has sealed generation 1 for it.
func joinAndWaitKey(t *testing.T, topic wire.TopicInfo, peers ...*topicPeer) {
	t.Helper()
	for _, p := range peers {
		if err := p.conn.TopicJoin(p.ctx(), topic.Name); err != nil {
			t.Fatal(err)
		}
		p.waitKey(topic.ID, 1)
	}
}

// errCodeOf is a client error's code.
func errCodeOf(err error) string { return client.CodeOf(err) }
