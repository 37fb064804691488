package verbs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// Audit verbs: read a mesh's audit chain and verify it (02-crypto "Audit
// chain"). Verification needs nothing but the broker key pinned at join:
// `audit verify` recomputes every hash, checks the broker's signature over
// the head, and compares the head with the last one verified on this
// machine (audit-heads.json in the home), so a broker that later rolls the
// chain back or rewrites it is caught.

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "read and verify the mesh's tamper-evident audit log",
		Description: cliui.WithExamples(
			"Every governance change (joins, leaves, bans, role changes, kicks, grants, invites, topics, API keys,\n"+
				"skills) is recorded by the broker in a hash chain it signs. audit verify proves the log you see is\n"+
				"complete and was never rewritten since you last verified it; it cannot prove the broker recorded\n"+
				"something it never told anyone about.",
			"claudemesh audit log --limit 20",
			"claudemesh audit log --type member_banned --json",
			"claudemesh audit verify"),
		Subcommands: []*cli.Command{auditLogCommand(), auditVerifyCommand()},
	}
}

// auditEntryJSON is one element of `audit log --json`: the entry as the
// broker serves it (enough to recompute its hash), tagged with its mesh.
type auditEntryJSON struct {
	Mesh string `json:"mesh"`
	wire.AuditEntry
}

func auditLogCommand() *cli.Command {
	return &cli.Command{
		Name:  "log",
		Usage: "show audit entries, newest first",
		Description: cliui.WithExamples("TYPE is an event type: "+strings.Join(wire.AuditEventTypes, ", ")+".",
			"claudemesh audit log", "claudemesh audit log --before 120 --limit 50", "claudemesh audit log --type kick --json"),
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "limit", Value: 20, Usage: "show at most `N` entries (1 to 500)"},
			&cli.Uint64Flag{Name: "before", Usage: "only entries before sequence number `SEQ`"},
			&cli.StringFlag{Name: "type", Usage: "only entries of event `TYPE`"},
		},
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			limit := c.Int("limit")
			if limit < 1 || limit > 500 {
				return cliui.UsageErrorf("--limit must be 1 to 500")
			}
			typ := c.String("type")
			if typ != "" && !slices.Contains(wire.AuditEventTypes, typ) {
				return cliui.UsageErrorf("unknown event type %q; the types are %s", typ, strings.Join(wire.AuditEventTypes, ", "))
			}
			var page *wire.AuditEntries
			m, err := e.onWriteMesh(func(ctx context.Context, conn *client.Conn) (err error) {
				page, err = conn.AuditQuery(ctx, wire.AuditQuery{Limit: limit, Before: c.Uint64("before"), EventType: typ})
				return err
			})
			if err != nil {
				return err
			}
			rows := make([]auditEntryJSON, 0, len(page.Entries))
			for _, en := range page.Entries {
				rows = append(rows, auditEntryJSON{Mesh: m.Slug, AuditEntry: en})
			}
			if e.out.JSONMode() {
				return e.out.JSON(rows)
			}
			if len(rows) == 0 {
				e.out.Resultf("no audit entries in %s", m.Slug)
				return nil
			}
			t := newTable(e.out)
			t.row("SEQ", "TIME", "EVENT", "BY", "DETAILS")
			for _, r := range rows {
				at := r.CreatedAt
				if ts, err := time.Parse(time.RFC3339Nano, r.CreatedAt); err == nil {
					at = when(ts.UnixMilli())
				}
				t.row(strconv.FormatUint(r.Seq, 10), at, r.EventType, shortKey(r.ActorPubkey), cliui.SanitizePeerText(summarizePayload(r.Payload)))
			}
			if err := t.flush(); err != nil {
				return err
			}
			if page.More {
				e.out.Linef("%s", e.out.Style().Dim(e.out.Commands(fmt.Sprintf("→ older entries: claudemesh audit log --before %d", rows[len(rows)-1].Seq))))
			}
			return nil
		},
	}
}

