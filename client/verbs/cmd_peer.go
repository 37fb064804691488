package verbs

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

func peerCommand() *cli.Command {
	return &cli.Command{
		Name:  "peer",
		Usage: "see and verify the peers of your meshes",
		Description: cliui.WithExamples("",
			"claudemesh peer list",
			"claudemesh peer list --all --json",
			"claudemesh peer verify bob",
		),
		Subcommands: []*cli.Command{peerListCommand("list", false), peerVerifyCommand()},
	}
}

// peerListCommand is `peer list` and, as name "peers", its top-level
// alias (a separate instance: urfave/cli flags hold their values).
func peerListCommand(name string, alias bool) *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:   name,
		Usage:  aliasUsage(alias, "list who is connected, each member once (alias: claudemesh peers)", "peer list"),
		Hidden: alias,
		Description: cliui.WithExamples(
			"Lists who is connected in every joined mesh (or --mesh): each member once, online if any of its\n"+
				"connections is (its daemon, an inbox --follow, a bot), with its agent sessions listed under it.\n"+
				"--all lists every connection separately and adds the members who are offline. A mesh whose broker\n"+
				"cannot be reached is reported beside the others (exit 5 when it is the only one).",
			"claudemesh peer list",
			"claudemesh peers --all",
			"claudemesh peer list --mesh acme --json",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "also list offline members and daemon presences"},
		},
		Action: peerList,
	})
}

func peerList(c *cli.Context) error {
	e, err := verbEnv(c, 0, 0)
	if err != nil {
		return err
	}
	meshes, tr, err := withTransport(e, e.readMeshes)
	if err != nil {
		return err
	}
	results := tr.Peers(e.ctx(), meshes, c.Bool("all"))
	var rows []peerRow
	var failed []meshPeers
	for _, r := range results {
		if r.Err != nil {
			failed = append(failed, r)
			continue
		}
		rows = append(rows, r.Rows...)
	}
	if len(failed) == len(results) {
		return cliError(failed[0].Err)
	}
	if e.out.JSONMode() {
		all := make([]any, 0, len(rows)+len(failed))
		for _, r := range rows {
			all = append(all, r)
		}
		for _, f := range failed {
			all = append(all, errorRow(f.Slug, f.Err))
		}
		return e.out.JSON(all)
	}
	for _, f := range failed {
		warnMesh(e.out, f.Slug, f.Err)
	}
	printPeers(e.out, rows, len(meshes) > 1)
	return nil
}

func printPeers(out *cliui.Out, rows []peerRow, showMesh bool) {
	if len(rows) == 0 {
		out.Resultf("nobody is connected")
		out.Linef("%s", out.Style().Dim(out.Commands("→ claudemesh peer list --all also shows offline members")))
		return
	}
	s := out.Style()
	t := newTable(out)
	head := []string{"NAME", "KEY", "STATE", "KIND", "DIR", "GROUPS"}
	if showMesh {
		head = append(head, "MESH")
	}
	t.row(append(head, "SUMMARY")...)
	session := slices.ContainsFunc(rows, func(r peerRow) bool { return r.IsThisSession })
	for _, r := range rows {
		// Quoted as a label quotes it (agentview.QuoteName): a member named
		// "dave (you)" must not carry this table's own "(you)".
		name := agentview.QuoteName(r.DisplayName)
		if r.Nested {
			name = "  └ " + name
		}
		isSession := r.Nested || r.Role == wire.RoleSession
		switch {
		case r.IsThisSession:
			name += " (you)"
		case r.IsSelf && !isSession && !session:
			// The human's own presences, not its agent sessions.
			name += " (you)"
		}
		state := "offline"
		if r.Online {
			state = cliui.SanitizeName(r.Status) // the peer's own word
			if state == "" {
				state = "online"
			}
		}
		kind := r.Role
		switch {
		case isSession:
			// The same words in both views (nested and --all).
			kind = "session"
			if r.PeerType != "" {
				kind += " (" + cliui.SanitizePeerText(r.PeerType) + ")"
			}
		case kind == "":
			kind = "member"
		case kind == wire.RoleControlPlane:
			// The role's wire name read as an internal word to a new
			// user; --json keeps it.
			kind = "daemon"
		}
		switch {
		case r.Channel == "web" && r.Role == wire.RoleCLI && !isSession:
			kind = "chat page" // the page's own presence (in --all)
		case r.Channel == "web":
			// A member whose human has the chat page open.
			kind += " (chat page open)"
		case r.Channel != "":
			kind += " (" + cliui.SanitizePeerText(r.Channel) + ")"
		}
		dir := ""
		if isSession && r.Cwd != "" {
			dir = cliui.SanitizePeerText(filepath.Base(r.Cwd))
		}
		cells := []string{name, shortKey(r.Pubkey), state, kind, dir, groupsCell(r.Groups)}
		if showMesh {
			cells = append(cells, r.Mesh)
		}
		// Runs of spaces are one in a row: padding is how a summary
		// lines up text under the columns of the rows around it.
		summary := strings.Join(strings.Fields(cliui.SanitizePeerText(r.Summary)), " ")
		t.row(append(cells, s.Dim(summary))...)
	}
	t.flush()
}

