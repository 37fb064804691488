package verbs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// Environment variables of mesh create (04-cli "Global flags and
// environment").
const (
	envBrokerURL     = "CLAUDEMESH_BROKER_URL"
	envOperatorToken = "CLAUDEMESH_OPERATOR_TOKEN"
)

func meshCommand() *cli.Command {
	return &cli.Command{
		Name:  "mesh",
		Usage: "create, list, leave and hand over meshes",
		Description: cliui.WithExamples("",
			"claudemesh mesh create Acme --broker wss://mesh.example.com/ws --operator-token-file ./operator.token",
			"claudemesh mesh list",
			"claudemesh mesh leave acme",
		),
		Subcommands: []*cli.Command{meshCreateCommand(), meshListCommand(), meshLeaveCommand(), meshTransferCommand(), meshRemoveMemberCommand()},
	}
}

// meshJSON is `mesh create --json` and `join --json` (04-cli).
type meshJSON struct {
	MeshID    string `json:"meshId"`
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	MemberID  string `json:"memberId"`
	Role      string `json:"role"`
	BrokerURL string `json:"brokerUrl"`
	// BrokerURLs: every URL of a clustered broker, brokerUrl first
	// (absent for a single broker).
	BrokerURLs []string `json:"brokerUrls,omitempty"`
}

func meshCreateCommand() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create a mesh on a broker, become its owner and join it here",
		ArgsUsage: "NAME",
		Description: cliui.WithExamples(
			"Needs the broker's operator token (the file operator.token in the broker's data directory).\n"+
				"Prefer --operator-token-file or $CLAUDEMESH_OPERATOR_TOKEN: a token given with --operator-token\n"+
				"is visible to other users in ps. The member key is generated here and never leaves this machine;\n"+
				"the broker's key from the answer is pinned only after the broker proved it holds it.\n"+
				"Ctrl-C (SIGINT, SIGTERM) while the broker creates the mesh or proves its key keeps waiting, up to\n"+
				"30 s each, so that the owner key of a mesh it may already have created is saved; a second one stops\n"+
				"waiting and says how to find out.",
			"claudemesh mesh create Acme --broker ws://127.0.0.1:7900/ws --operator-token-file ./claudemesh-data/operator.token",
			"CLAUDEMESH_OPERATOR_TOKEN=… claudemesh mesh create \"Acme Platform\" --slug acme --name alice --broker wss://mesh.example.com/ws",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "broker", Usage: "broker `URL` (ws://, wss://, http:// or https://; default $" + envBrokerURL + ")"},
			&cli.StringFlag{Name: "operator-token", Usage: "operator `TOKEN` (visible in ps; prefer the file or $" + envOperatorToken + ")"},
			&cli.StringFlag{Name: "operator-token-file", Usage: "read the operator token from `FILE`"},
			&cli.StringFlag{Name: "name", Usage: "your `DISPLAY` name in the mesh (default $USER)"},
			&cli.StringFlag{Name: "slug", Usage: "the mesh's short `SLUG` (default derived from NAME)"},
		},
		Action: meshCreate,
	}
}

func operatorToken(c *cli.Context) (string, error) {
	file, flag := c.String("operator-token-file"), c.String("operator-token")
	if file != "" && flag != "" {
		return "", cliui.UsageErrorf("give --operator-token-file or --operator-token, not both")
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", cliui.Errorf(cliui.CodeInvalidArgument, "reading the operator token: %v", err)
		}
		if t := strings.TrimSpace(string(data)); t != "" {
			return t, nil
		}
		return "", cliui.Errorf(cliui.CodeInvalidArgument, "%s is empty", file)
	}
	if flag != "" {
		return flag, nil
	}
	if t := strings.TrimSpace(os.Getenv(envOperatorToken)); t != "" {
		return t, nil
	}
	return "", cliui.UsageErrorf("%s needs the broker's operator token", c.Command.HelpName).
		WithHint("pass --operator-token-file FILE (operator.token in the broker's data directory) or set $" + envOperatorToken)
}

