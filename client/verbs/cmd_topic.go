package verbs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// `claudemesh topic …` (04-cli): a mesh's end-to-end encrypted rooms.

func topicCommand() *cli.Command {
	return &cli.Command{
		Name:  "topic",
		Usage: "end-to-end encrypted rooms of a mesh (#deploys, #reviews)",
		Description: cliui.WithExamples(
			"A topic keeps its history; everyone in it gets new posts live. Its key is made by its creator's\n"+
				"machine and shared member to member: a member who joins waits until someone who holds the key is\n"+
				"online (their daemon, or a running topic tail, shares it automatically). When every member who held\n"+
				"it has left, nobody can share it: topic rotate makes a new one. Every mesh has #general.",
			"claudemesh topic create deploys --description \"release train\"",
			"claudemesh topic join deploys",
			"claudemesh topic add incidents bob",
			"claudemesh topic post deploys \"v1.4 is rolling out\" --mention bob",
			"claudemesh send '#deploys' \"rollback done\"",
			"claudemesh topic tail deploys --json",
		),
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "create a topic (you hold its first key)", ArgsUsage: "NAME",
				Description: cliui.WithExamples(
					"NAME is 1-64 of a-z 0-9 _ - (starting with a letter or digit). --private topics are seen only by their\n"+
						"members, whom a lead adds (claudemesh topic add NAME PEER); you are its first lead. --plaintext topics are not end-to-end encrypted (the broker\n"+
						"can read them): they are for bots that post over the REST API without keys.",
					"claudemesh topic create ops",
					"claudemesh topic create incidents --private --description \"on-call only\"",
				),
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "description", Usage: "what the topic is for"},
					&cli.BoolFlag{Name: "private", Usage: "only members see it; a lead adds them (topic add)"},
					&cli.BoolFlag{Name: "plaintext", Usage: "not end-to-end encrypted (for bots over REST)"},
				},
				Action: topicCreate,
			},
			cliui.ReadOnly(&cli.Command{Name: "list", Usage: "the topics you can see, with unread counts", Action: topicList,
				Description: cliui.WithExamples("", "claudemesh topic list", "claudemesh topic list --json")}),
			{Name: "join", Usage: "join a public topic", ArgsUsage: "NAME", Action: topicJoin,
				Description: cliui.WithExamples("", "claudemesh topic join deploys")},
			{
				Name: "add", Usage: "add a member to a topic (a lead, or the mesh's owner or an admin)", ArgsUsage: "NAME PEER",
				Description: cliui.WithExamples(
					"How members get into a --private topic (anyone may join a public one). PEER is a member's display\n"+
						"name, pubkey or memberId. When you hold the topic's key it is sealed for them at once; otherwise\n"+
						"a member who holds it does so when online. --role lead lets them add members and rotate the key.",
					"claudemesh topic add incidents bob",
					"claudemesh topic add incidents carol --role observer --json"),
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "role", Usage: "lead, member or observer (reads, cannot post); without it a new member is a member and an existing one keeps its role"},
				},
				Action: topicAdd,
			},
			{Name: "leave", Usage: "leave a topic (its key is then replaced)", ArgsUsage: "NAME", Action: topicLeave,
				Description: cliui.WithExamples("", "claudemesh topic leave deploys")},
			cliui.ReadOnly(&cli.Command{Name: "members", Usage: "who is in a topic, and who holds its key", ArgsUsage: "NAME", Action: topicMembers,
				Description: cliui.WithExamples("", "claudemesh topic members deploys --json")}),
			{Name: "rotate", Usage: "replace a topic's key, sealed to every member", ArgsUsage: "NAME", Action: topicRotate,
				Description: cliui.WithExamples(
					"Done automatically when someone leaves or is removed; a lead may also rotate at will.",
					"claudemesh topic rotate deploys")},
			{
				Name: "post", Usage: "post to a topic", ArgsUsage: "NAME MESSAGE...",
				Description: cliui.WithExamples("Same as claudemesh send '#NAME' MESSAGE. A lone - reads the message from stdin.",
					"claudemesh topic post deploys \"v1.4 is out\"",
					"claudemesh topic post reviews \"please look\" --mention alice --mention bob",
					"claudemesh topic post deploys \"ack\" --reply-to 01JD3Z5C8Q2W0W6N5D3H4K7M9P"),
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "reply-to", Usage: "the post `ID` this answers: a post's id (topic tail, history) or the id topic post printed for yours"},
					&cli.StringSliceFlag{Name: "mention", Usage: "name a `PEER` (repeatable): their daemon marks the post in their inbox \"mentions you\" (mentionsYou in --json) and their agent sessions get it as [MENTIONS YOU]"},
					&cli.StringFlag{Name: "priority", Usage: "now, next (default) or low"},
					&cli.StringFlag{Name: "id", Usage: "your `CLIENT_ID` for the post (idempotency key, 1-64 of A-Za-z0-9._:-): a retry with it is a duplicate while the id is remembered (--no-daemon: as long as the broker keeps the post, --topic-retention, by default forever), refused (exit 6) after a key rotation (see claudemesh send --help)"},
				},
				Action: topicPost,
			},
			{
				Name: "tail", Usage: "print a topic's recent posts, then new ones as they come", ArgsUsage: "NAME",
				Description: cliui.WithExamples(
					"Posts are decrypted and their signatures checked: a post that does not verify is marked unverified\n"+
						"and never shown under the name it claims. Members share only the current key generation, so posts\n"+
						"under an older key you do not hold (made before you joined, or before a rotation) can never be read:\n"+
						"tail leaves them out and says once how many. While it runs, tail shares the topic's key with members\n"+
						"who join. Ctrl-C stops it (exit 130). --json prints one post per line ({id, topic, senderName,\n"+
						"senderPubkey, body, keyGen, verified, createdAt, replyToId?}); lines without an id are notices:\n"+
						"{topic, waitingForKey:true, message} says it waits for a member to share the current key,\n"+
						"{topic, unreadablePosts, keyGens, message} counts the posts left out, and {topic, notice, mesh, message}\n"+
						"says the broker went away (notice unreachable) or is back (reconnected).",
					"claudemesh topic tail deploys",
					"claudemesh topic tail deploys --limit 50 --no-follow --json",
				),
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Value: 20, Usage: "how many recent posts first (at most 50)"},
					&cli.BoolFlag{Name: "no-follow", Usage: "print the recent posts and exit"},
				},
				Action: topicTail,
			},
			cliui.ReadOnly(&cli.Command{
				Name: "history", Usage: "older posts of a topic, a page at a time", ArgsUsage: "NAME",
				Description: cliui.WithExamples("Oldest first within the page; --before the id of its oldest post gives the page before.\n"+
					"--json prints the page as one array of posts ({id, topic, senderName, senderPubkey, senderMemberPubkey?,\n"+
					"senderMemberName?, body, keyGen, verified, createdAt, replyToId?}), [] when it is empty. A post by an agent\n"+
					"session reads \"name (via member)\".",
					"claudemesh topic history deploys --limit 50",
					"claudemesh topic history deploys --before 01JD3Z5C8Q2W0W6N5D3H4K7M9P --json"),
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Value: 20, Usage: "posts in the page (at most 50)"},
					&cli.StringFlag{Name: "before", Usage: "only posts older than this post `ID` (a post's id, or the id topic post printed for yours)"},
				},
				Action: topicHistory,
			}),
		},
	}
}

