// Package demo is `claudemesh demo`: a one-shot local tour that runs a real
// broker in-process on a temporary store, creates a mesh, enrolls peers with
// signed invites and exchanges a direct message, a broadcast and a group
// message, then proves the broker's store holds only ciphertext. It uses
// exactly the protocol and crypto paths real clients use; nothing is faked.
package demo

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/broker"
	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// Command is `claudemesh demo`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "a local tour: broker + peers, DM, broadcast, @group, a topic; shows the broker holds only ciphertext",
		Description: cliui.WithExamples(
			"Starts a broker in this process on a temporary store (nothing leaves this machine), creates a mesh,\n"+
				"enrolls bob and carol with signed invites, and sends an end-to-end encrypted direct message\n"+
				"(queued while bob is offline), a broadcast and an @dev group message. Then alice creates the topic\n"+
				"#deploys, bob joins it and gets its key re-sealed by alice's client, and both read a post. Finally\n"+
				"it searches the broker's bbolt file for every plaintext it sent and the topic key, and reports that\n"+
				"none is there.",
			"claudemesh demo",
			"go run . demo",
		),
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			out := cliui.OutFrom(c)
			ctx, cancel := context.WithTimeout(c.Context, time.Minute)
			defer cancel()
			// A closed output pipe (claudemesh demo | head) must end the
			// tour through its clean-up, not kill the process with SIGPIPE
			// and leave the temporary broker directory behind: writes then
			// fail with EPIPE, which cancels the tour.
			sigpipe := make(chan os.Signal, 1)
			signal.Notify(sigpipe, syscall.SIGPIPE)
			defer signal.Stop(sigpipe)
			w := &stopWriter{w: out.Stdout(), stop: cancel}
			if out.JSONMode() {
				w.w = io.Discard
			}
			rep, err := RunReport(ctx, w, out.Style())
			if w.err != nil {
				return cliui.Errorf("output_closed", "the demo stopped: its output could not be written (%v)", w.err)
			}
			if err != nil {
				return err
			}
			if out.JSONMode() {
				return out.JSON(rep)
			}
			return nil
		},
	}
}

// stopWriter passes writes on until one fails, then records the error and
// stops the tour.
type stopWriter struct {
	w    io.Writer
	stop func()
	err  error
}

func (s *stopWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
		s.stop()
	}
	return n, err
}

// Report is `demo --json`: what the tour did and what it found in the
// broker's store.
type Report struct {
	OK        bool     `json:"ok"`
	BrokerURL string   `json:"brokerUrl"`
	Mesh      string   `json:"mesh"`
	Steps     []string `json:"steps"`
	Store     struct {
		Bytes           int `json:"bytes"`
		Ciphertexts     int `json:"ciphertexts"`
		PlaintextsFound int `json:"plaintextsFound"`
	} `json:"store"`
}

// peer is one demo identity with its live connection and inbox, and the
// topic key keeper its client runs (topics.go).
type peer struct {
	name   string
	id     client.MeshIdentity
	conn   *client.Conn
	cur    atomic.Pointer[client.Conn]
	inbox  chan *wire.Push
	keeper *client.TopicKeeper
	keys   chan string // topics whose keys the keeper opened
}

// tour holds the demo's state so each step reads as a sentence.
type tour struct {
	w      io.Writer
	st     cliui.Style
	b      *broker.Broker
	meshID string
	texts  []string
	cipher []string // ciphertexts still queued (or in a topic's history), which must be in the store
	keys   [][]byte // topic keys, which must not be in the store in any form
	kept   []string // ciphertexts that stay whatever is read (topic history)
	rep    *Report
}

func (t *tour) step(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	t.rep.Steps = append(t.rep.Steps, text)
	fmt.Fprintf(t.w, "  %s %s\n", t.st.Green("✔"), text)
}

func (t *tour) line(format string, args ...any) {
	fmt.Fprintf(t.w, "    %s\n", fmt.Sprintf(format, args...))
}

func (t *tour) header(s string) { fmt.Fprintf(t.w, "\n  %s\n", t.st.Bold(s)) }

// Run executes the tour, writing a human account to w.
func Run(ctx context.Context, w io.Writer, st cliui.Style) error {
	_, err := RunReport(ctx, w, st)
	return err
}

// RunReport is Run that also returns what the tour did. The temporary
// broker directory is removed whatever happens, a cancelled ctx included.
func RunReport(ctx context.Context, w io.Writer, st cliui.Style) (*Report, error) {
	rep := &Report{Mesh: "demo", Steps: []string{}}
	dir, err := os.MkdirTemp("", "claudemesh-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := run(ctx, w, st, dir, rep); err != nil {
		return nil, err
	}
	rep.OK = true
	return rep, nil
}