func meshCreate(c *cli.Context) error {
	e, err := verbEnv(c, 1, 1)
	if err != nil {
		return err
	}
	name, err := cmcrypto.NormalizeName(c.Args().First())
	if err != nil {
		return cliui.UsageErrorf("invalid mesh name %q: 1 to 64 characters, no control characters and no |", c.Args().First())
	}
	brokerURL := c.String("broker")
	if brokerURL == "" {
		brokerURL = os.Getenv(envBrokerURL)
	}
	if brokerURL == "" {
		return cliui.UsageErrorf("mesh create needs --broker URL (or $%s)", envBrokerURL)
	}
	if err := checkBrokerURL(brokerURL); err != nil {
		return err
	}
	token, err := operatorToken(c)
	if err != nil {
		return err
	}
	display, err := displayNameFrom(c.String("name"))
	if err != nil {
		return err
	}
	slug := c.String("slug")
	if slug != "" && !cmcrypto.ValidSlug(slug) {
		return cliui.UsageErrorf("invalid slug %q: lowercase letters, digits and -, up to 32, starting with a letter or digit", slug)
	}
	// Fail on an unusable home before the broker creates anything.
	cfg, err := e.load()
	if err != nil {
		return err
	}
	if _, taken := cfg.Find(slug); slug != "" && taken {
		return slugTaken(slug)
	}

	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return err
	}
	// Neither the creation nor the check below is abandoned at the first
	// signal (cliui.Hold; mesh create catches them from its start): a
	// mesh the broker created must end up saved with its owner's key, or
	// it would have an owner nobody can act as. The first SIGINT or
	// SIGTERM says so on stderr and mesh create waits for both, each at
	// most opTimeout; a second stops waiting, with an error that says
	// what is known and what to do.
	var m config.Mesh
	var announced string   // the broker's URL, when it failed and --broker's proved the key
	var announcedErr error // why it failed
	err = cliui.Hold(e.ctx(), meshCreateHeldNote, func(hctx context.Context) error {
		rctx, cancel := context.WithTimeout(hctx, opTimeout)
		res, err := client.CreateMesh(rctx, brokerURL, token, client.CreateMeshRequest{
			Name: name, Slug: slug, OwnerPubkey: key.PublicHex(), OwnerDisplayName: display,
		})
		cancel()
		if err != nil {
			if hctx.Err() != nil {
				return meshCreateAbandoned(name, err)
			}
			if client.CodeOf(err) == wire.CodeUnauthorized {
				return cliui.Errorf(wire.CodeUnauthorized, "the broker refused the operator token").
					WithHint("use the token in operator.token in the broker's data directory")
			}
			return cliError(err)
		}
		// The slug names directories (sessions/<slug>/) and is printed
		// everywhere: a broker's answer that is not a slug (or a name that
		// is not a name) is refused, not stored.
		if n, err := cmcrypto.NormalizeName(res.Name); !cmcrypto.ValidSlug(res.Slug) || err != nil || n != res.Name {
			return cliui.Errorf(wire.CodeMalformed, "the broker answered the creation with slug %q and name %q, which are not a slug and a name; not saved",
				cliui.SanitizePeerText(cliui.Clip(res.Slug)), cliui.SanitizePeerText(cliui.Clip(res.Name))).
				WithHint("the broker is not a claudemesh broker, or a broken one: ask its operator")
		}
		m = config.Mesh{MeshID: res.MeshID, MemberID: res.MemberID, Slug: res.Slug, Name: res.Name,
			Pubkey: key.PublicHex(), SecretKey: key.SecretKeyHex(), BrokerURL: res.BrokerURL, BrokerPubkey: res.BrokerPubkey,
			Role: wire.MemberOwner, DisplayName: display, JoinedAt: config.JoinedNow()}
		m.BrokerURLs = e.brokerURLsOf(res.BrokerURL, res.BrokerURLs)
		// Pin only a key the broker has proved it holds: the challenge of
		// one real connection must verify under it, and the hello must be
		// accepted as the owner we just created.
		id, err := identityOf(&m)
		if err != nil {
			return err
		}
		prove := func(id client.MeshIdentity) error {
			dctx, cancel := context.WithTimeout(hctx, opTimeout)
			defer cancel()
			conn, err := client.Dial(dctx, id, client.DialOptions{Logger: e.log, Header: userAgent()})
			if err == nil {
				conn.Close()
			}
			return err
		}
		err = prove(id)
		// The broker announces the URL of its --public-url, which may be
		// wrong (a typo, a proxy not set up yet) while the URL given with
		// --broker, which just created the mesh, works: the key is then
		// proven there and the mesh saved with that URL, else its owner
		// key would be lost with a mesh nobody can act as.
		given := wsFormOf(brokerURL)
		if err != nil && hctx.Err() == nil && given != res.BrokerURL {
			alt := m
			alt.BrokerURL, alt.BrokerURLs = given, nil
			if aid, aerr := identityOf(&alt); aerr == nil {
				if aerr = prove(aid); aerr == nil {
					announced, announcedErr = res.BrokerURL, err
					m, err = alt, nil
				} else if hctx.Err() == nil {
					err = fmt.Errorf("%w; at %s (--broker): %v", err, given, aerr)
				}
			}
		}
		if err != nil {
			if hctx.Err() != nil {
				ie := cliui.Errorf(cliui.CodeInterrupted,
					"stopped waiting for the broker at %s to prove its key: mesh %s (id %s) was created, but it is not saved here, and its owner key is lost",
					res.BrokerURL, res.Slug, res.MeshID).WithHint(meshLostHint)
				ie.Cause = err
				return ie
			}
			// The mesh exists on the broker; its unproven key is not
			// pinned, so its owner key is lost and its slug stays taken:
			// "try again" would only be told the slug exists.
			return cliui.Errorf(client.CodeOf(err),
				"mesh %s (id %s) was created on the broker, but the broker could not prove its key at %s (the URL it announces, its --public-url), so it was not saved here and its owner key is lost: %v",
				res.Slug, res.MeshID, res.BrokerURL, err).
				WithHint("check that the broker is running and reachable at the URL it announces (its operator sets --public-url); " +
					res.Slug + " stays taken: " + meshLostHint)
		}
		return nil
	})
	if err != nil {
		// The broker's refusal, a failed check, the abandon's interrupted
		// error or, for a signal before the request, context.Canceled
		// (nothing was asked: mesh create ends as an interrupted command).
		return err
	}
	if err := e.addMesh(m); err != nil {
		return err
	}
	out := e.out
	if announcedErr != nil {
		out.Warn(fmt.Sprintf("the broker announces %s (its --public-url), which failed (%v): mesh %s is saved with %s, the URL given with --broker, and its invites name that URL",
			announced, announcedErr, m.Slug, m.BrokerURL),
			"the broker's operator should fix --public-url: it is the URL every other mesh created or joined there is given")
	}
	if out.JSONMode() {
		return out.JSON(meshJSONOf(&m))
	}
	out.Resultf("%s created mesh %s (%s) — you are its owner, as %s", out.Style().Green("✔"), m.Name, m.Slug, m.DisplayName)
	out.Linef("  broker  %s", strings.Join(m.URLs(), ", "))
	out.Linef("%s", out.Style().Dim(out.Commands("→ invite someone: claudemesh invite --mesh "+m.Slug)))
	return nil
}