// summarizePayload is a one-line reading of a payload for humans: its
// top-level fields, a member object shown by its name. Numbers are shown
// as written (decoded as float64 they lost digits above 2^53, and
// fmt.Sprint made 1797147243144 1.797147243144e+12); a Unix-ms time field
// (…At) is shown as a time.
func summarizePayload(raw jsontext.Value) string {
	var obj map[string]jsontext.Value
	if json.Unmarshal(raw, &obj) != nil {
		return string(raw)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		v := obj[k]
		var s string
		switch v.Kind() {
		case '{':
			s = payloadScalar(v)
			var m map[string]any
			if json.Unmarshal(v, &m) == nil {
				if n, ok := m["displayName"].(string); ok {
					s = n
				}
			}
		case '[':
			var items []jsontext.Value
			json.Unmarshal(v, &items)
			names := []string{}
			for _, it := range items {
				var m map[string]any
				if it.Kind() == '{' && json.Unmarshal(it, &m) == nil {
					if n, ok := m["displayName"].(string); ok {
						names = append(names, n)
						continue
					}
				}
				names = append(names, payloadScalar(it))
			}
			s = strings.Join(names, ",")
		case '0':
			s = payloadScalar(v)
			if ms, err := strconv.ParseInt(s, 10, 64); err == nil && strings.HasSuffix(k, "At") && ms > 1e11 {
				s = time.UnixMilli(ms).Format("2006-01-02T15:04") // local, as the TIME column
			}
		default:
			s = payloadScalar(v)
		}
		if len(s) > 40 {
			s = s[:40] + "…"
		}
		parts = append(parts, k+"="+s)
	}
	return strings.ReplaceAll(strings.Join(parts, " "), "\n", " ")
}

// payloadScalar prints one JSON value of a payload: a string unquoted, a
// number with the digits it was written with, anything else as JSON.
func payloadScalar(v jsontext.Value) string {
	if v.Kind() == '"' {
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
	}
	return string(v)
}

// auditReportJSON is one element of `audit verify --json`.
type auditReportJSON struct {
	Mesh        string         `json:"mesh"`
	MeshID      string         `json:"meshId"`
	OK          bool           `json:"ok"`
	Seq         uint64         `json:"seq"`
	Hash        string         `json:"hash"`
	Entries     int            `json:"entries"`
	Problem     string         `json:"problem,omitzero"`
	FirstBadSeq uint64         `json:"firstBadSeq,omitzero"`
	Message     string         `json:"message,omitzero"`
	Previous    *auditHeadJSON `json:"previous,omitzero"`
	Error       *errorJSON     `json:"error,omitzero"`
	owner       bool           // the member verifying is the mesh's owner (its hint)
}

type auditHeadJSON struct {
	Seq        uint64 `json:"seq"`
	Hash       string `json:"hash"`
	VerifiedAt string `json:"verifiedAt"`
}

func reportJSON(slug string, r *client.AuditReport) auditReportJSON {
	out := auditReportJSON{Mesh: slug, MeshID: r.MeshID, OK: r.OK, Seq: r.Head.Seq, Hash: r.Head.Hash, Entries: r.Entries,
		Problem: r.Problem, FirstBadSeq: r.FirstBadSeq, Message: r.Message}
	if p := r.Previous; p != nil {
		out.Previous = &auditHeadJSON{Seq: p.Seq, Hash: p.Hash, VerifiedAt: p.VerifiedAt.UTC().Format(time.RFC3339)}
	}
	return out
}

func auditVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check the audit log of each joined mesh (or --mesh) against the pinned broker key",
		Description: cliui.WithExamples(
			"Exit 0 when every chain verifies; exit 1 with the finding (the first bad sequence number) when an entry\n"+
				"was altered or removed, the chain is shorter than one verified here before (rollback), an entry\n"+
				"verified before changed (rewrite), or the broker's signature is not by the key pinned at join.",
			"claudemesh audit verify", "claudemesh audit verify --mesh acme --json",
			"claudemesh audit verify --mesh acme --accept 54"),
		Flags: []cli.Flag{
			&cli.Uint64Flag{Name: "accept", Usage: "accept the broker's current history in place of the one verified here, once you know why it changed (a restored backup): `SEQ` is the first bad entry audit verify reported; the chain must still verify on its own"},
		},
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			if c.IsSet("accept") {
				return acceptAuditHistory(e, c.Uint64("accept"))
			}
			meshes, err := e.readMeshes()
			if err != nil {
				return err
			}
			var rows []auditReportJSON
			var bad, failed int
			var firstErr error
			for i := range meshes {
				m := &meshes[i]
				var rep *client.AuditReport
				err := e.direct().exchange(e.ctx(), m, func(ctx context.Context, conn *client.Conn) (err error) {
					rep, err = client.VerifyMeshAudit(ctx, e.home, m.MeshID, m.BrokerPubkey, conn)
					return err
				})
				if err != nil && rep == nil {
					failed++
					firstErr = firstOf(firstErr, cliError(meshError(m.Slug, err)))
					code, msg := classify(err)
					rows = append(rows, auditReportJSON{Mesh: m.Slug, MeshID: m.MeshID, Error: &errorJSON{Code: code, Message: msg}})
					continue
				}
				if err != nil {
					e.out.Warn(fmt.Sprintf("%s: the chain verified, but its head could not be recorded: %v", m.Slug, err), "")
				}
				if !rep.OK {
					bad++
				}
				row := reportJSON(m.Slug, rep)
				row.owner = m.Role == wire.MemberOwner
				rows = append(rows, row)
			}
			if failed == len(meshes) {
				return firstErr
			}
			if e.out.JSONMode() {
				if err := e.out.JSON(rows); err != nil {
					return err
				}
			} else {
				printAuditReports(e.out, rows)
			}
			if bad > 0 {
				return cliui.Reported(cliui.ExitFailure)
			}
			return nil
		},
	}
}