func run(ctx context.Context, w io.Writer, st cliui.Style, dir string, rep *Report) error {
	cfg := broker.DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.DataDir = "127.0.0.1:0", "off", filepath.Join(dir, "broker")
	cfg.Version = buildinfo.Version
	b, err := broker.New(cfg)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		b.Close()
		return err
	}
	t := &tour{w: w, st: st, b: b, rep: rep}
	rep.BrokerURL = b.URL()
	closed := false
	defer func() {
		if !closed {
			b.Close()
		}
	}()
	fmt.Fprintf(w, "  %s — a local tour; nothing leaves this machine\n", st.Brand("claudemesh demo"))
	t.header("Setting up")
	t.step("broker listening on %s (store %s)", b.URL(), b.StorePath())

	alice, err := t.createMesh(ctx)
	if err != nil {
		return err
	}
	bob, err := t.enroll(ctx, alice, "bob")
	if err != nil {
		return err
	}
	carol, err := t.enroll(ctx, alice, "carol")
	if err != nil {
		return err
	}
	if err := alice.connect(ctx, nil); err != nil {
		return err
	}
	defer alice.conn.Close()

	t.header("A direct message, queued while bob is offline")
	dmText := "hi bob, the deploy is at 17:00 — alice"
	dmAck, err := t.sendDM(ctx, alice, bob, dmText)
	if err != nil {
		return err
	}
	t.step("alice → bob: the broker acked it as queued (online %d, pending %d)", *dmAck.Online, *dmAck.Pending)
	if err := bob.connect(ctx, []wire.Group{{Name: "dev"}}); err != nil {
		return err
	}
	defer bob.conn.Close()
	if err := carol.connect(ctx, nil); err != nil {
		return err
	}
	defer carol.conn.Close()
	t.step("bob and carol come online (bob in group @dev)")
	if err := t.receive(ctx, bob, dmText); err != nil {
		return err
	}
	if _, err := alice.conn.WaitReceipt(ctx, dmAck.MessageID); err != nil {
		return fmt.Errorf("waiting for the receipt: %w", err)
	}
	t.step("alice got a delivery receipt: the message is delivered, not just accepted")

	t.header("A broadcast to everyone (*)")
	bcText := "standup in 5 minutes, everyone"
	if _, err := t.sendMulti(ctx, alice, "*", bcText, bob, carol); err != nil {
		return err
	}
	for _, p := range []*peer{bob, carol} {
		if err := t.receive(ctx, p, bcText); err != nil {
			return err
		}
	}

	t.header("A group message to @dev")
	grText := "dev: please review the broker PR"
	ack, err := t.sendMulti(ctx, alice, "@dev", grText, bob, carol)
	if err != nil {
		return err
	}
	t.step("alice listed bob and carol; the broker kept only @dev members (pending %d)", *ack.Pending)
	if err := t.receive(ctx, bob, grText); err != nil {
		return err
	}
	select {
	case p := <-carol.inbox:
		return fmt.Errorf("carol, who is not in @dev, received %s", p.MessageID)
	case <-time.After(300 * time.Millisecond):
		t.step("carol (not in @dev) received nothing")
	}

	t.header("Two agent sessions of alice: each its own peer")
	sessions, err := t.sessions(ctx, alice, "alice-api", "alice-web")
	if err != nil {
		return err
	}
	api, web := sessions[0], sessions[1]
	defer api.conn.Close()
	defer web.conn.Close()
	peers, err := web.conn.ListPeers(ctx)
	if err != nil {
		return err
	}
	seen := 0
	for _, p := range peers {
		if p.Role == wire.RoleSession && p.MemberPubkey == alice.id.Member.PublicHex() && p.Attestation != nil &&
			client.VerifyAttestation(t.meshID, p.Attestation) == nil {
			seen++
		}
	}
	if seen != 2 {
		return fmt.Errorf("alice-web sees %d attested sessions of alice, want 2", seen)
	}
	t.step("alice-web lists itself and alice-api, each with its own key, attested by alice's member key")
	sessText := "alice-api: please rerun the failing test"
	s, err := client.SealDM(api.conn.Self().PublicHex(), []byte(sessText), bob.id.Member, client.SendOptions{})
	if err != nil {
		return err
	}
	t.texts = append(t.texts, sessText)
	t.cipher = append(t.cipher, s.Ciphertext)
	if _, err := bob.conn.Send(ctx, s); err != nil {
		return err
	}
	t.step("bob → alice-api's session key")
	if err := t.receive(ctx, api, sessText); err != nil {
		return err
	}
	select {
	case p := <-web.inbox:
		return fmt.Errorf("alice-web received %s, a DM for its sibling", p.MessageID)
	case <-time.After(300 * time.Millisecond):
		t.step("alice-web (the sibling session) received nothing: a session's DMs are its own")
	}
	if err := t.topic(ctx, alice, bob); err != nil {
		return err
	}

	t.header("What the broker stored")
	// A message nobody has read yet is certainly in the store: the
	// ciphertext of a delivered one goes with its last recipient's ack.
	carol.conn.Close()
	laterText := "carol, the retro moved to Friday"
	t.cipher = append(t.cipher[:0], t.kept...)
	if _, err := t.sendDM(ctx, alice, carol, laterText); err != nil {
		return err
	}
	t.step("carol went offline; alice's next message to her waits in the broker's queue")
	path := b.StorePath()
	api.conn.Close()
	web.conn.Close()
	alice.conn.Close()
	bob.conn.Close()
	carol.conn.Close()
	closed = true
	if err := b.Close(); err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// The check means something only if the messages are really in the
	// file: each ciphertext must be found, and no plaintext.
	for _, ct := range t.cipher {
		if !bytes.Contains(data, []byte(ct)) {
			return fmt.Errorf("the broker's store does not hold the ciphertext %s…; nothing to check", ct[:16])
		}
	}
	for _, text := range t.texts {
		if bytes.Contains(data, []byte(text)) {
			return fmt.Errorf("the broker's store contains the plaintext %q", text)
		}
	}
	for _, k := range t.keys {
		for _, form := range [][]byte{k, []byte(hex.EncodeToString(k)), []byte(cmcrypto.EncodeB64(k))} {
			if bytes.Contains(data, form) {
				return fmt.Errorf("the broker's store contains a topic key")
			}
		}
	}
	rep.Store.Bytes, rep.Store.Ciphertexts = len(data), len(t.cipher)
	t.step("%s (%d bytes) holds the ciphertext still queued for carol and the post in #deploys's history", filepath.Base(path), len(data))
	t.step("and none of the %d plaintexts, nor the topic key (raw, hex or base64); delivered messages' ciphertext records were deleted with their last ack", len(t.texts))
	fmt.Fprintf(w, "\n  %s the broker's store holds none of the plaintext: it only ever saw ciphertext.\n", st.Green("✔"))
	return nil
}