// topicEnv starts a topic verb: args checked, the topic half of the
// transport chosen (the daemon when it runs, else direct).
func topicEnv(c *cli.Context, minArgs, maxArgs int) (*env, []string, topicTransport, error) {
	e, err := verbEnv(c, minArgs, maxArgs)
	if err != nil {
		return nil, nil, nil, err
	}
	tr, err := e.transport()
	if err != nil {
		return nil, nil, nil, err
	}
	return e, c.Args().Slice(), tr.(topicTransport), nil
}

// topicVerb starts a verb of one topic: NAME checked, the mesh and the
// transport chosen.
func topicVerb(c *cli.Context) (*env, string, *config.Mesh, topicTransport, error) {
	e, args, tr, err := topicEnv(c, 1, 1)
	if err != nil {
		return nil, "", nil, nil, err
	}
	name, err := topicName(args[0])
	if err != nil {
		return nil, "", nil, nil, err
	}
	m, err := e.writeMesh()
	if err != nil {
		return nil, "", nil, nil, err
	}
	return e, name, m, tr, nil
}

func topicName(arg string) (string, error) {
	name := strings.TrimPrefix(arg, "#")
	if !wire.ValidTopicName(name) && !wire.ValidULID(name) {
		return "", cliui.UsageErrorf("%q is not a topic name (1-64 of a-z 0-9 _ -)", arg)
	}
	return name, nil
}