// wsFormOf is a --broker URL as the WebSocket URL a mesh is saved with:
// http(s):// becomes ws(s)://, and a URL without a path gets /ws.
func wsFormOf(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/ws"
	}
	return u.String()
}

// meshCreateHeldNote is what mesh create says on stderr at its first
// signal while it waits for the broker to create the mesh and prove its
// key (cliui.Hold).
const meshCreateHeldNote = "interrupted: waiting for the broker to create the mesh and prove its key (up to 30 s each), " +
	"so that the owner key of a mesh it may already have created is saved; a second Ctrl-C stops waiting"

// meshLostHint is what to do about a mesh the broker created whose owner
// key was lost: no command deletes a mesh (the operator can only list and
// remove members), and its slug stays taken.
const meshLostHint = "nobody can act as its owner, and claudemesh has no command that deletes a mesh: create yours again with another --slug"

// meshCreateAbandoned is a mesh create whose creation a second signal
// stopped waiting for: the broker may or may not have created the mesh,
// whose owner key, only in this process, is lost. The same mesh create
// tells which: the broker refuses a slug it has (slug_taken).
func meshCreateAbandoned(name string, cause error) error {
	e := cliui.Errorf(cliui.CodeInterrupted,
		"stopped waiting for the broker's answer: it may or may not have created mesh %s, and nothing was saved here", name).
		WithHint("run the same mesh create again: if the mesh was not created, it is now; if the broker answers slug_taken, it was " +
			"(or another mesh has that slug), and " + meshLostHint)
	e.Cause = cause
	return e
}

// addMesh saves a mesh just created or joined to config.json, unless a
// joined mesh has its slug already, and tells the daemon.
func (e *env) addMesh(m config.Mesh) error {
	err := config.Update(e.home, func(cfg *config.Config) error {
		if _, taken := cfg.Find(m.Slug); taken {
			return slugTaken(m.Slug)
		}
		cfg.Upsert(m)
		return nil
	})
	if err != nil {
		return err
	}
	e.reloadDaemon()
	return nil
}

