package verbs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

func sendCommand() *cli.Command {
	return &cli.Command{
		Name:      "send",
		Usage:     "send an end-to-end encrypted message",
		ArgsUsage: "TO MESSAGE...",
		Description: cliui.WithExamples(
			"TO is a display name (members first, then agent sessions), a full pubkey, a pubkey prefix of 8+ hex,\n"+
				"@group (connected peers in the group or a subgroup), or * (everyone: connected peers now, offline\n"+
				"members queued). MESSAGE words are joined with single spaces; a lone - reads the message from stdin\n"+
				"(one trailing newline dropped). At most 64 KiB.\n"+
				"Status: sent (pushed to a connected recipient), queued (held by the broker for an offline one) or,\n"+
				"with --wait, delivered (the recipient's client acknowledged it). Through the daemon it is accepted (in\n"+
				"its outbox; the daemon sends it), and a refusal by the broker (the recipient blocked you, or the key is\n"+
				"nobody's any more) shows later in message status or daemon outbox list; --wait reports it, with its\n"+
				"exit code.\n"+
				"Ctrl-C (SIGINT, SIGTERM) before the message is handed to the daemon or the broker ends send with\n"+
				"nothing sent. Once it is, a first Ctrl-C keeps waiting for their answer, up to 30 s, so the message is\n"+
				"neither lost nor sent twice, and prints it; a second one stops waiting and says how to check. With\n"+
				"--wait, a Ctrl-C that came before the answer, or during the wait for the delivery after it, ends send\n"+
				"(exit 130) with an error that names the message it sent (--json: the error interrupted, with messageId\n"+
				"and clientMessageId). With --wait, exit 0 means delivered; exit 7 (wait_timeout) that it was not\n"+
				"delivered within --wait-timeout, or never will be (nobody could be reached, or a retry's delivery expired).\n"+
				"--id makes a retry safe on the same path while the id is remembered (the daemon's: 30 days in its\n"+
				"outbox; --no-daemon's direct one: the broker's idempotency window, for a message --queue-ttl + 24 h,\n"+
				"8 days by default, for a #topic post as long as the broker keeps it, --topic-retention, by default\n"+
				"forever): the same MESSAGE to the same TO again is answered as a duplicate of the first (its messageId;\n"+
				"--json: duplicate:true) and nothing is sent again; another MESSAGE under the id is refused\n"+
				"(idempotency_key_reused, exit 6), and so, on the direct path, is an @group or * send whose recipients\n"+
				"changed in between, or a #topic post after the topic's key was rotated. After the window the id is\n"+
				"free again: the same message is taken again (on the direct path, recipients drop it as a replay).\n"+
				"Use a new id for a new message.",
			"claudemesh send bob \"the build is green\"",
			"claudemesh send '*' deploy starts in 5 minutes --priority now",
			"claudemesh send @ops \"disk almost full on db-2\" --json",
			"git log -1 | claudemesh send 3f9a12c4 -",
			"claudemesh send alice \"ready?\" --wait --wait-timeout 2m",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "priority", Usage: "now (interrupts), next (default) or low"},
			&cli.StringFlag{Name: "reply-to", Usage: "the message `ID` this answers: its messageId (inbox), or for a message or post of yours the id send printed"},
			&cli.StringFlag{Name: "id", Usage: "your `CLIENT_ID` for the message (idempotency key, 1-64 of A-Za-z0-9._:-): a retry with it is a duplicate while the id is remembered (--no-daemon: the broker's idempotency window, 8 days by default; see above)"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until it is delivered: stored by every recipient's client (exit 7 on timeout)"},
			&cli.StringFlag{Name: "wait-timeout", Value: "30s", Usage: "how long --wait waits, a `DUR`"},
		},
		Action: send,
	}
}

// sendJSON is `send --json` (04-cli).
type sendJSON struct {
	OK              bool       `json:"ok"`
	MessageID       string     `json:"messageId,omitzero"`
	ClientMessageID string     `json:"clientMessageId"`
	Status          string     `json:"status"`
	Via             string     `json:"via"`
	Target          targetJSON `json:"target"`
	// Duplicate: the message was already taken under this clientMessageId
	// (a retry): messageId is the first send's, nothing was sent again.
	Duplicate bool `json:"duplicate,omitzero"`
}

