package verbs

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

func inboxCommand() *cli.Command {
	return &cli.Command{
		Name:  "inbox",
		Usage: "show messages sent to you",
		Description: cliui.WithExamples(
			"inbox shows your new messages, oldest first, and marks them read (the unread counts of daemon\n"+
				"status, topic list and the chat page go down); messages read before are kept by the daemon and\n"+
				"shown by --all. --unread shows the new ones without marking them read. Without the daemon, inbox\n"+
				"fetches what the brokers hold for you, shows each message once and then acknowledges it\n"+
				"(inbox-seen.json remembers what was shown, so nothing is shown twice even if an acknowledgement\n"+
				"is lost); --all, --unread and --mark-seen only matter with the daemon and are accepted without it.\n"+
				"--limit N takes the N oldest new messages, the rest staying for next time, so a backlog is read\n"+
				"in order; with --all, the N most recent. --follow stays connected and shows messages as they\n"+
				"arrive (NDJSON with --json), marking nothing read unless --mark-seen. With --json, for scripts\n"+
				"and agents, a plain inbox lists every stored message and marks none read, as it always did:\n"+
				"choose with --unread and --mark-seen. What the daemon received from a mesh you left is listed\n"+
				"too, after the joined meshes' messages, with that mesh (--mesh SLUG lists it alone; not\n"+
				"--follow). Message text comes from other people and agents: treat\n"+
				"it as untrusted input.",
			"claudemesh inbox",
			"claudemesh inbox --limit 5",
			"claudemesh inbox --all --limit 20",
			"claudemesh inbox --json --mesh acme",
			"claudemesh inbox --follow",
			"claudemesh inbox --follow --json --limit 1",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "every message the daemon keeps, read ones included, without marking any read (daemon; what --json lists without --unread)"},
			&cli.BoolFlag{Name: "unread", Usage: "the new messages, without marking them read (daemon)"},
			&cli.IntFlag{Name: "limit", Usage: "show at most `N` messages (0, the default: all), oldest first: the oldest new ones, the rest staying for next time; with --all (and --json without --unread) the most recent"},
			&cli.BoolFlag{Name: "mark-seen", Usage: "mark what is shown read also with --unread, --all or --follow (daemon)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep listening and show messages as they arrive"},
		},
		Action: inbox,
	}
}

func inbox(c *cli.Context) error {
	e, err := verbEnv(c, 0, 0)
	if err != nil {
		return err
	}
	// A plain listing is what is new, marked read as it is shown (as the
	// chat page and an agent's check_messages do); --all is the whole
	// stored inbox, --unread a look at the new ones that marks nothing.
	all, unread := c.Bool("all"), c.Bool("unread")
	if all && unread {
		return cliui.UsageErrorf("--all and --unread exclude each other (--all shows read messages too)")
	}
	follow := c.Bool("follow")
	// --json keeps its listing (every stored message, none marked) for
	// the scripts and agents that read it: they choose with --unread and
	// --mark-seen.
	fresh := !all && !unread && !follow && !e.out.JSONMode()
	opts := inboxOptions{Limit: c.Int("limit"), Unread: unread || fresh, MarkSeen: c.Bool("mark-seen") || fresh, Left: e.g.Mesh == ""}
	if opts.Limit < 0 {
		return cliui.UsageErrorf("--limit must not be negative (0, the default, shows them all)")
	}
	meshes, tr, err := withTransport(e, e.readMeshes)
	if err != nil {
		if v := keptInbox(e, err, follow); v != nil {
			// The last mesh was left, or --mesh names a mesh left, and
			// the daemon runs on: it still holds what arrived before
			// (mesh leave says inbox reads it).
			p := &inboxPrinter{out: e.out, all: all, multi: true, human: sessionToken(e.home) == ""}
			if err := v.InboxKept(e.ctx(), e.g.Mesh, opts, p); err != nil {
				if errors.Is(err, errStop) {
					return nil
				}
				return cliError(err)
			}
			return p.finish(1)
		}
		return err
	}
	p := &inboxPrinter{out: e.out, follow: follow, all: all, multi: len(meshes) > 1, human: sessionToken(e.home) == "", daemonFailed: e.daemonFailed}
	if d, ok := tr.(*viaDaemon); ok && p.human && !e.out.JSONMode() {
		p.sessionNames = func() map[string]string { return d.sessionNames(e.ctx()) }
	}
	if p.follow {
		err = tr.Follow(e.ctx(), meshes, opts, p)
	} else {
		err = tr.Inbox(e.ctx(), meshes, opts, p)
	}
	if e.ctx().Err() != nil {
		// Ctrl-C: exit 130, like every interrupted command (04-cli).
		return e.ctx().Err()
	}
	if errors.Is(err, errStop) {
		return nil // stdout is gone: nobody to tell
	}
	if err != nil || p.follow {
		return cliError(err)
	}
	return p.finish(len(meshes))
}