func meshJSONOf(m *config.Mesh) meshJSON {
	return meshJSON{MeshID: m.MeshID, Slug: m.Slug, Name: m.Name, MemberID: m.MemberID, Role: m.Role, BrokerURL: m.BrokerURL, BrokerURLs: m.BrokerURLs}
}

// brokerURLsOf is the brokerUrls a new mesh record keeps for a broker that
// answered with urls: nil for a single broker. A list this client cannot
// use is left out (the mesh works with its brokerUrl alone), with a
// warning in the debug log.
func (e *env) brokerURLsOf(primary string, urls []string) []string {
	list, err := config.BrokerURLsFrom(primary, urls)
	if err != nil {
		e.log.Warn("ignoring the broker's brokerUrls", "err", err)
		return nil
	}
	return list
}

func slugTaken(slug string) error {
	return cliui.Errorf(wire.CodeSlugTaken, "a mesh with slug %q is already joined here", slug).
		WithHint("leave it first (claudemesh mesh leave " + slug + ") or use another --home")
}

// meshListJSON is one element of `mesh list --json`.
type meshListJSON struct {
	Slug      string `json:"slug"`
	MeshID    string `json:"meshId"`
	Name      string `json:"name"`
	Role      string `json:"role"`
	BrokerURL string `json:"brokerUrl"`
	// BrokerURLs: see meshJSON.
	BrokerURLs []string `json:"brokerUrls,omitempty"`
}

func meshListCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:  "list",
		Usage: "list the meshes joined here",
		Description: cliui.WithExamples("Reads config.json (and asks a running daemon whether a membership ended: banned, removed);\n"+
			"it does not contact the brokers.", "claudemesh mesh list", "claudemesh mesh list --json"),
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			meshes, err := e.selectedMeshes()
			if err != nil {
				return err
			}
			rows := make([]meshListJSON, 0, len(meshes))
			for _, m := range meshes {
				rows = append(rows, meshListJSON{Slug: m.Slug, MeshID: m.MeshID, Name: m.Name, Role: m.Role, BrokerURL: m.BrokerURL, BrokerURLs: m.BrokerURLs})
			}
			if e.out.JSONMode() {
				return e.out.JSON(rows)
			}
			if len(rows) == 0 {
				printNotJoined(e.out)
				return nil
			}
			ended := e.endedMemberships()
			tw := newTable(e.out)
			for _, r := range rows {
				role := r.Role
				if ended[r.Slug] != "" {
					role += " (" + ended[r.Slug] + ")"
				}
				tw.row(r.Slug, r.Name, role, r.BrokerURL)
			}
			return tw.flush()
		},
	})
}

func meshLeaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "leave",
		Usage:     "leave a mesh (the broker removes you) and forget it here",
		ArgsUsage: "SLUG",
		Description: cliui.WithExamples(
			"The broker removes the membership and drops what was queued for you; this machine then forgets the\n"+
				"mesh and its key. The sole owner cannot leave. If the broker no longer knows you (removed, banned),\n"+
				"the mesh is forgotten here all the same. While the daemon still has messages to the mesh it has\n"+
				"not sent yet (accepted), leave refuses (exit 6) and says how many (a stopped daemon is started to\n"+
				"answer); --force leaves anyway and they are marked failed (left_mesh). Messages the broker already\n"+
				"holds (queued) are still delivered by it, but this machine no longer learns when: the outbox\n"+
				"shows them untracked. What the daemon received from the mesh stays in its inbox: inbox lists\n"+
				"it with the mesh it came from, and inbox --mesh SLUG alone. Leaving the last mesh leaves a\n"+
				"running daemon running, with no mesh (it takes up the next join; inbox and daemon outbox list\n"+
				"read from it): leave says so, and daemon down stops it.",
			"claudemesh mesh leave acme",
			"claudemesh mesh leave acme --force",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "leave even though messages to the mesh are not sent yet (they are marked failed)"},
		},
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 1, 1)
			if err != nil {
				return err
			}
			slug := c.Args().First()
			cfg, err := e.load()
			if err != nil {
				return err
			}
			m, err := cfg.Choose(slug)
			if err != nil {
				return err
			}
			unsent, held, cerr := e.outboxOf(m.Slug)
			if cerr != nil && !c.Bool("force") {
				cm := config.Invocation(e.home)
				return cliui.Errorf("unsent_messages", "could not ask the daemon whether messages to %s are still unsent: %s", m.Slug, startFailure(cerr)).
					WithHint(fmt.Sprintf("%s daemon up says what is wrong; or leave anyway: %s mesh leave %s --force (unsent ones are then marked failed when the daemon next starts)", cm, cm, m.Slug))
			}
			if unsent > 0 && !c.Bool("force") {
				cm := config.Invocation(e.home)
				return cliui.Errorf("unsent_messages", "%s to %s %s not sent yet: leaving now would strand %s", plural(unsent, "message"), m.Slug, map[bool]string{true: "is", false: "are"}[unsent == 1], map[bool]string{true: "it", false: "them"}[unsent == 1]).
					WithHint(fmt.Sprintf("wait until they are out (%s daemon outbox list --status accepted), or leave anyway: %s mesh leave %s --force (they are then marked failed)", cm, cm, m.Slug))
			}
			notice := ""
			if err := leaveOnBroker(e, m); err != nil {
				switch client.CodeOf(err) {
				case wire.CodeUnauthorized, wire.CodeRevoked, wire.CodeBanned:
					notice = fmt.Sprintf("the broker no longer knew you in %s (%s); forgot it here", m.Slug, client.CodeOf(err))
				default:
					return cliError(err)
				}
			}
			err = config.Update(e.home, func(cfg *config.Config) error {
				cfg.Remove(m.Slug)
				return nil
			})
			if err != nil {
				return err
			}
			e.reloadDaemon()
			if notice != "" && !e.out.JSONMode() {
				e.out.Warn(notice, "")
			}
			if !e.out.JSONMode() {
				if e.g.NoDaemon && fileExists(localapi.DBPath(e.home)) {
					e.out.Warn(fmt.Sprintf("the daemon's outbox was not checked (--no-daemon): when it next starts, messages to %s it has not sent are marked failed (left_mesh)", m.Slug), "")
				}
				if unsent > 0 {
					e.out.Warn(fmt.Sprintf("%s to %s not confirmed by the broker: marked failed (left_mesh); send what matters anew", plural(unsent, "message"), m.Slug), "")
				}
				if held > 0 {
					e.out.Warn(fmt.Sprintf("%s you sent %s still queued at the broker: it delivers them, but this machine no longer learns when", plural(held, "message"), map[bool]string{true: "is", false: "are"}[held == 1]), "")
				}
			}
			// The last mesh left: a running daemon keeps running, with no
			// mesh (the inbox, and the outbox rows just spoken of, stay
			// readable; a send --wait learns its row's end; the next join
			// is taken up). Said, with the way to stop it: `daemon up`
			// refuses a home that joined no mesh.
			pid := 0
			if left, err := e.load(); err == nil && len(left.Meshes) == 0 {
				if _, v, err := localapi.Probe(e.ctx(), e.home); err == nil && v.PID > 0 {
					pid = v.PID
				}
			}
			if e.out.JSONMode() {
				return e.out.JSON(leaveResult{OK: true, DaemonRunning: pid > 0, DaemonPID: pid})
			}
			e.printOK("left %s (%s)", m.Name, m.Slug)
			if pid > 0 {
				cm := config.Invocation(e.home)
				e.out.Linef("the daemon (pid %d) is still running, with no mesh joined: it takes up your next join, and inbox and daemon outbox list still read from it", pid)
				e.out.Linef("%s", e.out.Style().Dim(fmt.Sprintf("→ to stop it: %s daemon down (then daemon up refuses this home until it joins a mesh)", cm)))
			}
			return nil
		},
	}
}

// leaveResult is mesh leave's --json answer: whether a daemon runs on
// with no mesh (the last mesh was left) and its pid.
type leaveResult struct {
	OK            bool `json:"ok"`
	DaemonRunning bool `json:"daemonRunning,omitzero"`
	DaemonPID     int  `json:"daemonPid,omitzero"`
}