// MarshalJSONTo writes s as json.Marshal's reflection over its fields
// does (TestSendJSONAsReflection), without that reflection: `send --json`
// is what agents run, one process per message, and json.Marshal's first
// use in a process costs ~0.1 ms (cliui.Out.JSON gives such a value an
// encoder directly).
func (s sendJSON) MarshalJSONTo(e *jsontext.Encoder) error {
	toks := make([]jsontext.Token, 0, 24)
	str := func(name, value string) { toks = append(toks, jsontext.String(name), jsontext.String(value)) }
	toks = append(toks, jsontext.BeginObject, jsontext.String("ok"), jsontext.Bool(s.OK))
	if s.MessageID != "" {
		str("messageId", s.MessageID)
	}
	str("clientMessageId", s.ClientMessageID)
	str("status", s.Status)
	str("via", s.Via)
	toks = append(toks, jsontext.String("target"), jsontext.BeginObject)
	str("kind", s.Target.Kind)
	str("targetSpec", s.Target.TargetSpec)
	if s.Target.DisplayName != "" {
		str("displayName", s.Target.DisplayName)
	}
	if s.Target.Online != nil {
		toks = append(toks, jsontext.String("online"), jsontext.Bool(*s.Target.Online))
	}
	if s.Target.Status != "" {
		str("status", s.Target.Status)
	}
	toks = append(toks, jsontext.EndObject)
	if s.Duplicate {
		toks = append(toks, jsontext.String("duplicate"), jsontext.True)
	}
	toks = append(toks, jsontext.EndObject)
	for _, t := range toks {
		if err := e.WriteToken(t); err != nil {
			return err
		}
	}
	return nil
}

// readMessage joins MESSAGE words, or reads stdin for a lone "-", and
// refuses what no recipient could receive before anything is dialled.
func readMessage(args []string, stdin io.Reader) (string, error) {
	var body string
	if len(args) == 1 && args[0] == "-" {
		data, err := io.ReadAll(io.LimitReader(stdin, client.MaxPlaintext+2))
		if err != nil {
			return "", cliui.Errorf(cliui.CodeInvalidArgument, "reading the message from stdin: %v", err)
		}
		body = string(data)
		if strings.HasSuffix(body, "\r\n") {
			body = body[:len(body)-2]
		} else {
			body = strings.TrimSuffix(body, "\n")
		}
	} else {
		body = strings.Join(args, " ")
	}
	if len(body) > client.MaxPlaintext {
		return "", cliui.Errorf(wire.CodePayloadTooLarge, "the message is over %d KiB (the limit of one message)", client.MaxPlaintext>>10).
			WithHint("split it, or send a path or link instead")
	}
	if strings.TrimSpace(body) == "" {
		return "", cliui.UsageErrorf("empty message")
	}
	if !utf8.ValidString(body) {
		// Checked here, before either path sees it: the daemon's API
		// (JSON) cannot carry it, and the broker's recipients could not
		// read it.
		return "", cliui.Errorf(cliui.CodeInvalidArgument, "message is not valid UTF-8").
			WithHint("send text; for binary data send a path or link instead")
	}
	return body, nil
}

func send(c *cli.Context) error {
	e, err := verbEnv(c, 2, -1)
	if err != nil {
		return err
	}
	args := c.Args().Slice()
	req := sendRequest{To: args[0], Priority: c.String("priority"), ReplyTo: c.String("reply-to"),
		ClientMessageID: c.String("id"), Wait: c.Bool("wait")}
	if req.WaitTimeout, err = cliui.ParseDuration(c.String("wait-timeout")); err != nil {
		return err
	}
	if req.Wait && req.WaitTimeout <= 0 {
		return cliui.UsageErrorf("--wait-timeout must be positive")
	}
	if !req.Wait && c.IsSet("wait-timeout") {
		// It would be ignored: the send would not wait at all. A hint
		// repeating a value that is refused anyway was a dead end.
		if req.WaitTimeout <= 0 {
			return cliui.UsageErrorf("--wait-timeout %s is not a time to wait (it must be positive), and it applies only with --wait", c.String("wait-timeout")).
				WithHint("to wait for the delivery: claudemesh send PEER MESSAGE --wait --wait-timeout 30s")
		}
		return cliui.UsageErrorf("--wait-timeout applies only with --wait").
			WithHint("add --wait to wait for the delivery: claudemesh send PEER MESSAGE --wait --wait-timeout " + c.String("wait-timeout"))
	}
	if strings.TrimSpace(req.To) == "#" {
		return cliui.UsageErrorf("'#' needs a topic name: claudemesh send '#NAME' MESSAGE").
			WithHint("claudemesh topic list shows the topics you can post to")
	}
	if req.Wait && strings.HasPrefix(req.To, "#") {
		return cliui.UsageErrorf("--wait does not apply to topic posts: they have no delivery receipts (read the topic with claudemesh topic tail)")
	}
	return ownHints(cliError(sendAndPrint(e, c, req, args[1:])), e.home)
}