func (t *tour) createMesh(ctx context.Context) (*peer, error) {
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	res, err := client.CreateMesh(ctx, t.b.URL(), t.b.OperatorToken(), client.CreateMeshRequest{
		Name: "Demo", Slug: "demo", OwnerPubkey: key.PublicHex(), OwnerDisplayName: "alice"})
	if err != nil {
		return nil, fmt.Errorf("creating the mesh: %w", err)
	}
	t.meshID = res.MeshID
	t.step("mesh %q created; alice owns it (her key never leaves her machine)", res.Slug)
	return &peer{name: "alice", id: client.MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID,
		BrokerURL: res.BrokerURL, BrokerPubkey: res.BrokerPubkey, Member: key}}, nil
}

// enroll invites and joins a new member exactly as `claudemesh invite` and
// `claudemesh join` do: a signed token registered by the owner, verified
// locally by the joiner, enrolled with the joiner's own new key.
func (t *tour) enroll(ctx context.Context, owner *peer, name string) (*peer, error) {
	inv := &cmcrypto.Invite{V: 1, MeshID: owner.id.MeshID, MeshSlug: "demo", MeshName: "Demo",
		BrokerURL: owner.id.BrokerURL, BrokerPubkey: owner.id.BrokerPubkey, InviteID: client.NewID(),
		Role: wire.MemberMember, ExpiresAt: time.Now().Add(time.Hour).UnixMilli(), MaxUses: 1}
	if err := inv.Sign(owner.id.Member); err != nil {
		return nil, err
	}
	token, err := inv.Token()
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, owner.id, client.DialOptions{})
	if err != nil {
		return nil, err
	}
	_, err = c.InviteCreate(ctx, token)
	c.Close()
	if err != nil {
		return nil, fmt.Errorf("registering the invite: %w", err)
	}
	parsed, bare, err := cmcrypto.ParseInvite("ic://join/" + token)
	if err != nil {
		return nil, err
	}
	if err := parsed.Verify(); err != nil {
		return nil, err
	}
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	req, err := client.NewJoinRequest(bare, parsed.MeshID, parsed.InviteID, name, key, time.Now())
	if err != nil {
		return nil, err
	}
	res, err := client.Join(ctx, parsed.BrokerURL, parsed.BrokerPubkey, req)
	if err != nil {
		return nil, fmt.Errorf("%s joining: %w", name, err)
	}
	if res.BrokerPubkey != parsed.BrokerPubkey {
		return nil, errors.New("the broker's key differs from the invite's")
	}
	t.step("%s joined with a signed invite (ic://join/%s…)", name, token[:16])
	return &peer{name: name, id: client.MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID,
		BrokerURL: parsed.BrokerURL, BrokerPubkey: parsed.BrokerPubkey, Member: key}}, nil
}

