package verbs

import (
	"context"
	"fmt"
	"slices"
	"time"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// topicTransport is the topic verbs' half of the transport (transport.go):
// the daemon (its /v1/topics routes) or a direct broker connection, written
// once behind the same output code. Both implementations of transport
// implement it too; posting is transport.Send to "#name".
type topicTransport interface {
	TopicList(ctx context.Context, meshes []config.Mesh) []meshTopics
	TopicCreate(ctx context.Context, m *config.Mesh, o client.TopicCreateOptions) (*topicRow, error)
	TopicJoin(ctx context.Context, m *config.Mesh, name string) (*topicRow, error)
	TopicLeave(ctx context.Context, m *config.Mesh, name string) error
	TopicMembers(ctx context.Context, m *config.Mesh, name string) ([]topicMemberRow, error)
	// TopicAdd adds a member (pubkey, memberId or display name) with a
	// role ("" = member) and seals the current key for it when this
	// member holds it; it returns the added member's row.
	TopicAdd(ctx context.Context, m *config.Mesh, name, member, role string) (*topicMemberRow, error)
	// TopicRotate makes a new key generation sealed to every member.
	TopicRotate(ctx context.Context, m *config.Mesh, name string) (*topicRow, error)
	// TopicHistory reads one page, newest first, decrypted and verified.
	TopicHistory(ctx context.Context, m *config.Mesh, name string, limit int, before string) (*topicPage, error)
	// TopicMarkRead moves this member's read marker of the topic forward
	// to the post upTo (the broker never moves it back).
	TopicMarkRead(ctx context.Context, m *config.Mesh, name, upTo string) error
	// TopicTail hands the last limit posts, then (with follow) every new
	// one, to sink in order, each once, until ctx ends. It tells sink when
	// it waits for a key and keeps waiting; a running tail also does its
	// member's key duties (re-seals for joiners, rotations).
	TopicTail(ctx context.Context, m *config.Mesh, name string, limit int, follow bool, sink topicSink) error
}

// topicSink receives a tail's output.
type topicSink interface {
	Lines(lines []topicLine) error
	// Waiting says the current key is not held yet (once per wait).
	Waiting(topic string)
	// Unreadable says, once, that n posts stay unreadable: their
	// generations' keys (gens) will not come (lostKey); cur is the
	// topic's current generation.
	Unreadable(topic string, n int, gens []int, cur int)
	// Notice is a non-fatal condition worth telling a human.
	Notice(err error)
	// Connection says that the followed mesh's connection to its broker
	// was lost (notice "unreachable") or is back ("reconnected"), once
	// each per outage; msg says it in words.
	Connection(topic, mesh, notice, msg string)
}

// meshTopics is one mesh's part of `topic list`.
type meshTopics struct {
	Slug string
	Rows []topicRow
	Err  error
}

// topicRow is one element of `topic list --json` (and the answer of
// create, join and rotate).
type topicRow struct {
	Mesh        string `json:"mesh"`
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Visibility  string `json:"visibility"`
	Encrypted   bool   `json:"encrypted"`
	KeyGen      int    `json:"keyGen"`
	MemberCount int    `json:"memberCount"`
	Joined      bool   `json:"joined"`
	Unread      int    `json:"unread"`
	CreatedAt   int64  `json:"createdAt"`
	Role        string `json:"role,omitzero"`
	RekeyNeeded bool   `json:"rekeyNeeded,omitzero"`
	// HasKey: this member holds the current generation's key here (the
	// daemon's keyring, or the seals opened by this command).
	HasKey bool `json:"hasKey"`
}

func topicRowOf(mesh string, t wire.TopicInfo, hasKey bool) topicRow {
	return topicRow{Mesh: mesh, ID: t.ID, Name: t.Name, Description: t.Description, Visibility: t.Visibility,
		Encrypted: t.Encrypted, KeyGen: t.KeyGen, MemberCount: t.MemberCount, Joined: t.Joined, Unread: t.Unread,
		CreatedAt: t.CreatedAt, Role: t.Role, RekeyNeeded: t.RekeyNeeded, HasKey: hasKey}
}

// topicMemberRow is one element of `topic members --json`.
type topicMemberRow struct {
	Mesh          string `json:"mesh"`
	MemberID      string `json:"memberId"`
	Pubkey        string `json:"pubkey"`
	DisplayName   string `json:"displayName"`
	Role          string `json:"role"`
	JoinedAt      int64  `json:"joinedAt"`
	HasCurrentKey bool   `json:"hasCurrentKey"`
}

// topicLine is one NDJSON line of `topic tail --json` and `topic history
// --json` (04-cli: {id, topic, senderName, senderPubkey, senderMemberPubkey?, senderMemberName?, body, keyGen,
// verified, createdAt, replyToId?}); decryptError says why body is empty.
// senderName is empty for an unverified post: it is never shown as from the
// sender it claims.
type topicLine struct {
	SchemaVersion int    `json:"schemaVersion"`
	ID            string `json:"id"`
	Topic         string `json:"topic"`
	SenderName    string `json:"senderName"`
	SenderPubkey  string `json:"senderPubkey"`
	// SenderMemberPubkey and SenderMemberName: the member behind the
	// sending key (itself, or the member that attested an agent session),
	// verified posts only; the name is "" when this side does not know it.
	SenderMemberPubkey string `json:"senderMemberPubkey,omitzero"`
	SenderMemberName   string `json:"senderMemberName,omitzero"`
	Body               string `json:"body"`
	KeyGen             int    `json:"keyGen"`
	Verified           bool   `json:"verified"`
	CreatedAt          int64  `json:"createdAt"`
	ReplyToID          string `json:"replyToId,omitzero"`
	Plaintext          bool   `json:"plaintext,omitzero"`
	DecryptError       string `json:"decryptError,omitzero"`
	keyMissing         bool
	// lost: the key is missing and will not come (lostKey).
	lost bool
}

func lineOf(topic string, m client.TopicMessage) topicLine {
	if m.Topic != "" {
		topic = m.Topic
	}
	l := topicLine{SchemaVersion: 1, ID: m.ID, Topic: topic, SenderName: m.SenderName, SenderPubkey: m.SenderPubkey,
		Body: m.Body, KeyGen: m.KeyGen, Verified: m.Verified, CreatedAt: m.CreatedAt, ReplyToID: m.ReplyToID,
		Plaintext: m.Plaintext, DecryptError: m.DecryptError, keyMissing: m.KeyMissing}
	if m.Verified && !m.Plaintext {
		l.SenderMemberPubkey = m.SenderMemberPubkey
	}
	return l
}

func lineOfAPI(m localapi.TopicMessage) topicLine {
	l := topicLine{SchemaVersion: 1, ID: m.ID, Topic: m.Topic, SenderName: m.SenderName, SenderPubkey: m.SenderPubkey,
		Body: m.Body, KeyGen: m.KeyGen, Verified: m.Verified, CreatedAt: m.CreatedAt, ReplyToID: m.ReplyToID,
		Plaintext: m.Plaintext, DecryptError: m.DecryptError, keyMissing: m.KeyMissing}
	if m.Verified && !m.Plaintext {
		l.SenderMemberPubkey, l.SenderMemberName = m.SenderMemberPubkey, m.SenderMemberName
	}
	return l
}

// topicMemberNames names the members behind the posts of agent sessions on the
// direct path, from the broker's member list: fetched when a member key
// is not in it, at most once every few seconds.
type topicMemberNames struct {
	c       *client.Conn
	names   map[string]string
	fetched time.Time
}

func newTopicMemberNames(c *client.Conn) *topicMemberNames {
	return &topicMemberNames{c: c, names: map[string]string{}}
}

func (n *topicMemberNames) fill(ctx context.Context, lines []topicLine) {
	for i := range lines {
		l := &lines[i]
		if l.SenderMemberPubkey == "" || l.SenderMemberPubkey == l.SenderPubkey {
			l.SenderMemberName = n.names[l.SenderMemberPubkey]
			continue
		}
		name, ok := n.names[l.SenderMemberPubkey]
		if !ok && time.Since(n.fetched) > 5*time.Second {
			n.fetched = time.Now()
			rctx, cancel := context.WithTimeout(ctx, opTimeout)
			if members, err := n.c.MembersList(rctx); err == nil {
				for _, m := range members {
					n.names[m.Pubkey] = m.DisplayName
				}
			}
			cancel()
			name = n.names[l.SenderMemberPubkey]
		}
		l.SenderMemberName = name
	}
}

// topicPage is a page of history, newest first. KeyGen is the topic's
// current key generation (0 when unknown: a daemon that does not say).
type topicPage struct {
	Lines         []topicLine
	More          bool
	WaitingForKey bool
	KeyGen        int
}

// lostKey marks the posts that stay unreadable: no key for their
// generation, which is older than the topic's current one (curGen).
// Members seal only the current generation for each other (TopicKeeper's
// SealPending; a rotation seals the new one), so a key of a past
// generation that this member does not hold now never comes. It returns
// how many it marked and their generations, oldest first.
func lostKey(lines []topicLine, curGen int) (n int, gens []int) {
	for i := range lines {
		l := &lines[i]
		if !l.keyMissing || l.KeyGen >= curGen {
			continue
		}
		l.lost = true
		l.DecryptError = fmt.Sprintf("no key for generation %d of this topic, and none will come: members share only the current generation's key (%d)", l.KeyGen, curGen)
		n++
		if !slices.Contains(gens, l.KeyGen) {
			gens = append(gens, l.KeyGen)
		}
	}
	slices.Sort(gens)
	return n, gens
}

// tailPrinter keeps a tail's output in order and each post once: posts it
// cannot read yet (no key of the current generation, or of a newer one it
// has not fetched) hold back everything after them until the key comes.
// Posts whose key will never come (lostKey) are left out and counted: the
// sink is told once how many.
type tailPrinter struct {
	sink    topicSink
	topic   string
	printed map[string]bool
	lost    map[string]bool
	told    bool
	waiting bool
	// curGen is the topic's current key generation as last read.
	curGen int
}

func newTailPrinter(topic string, curGen int, sink topicSink) *tailPrinter {
	return &tailPrinter{sink: sink, topic: topic, curGen: curGen, printed: map[string]bool{}, lost: map[string]bool{}}
}

// offer prints lines (oldest first) up to the first one still waiting for a
// key, and reports whether all were printed (the caller then says whether
// it waits, with setWaiting). Lines that stay unreadable are skipped.
func (p *tailPrinter) offer(lines []topicLine) (bool, error) {
	for _, l := range lines {
		if !l.keyMissing && l.DecryptError == "" && l.KeyGen > p.curGen {
			p.curGen = l.KeyGen // a post under it opened: it is (or was) current
		}
	}
	lostKey(lines, p.curGen)
	var out []topicLine
	var gens []int
	all := true
	for _, l := range lines {
		if p.printed[l.ID] || p.lost[l.ID] {
			continue
		}
		if l.lost {
			p.lost[l.ID] = true
			if !slices.Contains(gens, l.KeyGen) {
				gens = append(gens, l.KeyGen)
			}
			continue
		}
		if l.keyMissing {
			all = false
			break
		}
		p.printed[l.ID] = true
		out = append(out, l)
	}
	if len(p.lost) > 0 && !p.told {
		p.told = true
		slices.Sort(gens)
		p.sink.Unreadable(p.topic, len(p.lost), gens, p.curGen)
	}
	if len(out) > 0 {
		if err := p.sink.Lines(out); err != nil {
			return all, err
		}
	}
	return all, nil
}

// setWaiting records whether the tail waits for a key, telling the sink
// when a wait begins.
func (p *tailPrinter) setWaiting(w bool) {
	if w && !p.waiting {
		p.sink.Waiting(p.topic)
	}
	p.waiting = w
}

// reversed turns a newest-first page into oldest-first lines.
func reversed(lines []topicLine) []topicLine {
	out := make([]topicLine, len(lines))
	for i, l := range lines {
		out[len(lines)-1-i] = l
	}
	return out
}