// sendAndPrint checks the fields of req every send shares, reads the
// message from msg (or stdin), sends it and prints the result: send and
// topic post.
func sendAndPrint(e *env, c *cli.Context, req sendRequest, msg []string) error {
	var err error
	for _, f := range []string{"priority", "id", "reply-to", "mention"} {
		// Given, but empty ("" from an unset shell variable): not the
		// same as leaving it out, which it was taken for.
		if c.IsSet(f) && strings.TrimSpace(c.String(f)) == "" && len(c.StringSlice(f)) == 0 {
			return cliui.UsageErrorf("--%s is empty", f)
		}
	}
	switch req.Priority {
	case "", wire.PriorityNow, wire.PriorityNext, wire.PriorityLow:
	default:
		return cliui.UsageErrorf("--priority must be now, next or low, not %q", req.Priority)
	}
	if req.ReplyTo != "" && !wire.ValidReqID(req.ReplyTo) {
		return cliui.UsageErrorf("--reply-to %q is not a message id", cliui.Clip(req.ReplyTo))
	}
	if req.ClientMessageID != "" && !wire.ValidReqID(req.ClientMessageID) {
		return cliui.UsageErrorf("--id must be 1 to 64 characters of A-Za-z0-9._:-")
	}
	if !utf8.ValidString(req.To) {
		return cliui.UsageErrorf("%s is not valid UTF-8: no name or key could match it", cliui.SanitizePeerText(strings.ToValidUTF8(req.To, "\uFFFD")))
	}
	for _, mn := range req.Mentions {
		if !utf8.ValidString(mn) {
			return cliui.UsageErrorf("--mention %s is not valid UTF-8: no name or key could match it", cliui.SanitizePeerText(strings.ToValidUTF8(mn, "\uFFFD")))
		}
	}
	stdin := io.Reader(os.Stdin)
	if c.App != nil && c.App.Reader != nil {
		stdin = c.App.Reader
	}
	if req.Body, err = readMessage(msg, stdin); err != nil {
		return err
	}
	m, tr, err := withTransport(e, e.writeMesh)
	if err != nil {
		return err
	}
	res, err := tr.Send(e.ctx(), m, req)
	if res != nil && err != nil && !e.out.JSONMode() {
		// --wait timed out: the message went out, say so before the error.
		printSent(e, m.Slug, res)
	}
	if err != nil {
		err = cliError(err)
		var ce *cliui.Error
		if errors.As(err, &ce) && ce.Code == wire.CodeUnknownTarget && strings.HasPrefix(req.To, "@") {
			ce.Hint = "@group reaches connected peers only; they join with claudemesh status group join NAME"
		}
		if ce != nil && ce.Code == wire.CodeIdempotencyKeyReused && req.ClientMessageID != "" {
			// Not necessarily "a different message": the same one sent
			// before on the other path (the daemon's outbox and a direct
			// connection each know only their own ids) is refused too.
			id := config.ShellQuote(req.ClientMessageID)
			ce.Message = "nothing was sent: --id " + req.ClientMessageID + " was already used, for another message or for this one sent on the other path (through the daemon, or with --no-daemon)"
			ce.Hint = "check what was sent under it with claudemesh message status " + id + "; to send this message anyway, give it another --id"
		}
		return err
	}
	if e.out.JSONMode() {
		return e.out.JSON(sendJSON{OK: true, MessageID: res.MessageID, ClientMessageID: res.ClientMessageID,
			Status: res.Status, Via: res.Via, Target: res.Target, Duplicate: res.Duplicate})
	}
	printSent(e, m.Slug, res)
	return nil
}