func errKeyMissing(topic string) error {
	return cliui.Errorf(wire.CodeTopicKeyMissing, "you do not hold the key of #%s yet", topic).
		WithHint("a member who holds it shares it automatically when online (their daemon, or a running claudemesh topic tail)")
}

// nobodyHoldsKey reports whether no member of the topic holds its current
// key (the broker's topic_members says who has a seal of it): then no one
// can share it, and only a rotation brings a key. It is false when that
// cannot be told.
func nobodyHoldsKey(e *env, tr topicTransport, m *config.Mesh, topic string) bool {
	if m == nil {
		return false
	}
	rows, err := tr.TopicMembers(e.ctx(), m, topic)
	if err != nil || len(rows) == 0 {
		return false
	}
	for _, r := range rows {
		if r.HasCurrentKey {
			return false
		}
	}
	return true
}

// rotateHint is what a member who waits for a key nobody holds can do.
func rotateHint(topic string) string {
	return "claudemesh topic rotate " + topic + " seals a new key to every member (a lead may rotate at any time, any member" +
		" while the topic needs a new key); posts from before it stay unreadable"
}

// keyMissing turns a topic_key_missing error into the one that is true
// when nobody holds the current key (the hint of errKeyMissing, that a
// member shares it, would never come true).
func keyMissing(e *env, tr topicTransport, m *config.Mesh, topic string, err error) error {
	code := client.CodeOf(err)
	if ce := (*cliui.Error)(nil); errors.As(err, &ce) {
		code = ce.Code
	}
	if code != wire.CodeTopicKeyMissing || !nobodyHoldsKey(e, tr, m, topic) {
		return err
	}
	return cliui.Errorf(wire.CodeTopicKeyMissing, "you do not hold the key of #%s, and no member does: nobody can share it with you", topic).
		WithHint(rotateHint(topic))
}