// connect opens a presence connection that collects pushes; its topic
// keeper acts on the broker's topic events, as a daemon's does.
func (p *peer) connect(ctx context.Context, groups []wire.Group) error {
	p.inbox = make(chan *wire.Push, 16)
	p.keys = make(chan string, 16)
	p.keeper = &client.TopicKeeper{MeshID: p.id.MeshID, Member: p.id.Member, Ring: client.NewTopicKeyring(),
		OnKey: func(topicID string) {
			select {
			case p.keys <- topicID:
			default:
			}
		}}
	c, err := client.Dial(ctx, p.id, client.DialOptions{
		Presence: true, Role: wire.RoleCLI, PeerType: wire.PeerHuman, Groups: groups,
		OnPush:   func(_ []byte, push *wire.Push) { p.inbox <- push },
		OnSystem: func(push *wire.Push) { p.keeper.OnEvent(ctx, push, func() *client.Conn { return p.cur.Load() }) },
	})
	if err != nil {
		return fmt.Errorf("%s connecting: %w", p.name, err)
	}
	p.conn = c
	p.cur.Store(c)
	return nil
}

func (t *tour) sendDM(ctx context.Context, from, to *peer, text string) (*wire.Ack, error) {
	s, err := client.SealDM(to.id.Member.PublicHex(), []byte(text), from.id.Member, client.SendOptions{})
	if err != nil {
		return nil, err
	}
	t.texts = append(t.texts, text)
	t.cipher = append(t.cipher, s.Ciphertext)
	t.line("ciphertext on the wire: %s…", s.Ciphertext[:24])
	return from.conn.Send(ctx, s)
}

func (t *tour) sendMulti(ctx context.Context, from *peer, target, text string, to ...*peer) (*wire.Ack, error) {
	var keys []string
	for _, p := range to {
		keys = append(keys, p.id.Member.PublicHex())
	}
	s, err := client.SealMulti(t.meshID, target, []byte(text), keys, from.id.Member, client.SendOptions{})
	if err != nil {
		return nil, err
	}
	t.texts = append(t.texts, text)
	t.cipher = append(t.cipher, s.Ciphertext)
	ack, err := from.conn.Send(ctx, s)
	if err != nil {
		return nil, err
	}
	t.step("alice → %s: one ciphertext, the content key boxed for each of %d recipients", target, len(keys))
	return ack, nil
}

// receive waits for the next push, decrypts it, checks it and acks it.
func (t *tour) receive(ctx context.Context, p *peer, want string) error {
	select {
	case push := <-p.inbox:
		body, verified, err := p.conn.Open(push)
		if err != nil {
			return fmt.Errorf("%s could not open a message: %w", p.name, err)
		}
		if body != want || !verified {
			return fmt.Errorf("%s received %q (verified %v), want %q", p.name, body, verified, want)
		}
		if err := p.conn.ClientAck(ctx, []string{push.MessageID}); err != nil {
			return err
		}
		t.step("%s received from %s, decrypted and verified: %q", p.name, cliui.SanitizePeerText(push.SenderName), strings.TrimSpace(cliui.SanitizePeerText(body)))
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s waiting for %q: %w", p.name, want, ctx.Err())
	}
}

// sessions opens one agent-session presence per name for member m, as the
// daemon does for each `claudemesh launch`: a key of its own, attested by
// the member key in its session_hello.
func (t *tour) sessions(ctx context.Context, m *peer, names ...string) ([]*peer, error) {
	var out []*peer
	for _, name := range names {
		key, err := cmcrypto.GenerateIdentity()
		if err != nil {
			return nil, err
		}
		id := m.id
		id.Session = &client.SessionCreds{Key: key, SessionID: name, DisplayName: name}
		p := &peer{name: name, id: id, inbox: make(chan *wire.Push, 16)}
		c, err := client.Dial(ctx, id, client.DialOptions{OnPush: func(_ []byte, push *wire.Push) { p.inbox <- push }})
		if err != nil {
			return nil, fmt.Errorf("%s connecting: %w", name, err)
		}
		p.conn = c
		out = append(out, p)
	}
	t.step("alice runs two agent sessions, %s", strings.Join(names, " and "))
	return out, nil
}