// heldNote is what a send says on stderr at its first signal while it
// waits for from's answer, the daemon's or the broker's (cliui.Hold).
// Both waits are bounded at 30 s (the daemon API client's timeout,
// opTimeout).
func heldNote(from string) string {
	return "interrupted: waiting up to 30 s for the " + from + "'s answer, so that the message is neither lost nor sent twice; a second Ctrl-C stops waiting"
}

// waitInterrupted is a --wait whose wait for the delivery a signal ended:
// the message was taken (res says how far it got, as the result send
// prints), only the wait was cut short. It is the error interrupted (exit
// 130) and names the message, so that --json prints one document, with
// messageId and clientMessageId, as a wait_timeout does; check says how
// to follow the message up.
func waitInterrupted(res *sendResult, check string) error {
	id := res.MessageID
	if id == "" {
		id = res.ClientMessageID
	}
	return cliui.Errorf(cliui.CodeInterrupted, "message %s was %s, but send stopped waiting for its delivery (interrupted)", id, res.Status).
		WithHint(check).WithMessage(res.MessageID, res.ClientMessageID)
}

// printSent says honestly what happened: accepted into the daemon's outbox
// (and whether the daemon can send it now), pushed to a connection (sent),
// held by the broker for an offline or busy recipient (queued), or stored
// on the recipient's machine (delivered). It never claims "read": no read
// receipt exists.
func printSent(e *env, slug string, res *sendResult) {
	s := e.out.Style()
	who := cliui.SanitizeName(res.Target.DisplayName) // #topic, @group, *
	if who == "" {
		who = shortKey(res.Target.TargetSpec)
	} else if wire.IsHex(res.Target.TargetSpec, 64) {
		// A name with its key prefix: two names can look alike ("alice",
		// "аlice" with a Cyrillic а), two keys cannot; and quoted as a
		// label quotes it, so that no name brings a key of its own.
		who = agentview.QuoteName(res.Target.DisplayName) + " (" + shortKey(res.Target.TargetSpec) + ")"
	}
	switch res.Target.TargetSpec {
	case "*":
		who = "everyone in " + slug
	default:
		if strings.HasPrefix(res.Target.TargetSpec, "@") {
			who = res.Target.TargetSpec + " in " + slug
		}
	}
	var line string
	multi := res.Target.Kind == wire.KindMulti
	box := res.Target.Kind == wire.KindBox
	online := res.Target.Online != nil && *res.Target.Online
	// held: the recipient is connected, but its status makes the broker
	// hold next and low messages until it turns idle (01-protocol §4).
	held := box && online && res.Priority != wire.PriorityNow &&
		(res.Target.Status == wire.StatusDND || res.Target.Status == wire.StatusWorking)
	switch {
	case res.Duplicate && res.Status == "accepted":
		// A repeat of an --id whose send is still in the daemon's outbox:
		// nothing new was taken, and the earlier send has not gone out.
		what := "sent"
		if res.Target.Kind == wire.KindTopic {
			what = "posted"
		}
		line = fmt.Sprintf("%s already accepted for %s with this --id (a duplicate: nothing %s again; the earlier send is still in the daemon's outbox)",
			s.Green("✔"), who, what)
	case res.Status == "accepted":
		// Only in the daemon's outbox so far: say so, and what happens next.
		var next string
		switch {
		case res.MeshState == localapi.MeshConnecting:
			// A daemon that has just started: nothing failed yet.
			next = "the daemon is connecting to the broker and sends it once connected"
		case res.MeshState != "" && res.MeshState != localapi.MeshOpen:
			next = "the broker is not reachable right now (" + res.MeshState + "), so it goes out as soon as it is back"
		case held:
			next = "the daemon is sending it now; they are " + res.Target.Status + ", so the broker holds it until they are idle"
		case box && !online:
			next = "the daemon is sending it now; they are offline, so the broker holds it until they connect"
		default:
			next = "the daemon is sending it now"
		}
		line = fmt.Sprintf("%s accepted for %s into the daemon's outbox (%s)", s.Green("✔"), who, next)
	case res.Target.Kind == wire.KindTopic && res.Duplicate:
		line = fmt.Sprintf("%s already posted to %s with this --id (nothing posted again)", s.Green("✔"), who)
	case res.Target.Kind == wire.KindTopic && res.OnlineNow > 0:
		line = fmt.Sprintf("%s posted to %s (in its history; pushed to %s now)", s.Green("✔"), who, plural(res.OnlineNow, "connection"))
	case res.Target.Kind == wire.KindTopic:
		line = fmt.Sprintf("%s posted to %s (in its history; no member connected now)", s.Green("✔"), who)
	case res.Duplicate && res.Status == "delivered":
		line = fmt.Sprintf("%s already delivered to %s with this --id (nothing sent again)", s.Green("✔"), who)
	case res.Duplicate:
		line = fmt.Sprintf("%s already sent to %s with this --id (nothing sent again)", s.Green("✔"), who)
	case res.Status == "delivered":
		line = fmt.Sprintf("%s delivered to %s (stored on their machine)", s.Green("✔"), who)
	case multi && res.RecipientsUnknown && res.Status == "sent":
		line = fmt.Sprintf("%s sent to %s (pushed to connected recipients now)", s.Green("✔"), who)
	case multi && res.RecipientsUnknown:
		line = fmt.Sprintf("%s queued for %s (the broker holds it for them)", s.Green("✔"), who)
	case multi && res.Recipients == 0:
		line = fmt.Sprintf("%s accepted, but no recipient of %s could be reached", s.Yellow("⚠"), who)
	case multi && res.OnlineNow == 0:
		line = fmt.Sprintf("%s queued for %s (%s, none connected now)", s.Green("✔"), who, plural(res.Recipients, "recipient"))
	case multi && res.OnlineNow >= res.Recipients:
		line = fmt.Sprintf("%s sent to %s (%s, all connected now)", s.Green("✔"), who, plural(res.Recipients, "recipient"))
	case multi:
		// OnlineNow counts connections, so it is only a lower bound
		// of the recipients reached at once.
		line = fmt.Sprintf("%s sent to %s (%s; pushed to %s now, queued for the others)",
			s.Green("✔"), who, plural(res.Recipients, "recipient"), plural(res.OnlineNow, "connection"))
	case res.Status == "sent":
		line = fmt.Sprintf("%s sent to %s (online now)", s.Green("✔"), who)
	case held:
		line = fmt.Sprintf("%s queued for %s (online but %s: the broker holds it until they are idle; --priority now interrupts)",
			s.Green("✔"), who, res.Target.Status)
	case online:
		line = fmt.Sprintf("%s queued for %s (the broker holds it for them)", s.Green("✔"), who)
	default:
		line = fmt.Sprintf("%s queued for %s (offline; the broker delivers it when they connect)", s.Green("✔"), who)
	}
	e.out.Resultf("%s", line)
	if res.MessageID != "" {
		e.out.Linef("%s", s.Dim("  message "+cliui.SanitizePeerText(res.MessageID)+"  id "+res.ClientMessageID)) // the broker's text
	} else {
		e.out.Linef("%s", s.Dim("  id "+res.ClientMessageID))
	}
}