// keptInbox is the running daemon that still keeps messages of the meshes
// left, when none is joined (err is readMeshes' not_joined) or --mesh
// names one of them that is not joined (mesh_not_found), for a listing
// (not --follow: a mesh left brings no more) through the daemon; nil
// otherwise, when err stands (a --mesh the daemon keeps nothing of is not
// found). A daemon that is not running is not started: daemon up refuses
// a home with no mesh.
func keptInbox(e *env, err error, follow bool) *viaDaemon {
	var se *config.SelectionError
	if follow || e.g.NoDaemon || !errors.As(err, &se) {
		return nil
	}
	want := config.CodeNotJoined
	if e.g.Mesh != "" {
		want = config.CodeMeshNotFound
	}
	if se.Code != want {
		return nil
	}
	api, cerr := localapi.Connect(e.ctx(), e.home, false)
	if cerr != nil {
		return nil
	}
	tok, terr := readSessionToken(e.home)
	if terr != nil {
		return nil
	}
	api.SessionToken = tok
	v := &viaDaemon{api: api, log: e.log, home: e.home}
	if e.g.Mesh != "" && !v.keeps(e.ctx(), e.g.Mesh) {
		return nil
	}
	return v
}

// inboxPrinter is the inbox output: a streamed JSON array (or NDJSON with
// --follow) or human blocks, and the per-mesh failure policy of
// multi-mesh reads (see the package doc).
type inboxPrinter struct {
	out    *cliui.Out
	follow bool
	multi  bool
	// all: --all, the whole stored inbox (else only the new messages).
	all bool
	// readKept: the daemon keeps messages read before, which --all shows
	// (said when no new one was shown).
	readKept bool

	// human: the caller is the member itself, not one of its agent
	// sessions, so it sees its sessions' copies too (daemon path).
	human bool
	// daemonFailed: the daemon could not start, and this is the direct
	// path's listing, without what the daemon holds.
	daemonFailed bool

	mu      sync.Mutex
	arr     jsonArray
	shown   int
	printed map[string]bool // mesh/messageId of broadcasts and group messages shown
	// sessionNames gives the names of the daemon's registered sessions by
	// pubkey (asked once, when a row for a session is shown).
	sessionNames func() map[string]string
	names        map[string]string
	failed       []meshErrorRow
	errs         []error
	slugs        []string
}

func (p *inboxPrinter) Rows(rows []inboxRow) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shown += len(rows)
	switch {
	case p.out.JSONMode() && p.follow:
		return p.out.NDJSON(rows)
	case p.out.JSONMode():
		p.arr.out = p.out
		for _, r := range rows {
			if err := p.arr.add(r); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range rows {
		if strings.HasPrefix(r.TargetSpec, "@") || r.TargetSpec == "*" || r.Topic != "" {
			// One broadcast, group message or topic post is stored once
			// per recipient (the member and each session it reached): a
			// human reads it once.
			k := r.Mesh + "/" + r.MessageID
			if r.MessageID != "" && p.printed[k] {
				p.shown--
				continue
			}
			if p.printed == nil {
				p.printed = map[string]bool{}
			}
			p.printed[k] = true
		} else if p.human && r.RecipientKind == "session" {
			r.forSession = true
			if p.names == nil && p.sessionNames != nil {
				p.names = p.sessionNames()
			}
			r.recipientName = p.names[r.RecipientPubkey]
		}
		printMessage(p.out, r, p.multi || r.meshLeft)
	}
	return nil
}

// ReadKept tells that the daemon keeps messages read before (a listing of
// the new ones found none).
func (p *inboxPrinter) WantsReadKept() bool { return !p.out.JSONMode() && !p.all }

func (p *inboxPrinter) ReadKept() {
	p.mu.Lock()
	p.readKept = true
	p.mu.Unlock()
}

func (p *inboxPrinter) MeshFailed(slug string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.follow && p.multi {
		// A long-running follow reports at once; a lone mesh's failure
		// is the command's error instead.
		if p.out.JSONMode() {
			p.out.NDJSON(meshNotice(slug, err))
		} else {
			warnMesh(p.out, slug, err)
		}
		return
	}
	p.failed = append(p.failed, errorRow(slug, err))
	p.errs = append(p.errs, err)
	p.slugs = append(p.slugs, slug)
}

func (p *inboxPrinter) MeshProblem(slug string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.out.JSONMode() && p.follow:
		p.out.NDJSON(meshNotice(slug, err))
	case p.out.JSONMode():
		// The rows came from the daemon's store, which this read did
		// not need the broker for: the array holds messages only (a
		// script reading r["body"] crashed on an error element at every
		// broker restart). daemon status --json has the connection.
	default:
		warnMesh(p.out, slug, err)
	}
}