// groupsCellWidth bounds the GROUPS column of peer list: a peer in 32
// groups made every row as wide as all their names.
const groupsCellWidth = 30

// groupsCell is a peer's groups as peer list shows them: as many as fit
// in groupsCellWidth columns (at least one), then "+N more" (peer list
// --json has them all).
func groupsCell(groups []wire.Group) string {
	var b strings.Builder
	for i, g := range groups {
		name := "@" + cliui.SanitizePeerText(g.Name)
		more := ""
		if left := len(groups) - i - 1; left > 0 {
			more = fmt.Sprintf(" +%d more", left)
		}
		sep := ""
		if i > 0 {
			sep = ","
		}
		if i > 0 && cliui.Width(b.String()+sep+name+more) > groupsCellWidth {
			fmt.Fprintf(&b, " +%d more", len(groups)-i)
			break
		}
		b.WriteString(sep + name)
	}
	return b.String()
}

// verifyJSON is `peer verify --json`.
type verifyJSON struct {
	Mesh         string `json:"mesh"`
	DisplayName  string `json:"displayName"`
	MemberPubkey string `json:"memberPubkey"`
	MyPubkey     string `json:"myPubkey"`
	SafetyNumber string `json:"safetyNumber"`
}

func peerVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "show the safety number you and a peer can compare",
		ArgsUsage: "PEER",
		Description: cliui.WithExamples(
			"PEER is a display name, a pubkey or a pubkey prefix (8+ hex). Both of you run peer verify on the other\n"+
				"and compare the numbers over another channel (in person, a call): if they match, you hold each\n"+
				"other's real member keys and nobody, the broker included, sits in the middle. For an agent session,\n"+
				"the number is that of the member the session belongs to (proven by its signed attestation).",
			"claudemesh peer verify bob",
			"claudemesh peer verify 3f9a12c4 --mesh acme",
		),
		Action: peerVerify,
	}
}

func peerVerify(c *cli.Context) error {
	e, err := verbEnv(c, 1, 1)
	if err != nil {
		return err
	}
	to := c.Args().First()
	if strings.HasPrefix(to, "@") || strings.HasPrefix(to, "#") || to == "*" {
		return cliui.UsageErrorf("peer verify takes one peer, not %q", to)
	}
	m, tr, err := withTransport(e, e.writeMesh)
	if err != nil {
		return err
	}
	members, peers, err := tr.Directory(e.ctx(), m)
	if err != nil {
		return cliError(err)
	}
	t, err := client.ResolveTarget(to, members, peers, m.Pubkey)
	if err != nil {
		return cliError(err)
	}
	memberKey, name := t.Spec, t.DisplayName
	var member *wire.Member
	for i := range members {
		if members[i].Pubkey == t.Spec && members[i].RevokedAt == 0 {
			member = &members[i]
		}
	}
	if member == nil {
		// A session key: find the member it belongs to, trusting only a
		// valid attestation signed by that member, never the broker's word.
		memberKey = ""
		for _, p := range peers {
			if p.Pubkey == t.Spec && p.Role == wire.RoleSession && p.Attestation != nil &&
				p.Attestation.SessionPubkey == p.Pubkey && p.Attestation.ParentPubkey == p.MemberPubkey &&
				client.VerifyAttestation(m.MeshID, p.Attestation) == nil {
				memberKey = p.MemberPubkey
			}
		}
		for i := range members {
			if members[i].Pubkey == memberKey {
				name = members[i].DisplayName
			}
		}
		if memberKey == "" {
			return cliui.Errorf(wire.CodeUnknownTarget, "%s is not a member of %s, nor a session with a valid attestation", shortKey(t.Spec), m.Slug).
				WithHint(hintFor(wire.CodeUnknownTarget))
		}
	}
	if memberKey == m.Pubkey {
		// A safety number is compared with someone else: one with
		// yourself (or your own agent session) proves nothing.
		return cliui.Errorf(wire.CodeInvalidArgument, "%s is you (%s in %s): a safety number is compared with another member", to, shortKey(m.Pubkey), m.Slug).
			WithHint("name another member; claudemesh peer list shows them")
	}
	mine, err := cmcrypto.ParsePublicKey(m.Pubkey)
	if err != nil {
		return err
	}
	theirs, err := cmcrypto.ParsePublicKey(memberKey)
	if err != nil {
		return err
	}
	res := verifyJSON{Mesh: m.Slug, DisplayName: name, MemberPubkey: memberKey, MyPubkey: m.Pubkey,
		SafetyNumber: cmcrypto.SafetyNumber(mine, theirs)}
	if e.out.JSONMode() {
		return e.out.JSON(res)
	}
	e.out.Resultf("safety number with %s in %s:", agentview.QuoteName(name), m.Slug)
	e.out.Resultf("  %s", e.out.Style().Bold(res.SafetyNumber))
	e.out.Linef("%s", e.out.Style().Dim("→ ask "+agentview.QuoteName(name)+" to run claudemesh peer verify "+shortKey(m.Pubkey)+
		" and compare; the same number on both sides means no one is in the middle"))
	return nil
}