func messageCommand() *cli.Command {
	return &cli.Command{
		Name:  "message",
		Usage: "look up messages you sent",
		Description: cliui.WithExamples("",
			"claudemesh message status 01JD3Z5C8Q2W0W6N5D3H4K7M9P",
		),
		Subcommands: []*cli.Command{cliui.ReadOnly(&cli.Command{
			Name:      "status",
			Usage:     "show which recipients a message you sent was delivered to",
			ArgsUsage: "ID",
			Description: cliui.WithExamples(
				"ID is the messageId send printed (a ULID) or the id it printed (your clientMessageId, send --id);\n"+
					"for a topic post, its post id or the id topic post printed (a post has no per-member delivery:\n"+
					"status says when it was posted, --json adds topic).",
				"claudemesh message status 01JD3Z5C8Q2W0W6N5D3H4K7M9P",
				"claudemesh message status deploy-42 --json",
			),
			Action: messageStatus,
		})},
	}
}

func messageStatus(c *cli.Context) error {
	e, err := verbEnv(c, 1, 1)
	if err != nil {
		return err
	}
	id := c.Args().First()
	if !wire.ValidReqID(id) {
		return cliui.UsageErrorf("%q is not a message id", cliui.Clip(id))
	}
	// Without --mesh, a member of several meshes is not asked to choose:
	// the ids send and the hints print carry no mesh, so each mesh is
	// asked in turn (through the daemon, its outbox knows the mesh of
	// what it sent, and the first answer comes from there).
	meshes, tr, err := withTransport(e, e.readMeshes)
	if err != nil {
		return err
	}
	var st *messageStatusJSON
	for i := range meshes {
		st, err = tr.MessageStatus(e.ctx(), &meshes[i], id)
		var ce *cliui.Error
		if len(meshes) > 1 && errors.As(err, &ce) && ce.Code == wire.CodeNotFound {
			continue
		}
		break
	}
	if err != nil && len(meshes) > 1 {
		var ce *cliui.Error
		if errors.As(err, &ce) && ce.Code == wire.CodeNotFound {
			e := cliui.Errorf(wire.CodeNotFound, "you sent no message with id %s in any of your meshes (%s)", id, meshSlugs(meshes)).
				WithHint("give the messageId or the clientMessageId (id) that send or topic post printed")
			e.Exit = cliui.ExitNotFound
			return e
		}
	}
	if err != nil {
		return cliError(err)
	}
	if e.out.JSONMode() {
		return e.out.JSON(st)
	}
	if st.State != "" {
		// Still in the daemon's outbox: the broker has not taken it, so
		// there is no messageId and no recipient yet.
		to := cliui.SanitizePeerText(st.TargetSpec)
		if st.displayName != "" {
			to = agentview.QuoteName(st.displayName)
		} else if wire.IsHex(st.TargetSpec, 64) {
			to = shortKey(st.TargetSpec)
		}
		switch st.State {
		case "accepted":
			e.out.Resultf("message id %s to %s: accepted %s, in the daemon's outbox; not at the broker yet, so its recipients are known once it is sent",
				st.ClientMessageID, to, when(st.CreatedAt))
		default:
			e.out.Resultf("message id %s to %s: %s, never sent (%s)", st.ClientMessageID, to, st.State, cliui.SanitizePeerText(st.Error))
		}
		return nil
	}
	if st.Topic != "" {
		// A topic post has no per-member delivery: it is in the topic's
		// history, where members read it.
		name := cliui.SanitizePeerText(st.Topic)
		e.out.Resultf("%s", e.out.Commands(fmt.Sprintf("post %s to #%s, posted %s: it is in the topic's history (claudemesh topic history %s); a post has no per-member delivery state",
			st.MessageID, name, when(st.CreatedAt), name)))
		return nil
	}
	e.out.Resultf("message %s to %s, sent %s", st.MessageID, targetName(st), when(st.CreatedAt))
	t := newTable(e.out)
	for _, r := range st.Recipients {
		at := ""
		if r.DeliveredAt > 0 {
			at = when(r.DeliveredAt)
		}
		name := agentview.QuoteName(r.DisplayName)
		if name == "" {
			name = "?"
		}
		t.row("  "+name, shortKey(r.Pubkey), r.State, at)
	}
	return t.flush()
}

// targetName shows a message's target as a person reads it: a direct
// message's recipient by name (with its key prefix), a group or broadcast
// as its spec.
func targetName(st *messageStatusJSON) string {
	for _, r := range st.Recipients {
		if r.Pubkey == st.TargetSpec && r.DisplayName != "" {
			return agentview.QuoteName(r.DisplayName) + " (" + shortKey(r.Pubkey) + ")"
		}
	}
	if wire.IsHex(st.TargetSpec, 64) {
		return shortKey(st.TargetSpec)
	}
	return cliui.SanitizePeerText(st.TargetSpec)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") && !strings.HasSuffix(noun, "ey") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// meshSlugs lists meshes' slugs for a message.
func meshSlugs(meshes []config.Mesh) string {
	slugs := make([]string, len(meshes))
	for i, m := range meshes {
		slugs[i] = m.Slug
	}
	return strings.Join(slugs, ", ")
}