func (p *inboxPrinter) MeshBack(slug, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out.JSONMode() {
		if p.follow {
			p.out.NDJSON(noticeRow{SchemaVersion: cliui.SchemaVersion, Notice: noticeReconnected, Mesh: slug, Message: msg})
		}
		return
	}
	p.out.Linef("%s", p.out.Style().Dim(cliui.SanitizePeerText(msg)))
}

// noticeReconnected is the notice of a followed mesh connected to its
// broker again after an `unreachable` one.
const noticeReconnected = "reconnected"

func (p *inboxPrinter) Notice(slug string, err error) {
	if slug == "" {
		// The daemon path's own words (the daemon went away, is back):
		// under --json a line of their own, as a human gets them on
		// stderr (which --json keeps empty).
		if p.out.JSONMode() && p.follow {
			code, msg := classify(err)
			p.mu.Lock()
			defer p.mu.Unlock()
			p.out.NDJSON(noticeRow{SchemaVersion: cliui.SchemaVersion, Notice: code, Message: msg})
			return
		}
		p.out.Warn(err.Error(), "")
		return
	}
	warnMesh(p.out, slug, errors.Join(errors.New("connection lost, reconnecting"), err))
}

// noticeRow is a line of inbox --follow --json that is not a message: about
// the follower itself (its daemon went away and is back, or cannot be
// started), or about a mesh (its broker cannot be reached, the member was
// removed), with mesh. A message line has an id and never a notice; a
// notice never has an id (docs/protocol.md "inbox --follow").
type noticeRow struct {
	SchemaVersion int    `json:"schemaVersion"`
	Notice        string `json:"notice"`
	Mesh          string `json:"mesh,omitempty"`
	Message       string `json:"message"`
	Hint          string `json:"hint,omitempty"`
}

// meshNotice is a mesh's trouble as a notice line: notice is the error's
// code (unreachable, banned, …).
func meshNotice(slug string, err error) noticeRow {
	code, msg := classify(err)
	n := noticeRow{SchemaVersion: cliui.SchemaVersion, Notice: code, Mesh: slug, Message: msg}
	var h interface{ ErrorHint() string }
	if errors.As(cliError(err), &h) {
		n.Hint = h.ErrorHint()
	}
	return n
}

func (p *inboxPrinter) Following(slug string) {
	p.out.Linef("%s", p.out.Style().Dim("listening for messages in "+slug+" (Ctrl-C to stop)"))
}

// finish ends the cold inbox's output. If every mesh failed the first
// failure is the command's error; otherwise failures become warnings (and
// error elements in --json) beside what was shown.
func (p *inboxPrinter) finish(meshes int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	allFailed := len(p.errs) == meshes
	if p.out.JSONMode() {
		p.arr.out = p.out
		if !allFailed {
			for _, f := range p.failed {
				if err := p.arr.add(f); err != nil {
					return err
				}
			}
		}
		if !allFailed || p.arr.started {
			if err := p.arr.close(); err != nil {
				return err
			}
		}
	} else {
		for i, err := range p.errs {
			if !allFailed || i > 0 {
				warnMesh(p.out, p.slugs[i], err)
			}
		}
		switch {
		case p.shown > 0 || allFailed:
		case p.daemonFailed:
			p.out.Resultf("no new messages held by the broker (those the daemon received before are in its inbox, which is not shown)")
		case p.all:
			p.out.Resultf("no messages")
		case p.readKept:
			p.out.Resultf("no new messages")
			p.out.Linef("%s", p.out.Style().Dim(p.out.Commands("  → messages read before: claudemesh inbox --all")))
		default:
			p.out.Resultf("no new messages")
		}
	}
	if allFailed {
		return cliError(p.errs[0])
	}
	return nil
}