func printAuditReports(out *cliui.Out, rows []auditReportJSON) {
	s := out.Style()
	for _, r := range rows {
		switch {
		case r.Error != nil:
			out.Warn(withMesh(r.Mesh, r.Error.Message), hintFor(r.Error.Code))
		case r.OK:
			extra := ""
			if r.Previous != nil {
				extra = fmt.Sprintf(", extending the head verified %s (entry %d)", r.Previous.VerifiedAt, r.Previous.Seq)
			}
			out.Resultf("%s %s: %s verified, head %d %s%s", s.Green("✔"), r.Mesh, plural(r.Entries, "entry"), r.Seq, shortKey(r.Hash), extra)
		default:
			out.Resultf("%s %s: %s at entry %d — %s", s.Red("✘"), r.Mesh, strings.ReplaceAll(r.Problem, "_", " "), r.FirstBadSeq, r.Message)
			who := "tell the mesh owner and keep a copy of this output"
			if r.owner {
				who = "keep a copy of this output, ask the broker's operator what happened, and tell your members"
			}
			out.Linef("%s", s.Dim("→ the broker's record of this mesh cannot be trusted: "+who))
			if r.Problem == client.AuditRollback || r.Problem == client.AuditRewrite {
				out.Linef("%s", s.Dim(out.Commands(fmt.Sprintf("→ only once you know the change is legitimate (the broker restored a backup): claudemesh audit verify --mesh %s --accept %d", r.Mesh, r.FirstBadSeq))))
			}
		}
	}
}

// auditAcceptJSON is `audit verify --accept --json`.
type auditAcceptJSON struct {
	Mesh       string           `json:"mesh"`
	MeshID     string           `json:"meshId"`
	Accepted   bool             `json:"accepted"` // false: the chain verified as it was
	Seq        uint64           `json:"seq"`
	Hash       string           `json:"hash"`
	Entries    int              `json:"entries"`
	Replaced   *auditReportJSON `json:"replaced,omitzero"` // the finding accepted
	KeptHashes string           `json:"keptHashes,omitzero"`
}

// acceptAuditHistory is `audit verify --accept SEQ` (client.AcceptMeshAudit):
// one mesh, its finding at SEQ accepted after an out-of-band check. A
// running daemon is told, so its status stops showing the finding once it
// has checked again.
func acceptAuditHistory(e *env, seq uint64) error {
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	var rep *client.AuditReport
	var kept string
	var acceptErr error
	err = e.direct().exchange(e.ctx(), m, func(ctx context.Context, conn *client.Conn) error {
		var err error
		rep, kept, err = client.AcceptMeshAudit(ctx, e.home, m.MeshID, m.BrokerPubkey, conn, seq)
		if rep != nil {
			acceptErr, err = err, nil // a refusal, not a failure to reach the broker
		}
		return err
	})
	if err != nil {
		return cliError(meshError(m.Slug, err))
	}
	if acceptErr != nil {
		return cliui.Errorf("not_accepted", "%s: nothing accepted: %v", m.Slug, acceptErr)
	}
	out := auditAcceptJSON{Mesh: m.Slug, MeshID: m.MeshID, Accepted: !rep.OK, Seq: rep.Head.Seq, Hash: rep.Head.Hash, KeptHashes: kept}
	if !rep.OK {
		r := reportJSON(m.Slug, rep)
		out.Replaced = &r
		out.Entries = int(rep.Head.Seq)
	} else {
		out.Entries = rep.Entries
	}
	e.reloadDaemon()
	if e.out.JSONMode() {
		return e.out.JSON(out)
	}
	st := e.out.Style()
	if rep.OK {
		e.out.Resultf("%s %s: the chain verifies as it is (%s, head %d): nothing to accept", st.Green("✔"), m.Slug, plural(rep.Entries, "entry"), rep.Head.Seq)
		return nil
	}
	e.out.Resultf("%s %s: accepted the broker's history (%s, head %d %s) in place of the one verified here (%s at entry %d)",
		st.Green("✔"), m.Slug, plural(int(rep.Head.Seq), "entry"), rep.Head.Seq, shortKey(rep.Head.Hash), strings.ReplaceAll(rep.Problem, "_", " "), rep.FirstBadSeq)
	e.out.Linef("  head %d %s: compare it with the head the broker's operator gives", rep.Head.Seq, rep.Head.Hash)
	if kept != "" {
		e.out.Linef("%s", st.Dim("  the hashes verified before are kept in "+kept))
	}
	return nil
}