// outboxOf counts the daemon's outbox rows of mesh slug that are not
// sent yet (accepted) and those the broker holds for their recipients
// (queued or sent, no receipt yet). A daemon that is not running is
// started to answer, as for any verb, when this home has a daemon.db (a
// home that never ran one has no outbox); an error says it could not be
// asked. 0, 0 with --no-daemon (a daemon started later fails the unsent
// rows of a mesh that is no longer joined).
func (e *env) outboxOf(slug string) (unsent, held int, err error) {
	if e.g.NoDaemon {
		return 0, 0, nil
	}
	api, _, perr := localapi.Probe(e.ctx(), e.home)
	if perr != nil {
		if !fileExists(localapi.DBPath(e.home)) {
			return 0, 0, nil
		}
		if api, err = localapi.Connect(e.ctx(), e.home, true); err != nil {
			return 0, 0, err
		}
	}
	for _, st := range []string{localapi.StatusAccepted, localapi.StatusQueued, localapi.StatusSent} {
		var rows []localapi.OutboxRow
		if _, err := api.Do(e.ctx(), "GET", "/v1/outbox?limit=0&status="+st, nil, &rows); err != nil {
			return 0, 0, err
		}
		for _, r := range rows {
			if r.Mesh != slug {
				continue
			}
			if st == localapi.StatusAccepted {
				unsent++
			} else {
				held++
			}
		}
	}
	return unsent, held, nil
}

// fileExists reports whether path names something (a stat that fails for
// another reason than its absence counts as there).
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

func leaveOnBroker(e *env, m *config.Mesh) error {
	id, err := identityOf(m)
	if err != nil {
		return err
	}
	conn, err := client.Dial(e.ctx(), id, client.DialOptions{Logger: e.log, Header: userAgent()})
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(e.ctx(), opTimeout)
	defer cancel()
	if err := conn.MeshLeave(ctx); err != nil {
		if client.CodeOf(err) == wire.CodeForbidden {
			cm, slug := config.Invocation(e.home), config.ShellQuote(m.Slug)
			if members, _, serr := snapshot(ctx, conn); serr == nil && !othersIn(members, id.Member.PublicHex()) {
				// Nobody to hand it to: naming a transfer was a dead end.
				return cliui.Errorf(wire.CodeForbidden, "you are the only member (and owner) of %s: it cannot be left without an owner, no command deletes a mesh, "+
					"and nobody can take it over until someone joins", m.Slug).
					WithHint("invite someone (" + cm + " invite --mesh " + slug + "), hand it over once they joined (" + cm + " mesh transfer NAME --mesh " + slug + "), then leave")
			}
			return cliui.Errorf(wire.CodeForbidden, "you are the only owner of %s; the mesh would have no owner", m.Slug).
				WithHint("hand it over first: claudemesh mesh transfer PEER --mesh " + slug + ", then leave")
		}
		return err
	}
	return nil
}

// othersIn reports whether members holds an active member other than self.
func othersIn(members []wire.Member, self string) bool {
	for _, mem := range members {
		if mem.Pubkey != self && mem.RevokedAt == 0 {
			return true
		}
	}
	return false
}

// whoamiJSON is `whoami --json` (the session part comes with the daemon).
type whoamiJSON struct {
	Meshes  []whoamiMesh   `json:"meshes"`
	Session *whoamiSession `json:"session,omitzero"`
}