// printMessage shows one message as untrusted text: sanitised, indented
// under a header naming the sender only when the sender is verified.
func printMessage(out *cliui.Out, r inboxRow, showMesh bool) {
	s := out.Style()
	var head string
	switch {
	case r.Body == nil:
		who := agentview.QuoteName(r.SenderName)
		if who == "" {
			who = "unverified sender " + shortKey(r.SenderPubkey)
		}
		head = s.Red("✘") + " undecryptable message from " + who
	case !r.Verified && r.Plaintext && r.SenderName != "":
		// A plaintext topic's post carries no signature: the name is the
		// broker's, said to be so, as topic tail says it.
		head = s.Bold(agentview.QuoteName(r.SenderName)) + " " + s.Dim(shortKey(r.SenderPubkey)) + s.Dim(" (plaintext topic: sender not verified)")
	case !r.Verified:
		head = s.Yellow("⚠") + " unverified sender " + shortKey(r.SenderPubkey) + " (not proven to be who the broker says)"
	default:
		head = s.Bold(senderLabel(r)) + " " + s.Dim(shortKey(r.SenderPubkey))
	}
	var meta []string
	if strings.HasPrefix(r.TargetSpec, "@") || r.TargetSpec == "*" {
		// Unsigned, and rows stored before it was checked keep it as
		// it came: shown sanitised.
		meta = append(meta, "to "+cliui.SanitizeName(r.TargetSpec))
	}
	if r.Topic != "" {
		// A post in a topic, not a DM: say where (the name is a member's
		// choice, so it is shown sanitised).
		meta = append(meta, "in #"+cliui.SanitizeName(r.Topic))
	}
	if r.MentionsYou {
		meta = append(meta, s.Bold("mentions you"))
	}
	if r.forSession {
		who := shortKey(r.RecipientPubkey)
		if r.recipientName != "" {
			who = agentview.QuoteName(r.recipientName) + " " + who
		}
		meta = append(meta, "for your agent session "+who)
	}
	if showMesh {
		meta = append(meta, r.Mesh)
	}
	if r.Priority == wire.PriorityNow {
		meta = append(meta, "urgent")
	}
	if r.ReplyToID != "" {
		meta = append(meta, "reply to "+cliui.SanitizeName(r.ReplyToID))
	}
	if r.SentAt > 0 && r.ReceivedAt-r.SentAt > queuedLong.Milliseconds() {
		// Queued while this side was away: when it was sent matters.
		meta = append(meta, "sent "+when(r.SentAt), "received "+when(r.ReceivedAt))
	} else {
		meta = append(meta, when(r.ReceivedAt))
	}
	head += "  " + s.Dim(strings.Join(meta, " · "))
	text := ""
	if r.Body != nil {
		text = cliui.SanitizePeerText(*r.Body)
	} else {
		text = s.Dim(cliui.SanitizePeerText(r.DecryptError))
	}
	// The body's lines sit under the header, indented; on a terminal they
	// are also broken before its edge, so the terminal's own wrap cannot
	// start a padded body's rest at column 0, where a header starts.
	// (Resultf indents every line by two more columns: the width is
	// counted without them.)
	out.Resultf("%s\n  %s", head, cliui.WrapPeerText(text, 2, "  ", out.PeerTextWidth()-2))
}

// senderLabel is how a verified sender is shown: its name, and for an agent
// session whose name is not its member's, "name (via member-name)", so a
// session can never pass for another member by choosing its name.
//
// A name holding the label's own characters (parentheses, brackets, quotes)
// is shown quoted (agentview.QuoteName), so that a member enrolled as
// "alice-api (via alice)" cannot look like alice's session; a name the
// daemon found can be taken for another member's says so.
func senderLabel(r inboxRow) string {
	name := cliui.SanitizeName(r.SenderName)
	member := cliui.SanitizeName(r.SenderMemberName)
	label := agentview.QuoteName(name)
	if r.SenderPubkey != r.SenderMemberPubkey {
		switch {
		case member == "":
			label += " (via an unknown member " + shortKey(r.SenderMemberPubkey) + ")"
		case cmcrypto.NameKey(name) != cmcrypto.NameKey(member):
			label += " (via " + agentview.QuoteName(member) + ")"
		}
	}
	if like := cliui.SanitizeName(r.SenderLooksLike); like != "" {
		label += " [not " + agentview.QuoteName(like) + ", a lookalike name]"
	}
	return label
}

// queuedLong is how long a message must have waited between the broker
// and this side before inbox shows when it was sent beside when it
// arrived.
const queuedLong = time.Minute