func topicCreate(c *cli.Context) error {
	e, args, tr, err := topicEnv(c, 1, 1)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(args[0], "#")
	if !wire.ValidTopicName(name) {
		return cliui.UsageErrorf("%q is not a topic name (1-64 of a-z 0-9 _ -, starting with a letter or digit)", args[0])
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	row, err := tr.TopicCreate(e.ctx(), m, client.TopicCreateOptions{Name: name, Description: c.String("description"),
		Private: c.Bool("private"), Plaintext: c.Bool("plaintext")})
	if err != nil {
		return cliError(err)
	}
	if e.out.JSONMode() {
		return e.out.JSON(row)
	}
	how := "end-to-end encrypted; its first key was made on this machine"
	if !row.Encrypted {
		how = "plaintext: the broker can read it"
	}
	e.out.Resultf("%s created #%s in %s (%s, %s)", e.out.Style().Green("✔"), row.Name, m.Slug, row.Visibility, how)
	return nil
}

func topicList(c *cli.Context) error {
	e, _, tr, err := topicEnv(c, 0, 0)
	if err != nil {
		return err
	}
	meshes, err := e.readMeshes()
	if err != nil {
		return err
	}
	results := tr.TopicList(e.ctx(), meshes)
	var rows []any
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
			continue
		}
		for _, row := range r.Rows {
			rows = append(rows, row)
		}
	}
	if failed == len(results) {
		return cliError(results[0].Err)
	}
	if e.out.JSONMode() {
		for _, r := range results {
			if r.Err != nil {
				rows = append(rows, errorRow(r.Slug, r.Err))
			}
		}
		if rows == nil {
			rows = []any{}
		}
		return e.out.JSON(rows)
	}
	s := e.out.Style()
	t := newTable(e.out)
	for _, r := range results {
		if r.Err != nil {
			warnMesh(e.out, r.Slug, r.Err)
			continue
		}
		for _, row := range r.Rows {
			state := "not joined"
			switch {
			case row.Joined && !row.Encrypted:
				state = "joined · plaintext"
			case row.Joined && row.KeyGen == 0:
				state = "joined · no key yet"
			case row.Joined && !row.HasKey && nobodyHoldsKey(e, tr, meshBySlug(meshes, r.Slug), row.Name):
				state = "joined · no key: nobody holds it (topic rotate " + row.Name + ")"
			case row.Joined && !row.HasKey:
				state = "joined · waiting for the key"
			case row.Joined:
				state = "joined"
			}
			unread := ""
			if row.Unread > 0 {
				unread = s.Bold(fmt.Sprintf("%d unread", row.Unread))
			}
			vis := ""
			if row.Visibility == wire.VisibilityPrivate {
				vis = "private"
			}
			t.row("  #"+cliui.SanitizePeerText(row.Name), row.Mesh, state, vis, plural(row.MemberCount, "member"), unread,
				s.Dim(cliui.SanitizePeerText(row.Description)))
		}
	}
	return t.flush()
}

func topicJoin(c *cli.Context) error {
	e, name, m, tr, err := topicVerb(c)
	if err != nil {
		return err
	}
	row, err := tr.TopicJoin(e.ctx(), m, name)
	if err != nil {
		return askTopicLead(err, m, name, "claudemesh topic add "+config.ShellQuote(name)+" "+config.ShellQuote(m.DisplayName))
	}
	if e.out.JSONMode() {
		return e.out.JSON(row)
	}
	e.out.Resultf("%s joined #%s", e.out.Style().Green("✔"), row.Name)
	switch {
	case !row.Encrypted || row.HasKey:
	case nobodyHoldsKey(e, tr, m, row.Name):
		e.out.Linef("%s", e.out.Style().Dim(e.out.Commands("  → you cannot read it yet, and no member holds its current key to share with you: "+rotateHint(row.Name))))
	default:
		// Usually on its way already: a holder online seals it for a
		// joiner moments after the join (and a post waits for it).
		e.out.Linef("%s", e.out.Style().Dim("  → its key comes from a member who holds it, automatically while one is online (their daemon, or a running topic tail): in moments when one is online now, else once one is"))
	}
	return nil
}

// askTopicLead names, in the hint of a forbidden topic join or add, the
// command a lead of the topic (or the mesh's owner or an admin) runs.
func askTopicLead(err error, m *config.Mesh, topic, command string) error {
	ce, ok := cliError(err).(*cliui.Error)
	if !ok || ce.Code != wire.CodeForbidden || topic == wire.GeneralTopic {
		return cliError(err)
	}
	ce.Hint = "ask a lead of #" + topic + " (or the mesh owner or an admin) to run: " + command + " --mesh " + config.ShellQuote(m.Slug)
	return ce
}