type whoamiMesh struct {
	Slug        string `json:"slug"`
	MeshID      string `json:"meshId"`
	MemberID    string `json:"memberId"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	Role        string `json:"role"`
	BrokerURL   string `json:"brokerUrl"`
	// BrokerURLs: see meshJSON.
	BrokerURLs []string `json:"brokerUrls,omitempty"`
}

func whoamiCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:  "whoami",
		Usage: "show your identity in each joined mesh",
		Description: cliui.WithExamples("Reads config.json (and asks a running daemon whether a membership ended: banned, removed);\n"+
			"secret keys are never printed.",
			"claudemesh whoami", "claudemesh whoami --json --mesh acme"),
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			meshes, err := e.selectedMeshes()
			if err != nil {
				return err
			}
			res := whoamiJSON{Meshes: make([]whoamiMesh, 0, len(meshes))}
			for _, m := range meshes {
				res.Meshes = append(res.Meshes, whoamiMesh{Slug: m.Slug, MeshID: m.MeshID, MemberID: m.MemberID,
					Pubkey: m.Pubkey, DisplayName: m.DisplayName, Role: m.Role, BrokerURL: m.BrokerURL, BrokerURLs: m.BrokerURLs})
			}
			res.Session = e.callingSession()
			if e.out.JSONMode() {
				return e.out.JSON(res)
			}
			if len(meshes) == 0 {
				printNotJoined(e.out)
				return nil
			}
			ended := e.endedMemberships()
			for i, m := range res.Meshes {
				if i > 0 {
					e.out.Resultf("")
				}
				e.out.Resultf("%s in %s (%s), %s", m.DisplayName, m.Slug, meshes[i].Name, e.out.Commands(roleText(m.Role, ended[m.Slug])))
				e.out.Resultf("  pubkey  %s", m.Pubkey)
				e.out.Linef("  member  %s\n  broker  %s", m.MemberID, strings.Join(meshes[i].URLs(), ", "))
			}
			if s := res.Session; s != nil {
				e.out.Resultf("")
				e.out.Resultf("this agent session: %s in %s", s.SessionID, s.Mesh)
				e.out.Resultf("  pubkey  %s", s.Pubkey)
			}
			return nil
		},
	})
}

// checkBrokerURL refuses a --broker that is not a broker URL before
// anything is created, saying what was probably meant: "127.0.0.1:7900"
// is not a URL, "ws://127.0.0.1:7900/ws" is.
func checkBrokerURL(s string) error {
	guess := func() string {
		hostPort := s
		if _, rest, ok := strings.Cut(s, "://"); ok {
			hostPort = rest
		}
		hostPort = strings.TrimSuffix(strings.TrimSuffix(hostPort, "/"), "/ws")
		return "ws://" + hostPort + "/ws"
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || !strings.Contains(s, "://"):
		return cliui.UsageErrorf("--broker %q is not a broker URL", s).WithHint("did you mean " + guess() + "?")
	case u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https":
		return cliui.UsageErrorf("--broker %q: the scheme must be ws://, wss://, http:// or https://", s).
			WithHint("did you mean " + guess() + "?")
	case u.Host == "":
		return cliui.UsageErrorf("--broker %q has no host", s).WithHint("for example ws://127.0.0.1:7900/ws")
	}
	return nil
}

// whoamiSession is whoami's `session` (04-cli): the calling agent session.
type whoamiSession struct {
	SessionID string `json:"sessionId"`
	Pubkey    string `json:"pubkey"`
	Mesh      string `json:"mesh"`
}

// endedMemberships asks a running daemon (never starting one) which of the
// home's memberships ended, by slug: "banned" or "removed" (by the
// broker's operator). config.json still holds them, with the role they
// had: whoami and mesh list said "admin" of a mesh that had removed the
// member.
// endedMembershipsWait bounds the daemon's answer to whoami and mesh list.
const endedMembershipsWait = time.Second

func (e *env) endedMemberships() map[string]string {
	if e.g.NoDaemon || e.out.JSONMode() {
		return nil
	}
	// Only a remark beside what config.json says: a daemon that does not
	// answer at once (stopped, busy) must not hold the listing (it waited
	// the API's 30 s).
	ctx, cancel := context.WithTimeout(e.ctx(), endedMembershipsWait)
	defer cancel()
	api, err := localapi.Connect(ctx, e.home, false)
	if err != nil {
		return nil
	}
	var st localapi.Status
	if _, err := api.Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
		return nil
	}
	ended := map[string]string{}
	for slug, state := range st.Meshes {
		if state == localapi.MeshBanned || state == localapi.MeshRemoved {
			ended[slug] = state
		}
	}
	return ended
}

// roleText is a membership's role as whoami and mesh list show it, with
// the end the daemon knows of.
func roleText(role, ended string) string {
	switch ended {
	case localapi.MeshBanned:
		return role + ", banned: no longer a member (claudemesh daemon status says more)"
	case localapi.MeshRemoved:
		return role + ", removed: no longer a member (claudemesh daemon status says more)"
	}
	return role
}

// callingSession asks a running daemon (never starting one) who the calling
// session is, when CLAUDEMESH_SESSION_TOKEN_FILE names one.
func (e *env) callingSession() *whoamiSession {
	tok := sessionToken(e.home)
	if tok == "" || e.g.NoDaemon {
		return nil
	}
	api, err := localapi.Connect(e.ctx(), e.home, false)
	if err != nil {
		return nil
	}
	api.SessionToken = tok
	var s localapi.Session
	if _, err := api.Do(e.ctx(), "GET", "/v1/sessions/me", nil, &s); err != nil {
		return nil
	}
	return &whoamiSession{SessionID: s.SessionID, Pubkey: s.Pubkey, Mesh: s.Mesh}
}