func topicAdd(c *cli.Context) error {
	e, args, tr, err := topicEnv(c, 2, 2)
	if err != nil {
		return err
	}
	name, err := topicName(args[0])
	if err != nil {
		return err
	}
	peer := strings.TrimSpace(args[1])
	if peer == "" {
		return cliui.UsageErrorf("PEER is a member's display name, pubkey or memberId")
	}
	role := c.String("role")
	switch role {
	case "", wire.TopicLead, wire.TopicMember, wire.TopicObserver:
	default:
		return cliui.UsageErrorf("--role is lead, member or observer, not %q", role)
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	row, err := tr.TopicAdd(e.ctx(), m, name, peer, role)
	if err != nil {
		line := "claudemesh topic add " + config.ShellQuote(name) + " " + config.ShellQuote(peer)
		if role != "" {
			line += " --role " + role
		}
		return askTopicLead(err, m, name, line)
	}
	if e.out.JSONMode() {
		return e.out.JSON(row)
	}
	who := cliui.SanitizePeerText(row.DisplayName)
	e.out.Resultf("%s added %s to #%s as %s", e.out.Style().Green("✔"), who, name, row.Role)
	switch {
	case row.HasCurrentKey:
		e.out.Linef("%s", e.out.Style().Dim("  → "+who+" holds its current key and can read it"))
	case !topicEncrypted(e, tr, m, name):
	case nobodyHoldsKey(e, tr, m, name):
		e.out.Linef("%s", e.out.Style().Dim(e.out.Commands("  → no member holds its current key to share: "+rotateHint(name))))
	default:
		e.out.Linef("%s", e.out.Style().Dim(e.out.Commands("  → "+who+" gets its key when a member who holds it is online (their daemon, or a running claudemesh topic tail)")))
	}
	return nil
}

// meshBySlug is the mesh of meshes called slug.
func meshBySlug(meshes []config.Mesh, slug string) *config.Mesh {
	for i := range meshes {
		if meshes[i].Slug == slug {
			return &meshes[i]
		}
	}
	return nil
}

// topicEncrypted reports whether a topic is end-to-end encrypted (true
// when that cannot be told).
func topicEncrypted(e *env, tr topicTransport, m *config.Mesh, name string) bool {
	for _, r := range tr.TopicList(e.ctx(), []config.Mesh{*m}) {
		for _, t := range r.Rows {
			if t.Name == name || t.ID == name {
				return t.Encrypted
			}
		}
	}
	return true
}

func topicLeave(c *cli.Context) error {
	e, name, m, tr, err := topicVerb(c)
	if err != nil {
		return err
	}
	if err := tr.TopicLeave(e.ctx(), m, name); err != nil {
		ce, ok := cliError(err).(*cliui.Error)
		if ok && ce.Code == wire.CodeForbidden && name == wire.GeneralTopic {
			// Not the owner's or an admin's to grant: #general is the mesh.
			ce.Hint = "claudemesh mesh leave " + config.ShellQuote(m.Slug) + " leaves the mesh, #general with it"
			return ce
		}
		return cliError(err)
	}
	return e.printOK("left #%s; its key will be replaced so you cannot read what follows", name)
}

func topicMembers(c *cli.Context) error {
	e, name, m, tr, err := topicVerb(c)
	if err != nil {
		return err
	}
	rows, err := tr.TopicMembers(e.ctx(), m, name)
	if err != nil {
		return cliError(err)
	}
	if e.out.JSONMode() {
		if rows == nil {
			rows = []topicMemberRow{}
		}
		return e.out.JSON(rows)
	}
	t := newTable(e.out)
	holders := 0
	for _, r := range rows {
		if r.HasCurrentKey {
			holders++
		}
	}
	orphaned := holders == 0 && len(rows) > 0 && topicEncrypted(e, tr, m, name)
	for _, r := range rows {
		key := "has the key"
		switch {
		case r.HasCurrentKey:
		case orphaned:
			key = "no key (nobody holds it)"
		default:
			key = "waiting for the key"
		}
		t.row("  "+cliui.SanitizePeerText(r.DisplayName), shortKey(r.Pubkey), r.Role, key)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if orphaned {
		e.out.Linef("%s", e.out.Style().Dim(e.out.Commands("  → no member holds its current key, so nobody can share it: "+rotateHint(name))))
	}
	return nil
}

func topicRotate(c *cli.Context) error {
	e, name, m, tr, err := topicVerb(c)
	if err != nil {
		return err
	}
	row, err := tr.TopicRotate(e.ctx(), m, name)
	if err != nil {
		return cliError(err)
	}
	if e.out.JSONMode() {
		return e.out.JSON(row)
	}
	e.out.Resultf("%s #%s now uses key generation %d, sealed to each of its %s", e.out.Style().Green("✔"), row.Name, row.KeyGen, plural(row.MemberCount, "member"))
	return nil
}

func topicPost(c *cli.Context) error {
	e, err := verbEnv(c, 2, -1)
	if err != nil {
		return err
	}
	args := c.Args().Slice()
	name, err := topicName(args[0])
	if err != nil {
		return err
	}
	req := sendRequest{To: "#" + name, Priority: c.String("priority"), ReplyTo: c.String("reply-to"),
		ClientMessageID: c.String("id"), Mentions: c.StringSlice("mention")}
	return sendAndPrint(e, c, req, args[1:])
}

// historyLimit checks --limit (1..50, one page).
func historyLimit(c *cli.Context) (int, error) {
	n := c.Int("limit")
	if n < 1 || n > wire.MaxTopicHistory {
		return 0, cliui.UsageErrorf("--limit is 1 to %d", wire.MaxTopicHistory)
	}
	return n, nil
}

func topicHistory(c *cli.Context) error {
	e, name, m, tr, err := topicVerb(c)
	if err != nil {
		return err
	}
	limit, err := historyLimit(c)
	if err != nil {
		return err
	}
	before := c.String("before")
	if before != "" && !wire.ValidReqID(before) {
		return cliui.UsageErrorf("--before %q is not a message id", cliui.Clip(before))
	}
	page, err := tr.TopicHistory(e.ctx(), m, name, limit, before)
	if err != nil {
		return cliError(err)
	}
	lines := reversed(page.Lines)
	lostKey(lines, page.KeyGen)
	readable := 0
	for _, l := range lines {
		if !l.keyMissing {
			readable++
		}
	}
	if page.WaitingForKey && readable == 0 {
		// Nothing here can be read: say why instead of printing blanks.
		return keyMissing(e, tr, m, name, errKeyMissing(name))
	}
	if e.out.JSONMode() {
		// One JSON array, like every other one-shot listing ([] for a
		// page with no posts); only the streams (tail, inbox --follow)
		// print a line per item.
		if err := e.out.JSON(lines); err != nil {
			return err
		}
	} else if err := (&linePrinter{e: e}).Lines(lines); err != nil {
		return err
	} else if len(lines) == 0 {
		// Silence read as a failure (every other listing says so).
		if before != "" {
			e.out.Resultf("no posts in #%s before %s", name, before)
		} else {
			e.out.Resultf("no posts in #%s yet", name)
		}
	}
	if page.WaitingForKey {
		// Some of the page was readable; say why the rest is not (a
		// warning: history does not wait).
		var ce *cliui.Error
		if errors.As(keyMissing(e, tr, m, name, errKeyMissing(name)), &ce) {
			e.out.Warn(ce.Message, ce.Hint)
		}
	}
	if page.More && !e.out.JSONMode() && len(lines) > 0 {
		e.out.Linef("%s", e.out.Style().Dim(e.out.Commands("  → older: claudemesh topic history "+name+" --before "+lines[0].ID)))
	}
	return nil
}

func topicTail(c *cli.Context) error {
	e, name, m, tr, err := topicVerb(c)
	if err != nil {
		return err
	}
	limit, err := historyLimit(c)
	if err != nil {
		return err
	}
	p := &linePrinter{e: e, noWait: c.Bool("no-follow"), orphaned: func() bool { return nobodyHoldsKey(e, tr, m, name) }}
	err = tr.TopicTail(e.ctx(), m, name, limit, !c.Bool("no-follow"), p)
	if p.newest != "" {
		// What tail printed was read: the topic's unread count (topic
		// list, the chat page) stops counting it. Also after Ctrl-C, so
		// on a context of its own; a marker that could not move is not
		// this command's failure. After Ctrl-C the user waits for the
		// prompt: a second through the daemon, which moves the marker
		// even when this process stops waiting (it waited up to 5 s for
		// a slow broker); the direct path needs a connection of its own.
		wait := 5 * time.Second
		if e.ctx().Err() != nil {
			wait = 3 * time.Second
			if _, ok := tr.(*viaDaemon); ok {
				wait = time.Second
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		tr.TopicMarkRead(ctx, m, name, p.newest)
		cancel()
	}
	if e.ctx().Err() != nil {
		// Ctrl-C or SIGTERM: exit 130, like every interrupted command.
		return e.ctx().Err()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return cliError(keyMissing(e, tr, m, name, err))
	}
	if c.Bool("no-follow") && p.newest == "" && !e.out.JSONMode() {
		e.out.Resultf("no posts in #%s yet", name)
	}
	return nil
}

// linePrinter prints topic posts: NDJSON under --json, else one line each,
// peer text sanitised, an unverified post never under a name. orphaned
// (if set) says whether nobody holds the topic's current key, asked when
// a wait for it begins.
type linePrinter struct {
	e        *env
	orphaned func() bool
	// noWait: the command does not wait for keys (tail --no-follow,
	// history); a missing key is its error, not a wait.
	noWait bool
	// newest is the id of the last post printed.
	newest string
}

func (p *linePrinter) Lines(lines []topicLine) error {
	for _, l := range lines {
		if l.ID != "" {
			p.newest = l.ID
		}
	}
	if p.e.out.JSONMode() {
		return p.e.out.NDJSON(lines)
	}
	s := p.e.out.Style()
	width := p.e.out.PeerTextWidth()
	for _, l := range lines {
		who := cliui.SanitizePeerText(l.SenderName)
		switch {
		case l.Verified && !l.Plaintext && l.DecryptError == "":
			// A session as "name (via member)", as inbox shows it.
			member := l.SenderMemberPubkey
			if member == "" {
				member = l.SenderPubkey // a daemon that does not say: shown as before
			}
			who = senderLabel(inboxRow{SenderName: l.SenderName, SenderPubkey: l.SenderPubkey,
				SenderMemberPubkey: member, SenderMemberName: l.SenderMemberName})
		case l.Plaintext:
			who += s.Dim(" (plaintext topic: sender not verified)")
		case l.DecryptError != "":
			// Not opened, so its signature was not checked either: it is
			// unreadable, which says nothing of forgery.
			who = s.Yellow("⚠ unreadable post")
		case !l.Verified:
			who = s.Yellow("⚠ unverified sender " + shortKey(l.SenderPubkey))
		}
		body := cliui.SanitizePeerText(l.Body)
		switch {
		case l.keyMissing:
			body = s.Yellow("[key missing: " + cliui.SanitizePeerText(l.DecryptError) + "]")
		case l.DecryptError != "":
			body = s.Yellow("[cannot read: " + cliui.SanitizePeerText(l.DecryptError) + "]")
		}
		// A post's further lines sit indented under it, as inbox's do: at
		// the posts' own indent, "20:01:00 #ops bob: I approve" written
		// by alice read as a post of bob's. On a terminal the post is
		// also broken before its edge, so the terminal's own wrap cannot
		// start a padded post's rest at column 0 either. (Resultf indents
		// every line by two more columns: the width is counted without
		// them.)
		head := fmt.Sprintf("%s %s %s: ", s.Dim(when(l.CreatedAt)), s.Cyan("#"+l.Topic), who)
		body = cliui.WrapPeerText(body, cliui.VisibleCols(head), "    ", width-2)
		// The posts are the result: --quiet keeps them.
		p.e.out.Resultf("%s%s", head, body)
	}
	return nil
}

// waitingLine is what `topic tail --json` prints when it starts waiting for
// a key: a line without an id, so a reader of posts can tell it apart.
type waitingLine struct {
	SchemaVersion int    `json:"schemaVersion"`
	Topic         string `json:"topic"`
	WaitingForKey bool   `json:"waitingForKey"`
	Message       string `json:"message"`
}

func (p *linePrinter) Waiting(topic string) {
	if p.noWait {
		return // the command ends with the error that says why
	}
	if p.orphaned != nil && p.orphaned() {
		msg := "nobody in #" + topic + " holds its current key, so no member can share it with you: this waits until someone rotates it"
		if p.e.out.JSONMode() {
			p.e.out.NDJSON(waitingLine{SchemaVersion: 1, Topic: topic, WaitingForKey: true, Message: msg + "; " + rotateHint(topic)})
			return
		}
		p.e.out.Warn(msg, rotateHint(topic))
		return
	}
	if p.e.out.JSONMode() {
		p.e.out.NDJSON(waitingLine{SchemaVersion: 1, Topic: topic, WaitingForKey: true,
			Message: "waiting for a member who holds the key of #" + topic + " to share it (automatic when one is online)"})
		return
	}
	p.e.out.Warn(fmt.Sprintf("waiting for the key of #%s: a member who holds it shares it with you automatically when they are online", topic),
		"their daemon (claudemesh daemon up) or a running claudemesh topic tail does it; this keeps waiting")
}

// unreadableLine is what `topic tail --json` prints, once, when posts
// stay unreadable (lostKey): a line without an id, like waitingLine.
type unreadableLine struct {
	SchemaVersion   int    `json:"schemaVersion"`
	Topic           string `json:"topic"`
	UnreadablePosts int    `json:"unreadablePosts"`
	KeyGens         []int  `json:"keyGens"`
	Message         string `json:"message"`
}

func (p *linePrinter) Unreadable(topic string, n int, gens []int, cur int) {
	g := make([]string, len(gens))
	for i, x := range gens {
		g[i] = strconv.Itoa(x)
	}
	which := "generation " + strings.Join(g, ", ")
	if len(gens) > 1 {
		which = "generations " + strings.Join(g, ", ")
	}
	msg := fmt.Sprintf("%d older posts of #%s cannot be read and are left out: they are under key %s, which you do not hold", n, topic, which)
	if n == 1 {
		msg = fmt.Sprintf("1 older post of #%s cannot be read and is left out: it is under key %s, which you do not hold", topic, which)
	}
	why := fmt.Sprintf("members share only a topic's current key (generation %d), never an older one, so nobody can give it to you; posts under the keys you hold are shown", cur)
	if p.e.out.JSONMode() {
		p.e.out.NDJSON(unreadableLine{SchemaVersion: 1, Topic: topic, UnreadablePosts: n, KeyGens: gens, Message: msg + ": " + why})
		return
	}
	p.e.out.Warn(msg, why)
}

func (p *linePrinter) Notice(err error) { p.e.out.Warn(err.Error(), "") }

// connectionLine is what `topic tail --json` prints when the followed
// mesh's broker goes away or comes back: a line without an id, like
// waitingLine, with the notice code inbox --follow --json uses.
type connectionLine struct {
	SchemaVersion int    `json:"schemaVersion"`
	Topic         string `json:"topic"`
	Notice        string `json:"notice"`
	Mesh          string `json:"mesh"`
	Message       string `json:"message"`
}

func (p *linePrinter) Connection(topic, mesh, notice, msg string) {
	if p.e.out.JSONMode() {
		p.e.out.NDJSON(connectionLine{SchemaVersion: 1, Topic: topic, Notice: notice, Mesh: mesh, Message: msg})
		return
	}
	if notice == noticeReconnected {
		p.e.out.Linef("%s", p.e.out.Style().Dim(msg))
		return
	}
	p.e.out.Warn(msg, "")
}
