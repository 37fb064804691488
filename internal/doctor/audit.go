package doctor

import (
	"fmt"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
)

// checkAudit reports each mesh's audit chain: the daemon's last background
// check when a daemon runs (a finding there is a failure: the broker's
// record of the mesh was edited, rolled back or rewritten), else the head
// last verified on this machine by `audit verify`. It does not fetch the
// chain itself; `claudemesh audit verify` does.
func checkAudit(e *Env) []Result {
	cfg, err := config.Load(e.Home)
	if err != nil || len(cfg.Meshes) == 0 {
		return nil
	}
	var daemon map[string]localapi.AuditStatus
	if cl, _, err := localapi.Probe(e.Ctx, e.Home); err == nil {
		var st localapi.Status
		if _, err := cl.Do(e.Ctx, "GET", "/v1/status", nil, &st); err == nil {
			daemon = st.Audit
		}
	}
	heads, _ := config.AuditHeads(e.Home)
	var out []Result
	for _, m := range cfg.Meshes {
		name := "audit " + m.Slug
		if a, ok := daemon[m.Slug]; ok {
			switch {
			case a.OK:
				out = append(out, Result{Name: name, Status: OK, Message: "the daemon verified " + count(int(a.Seq), "entry", "entries") + " against the pinned broker key"})
			case a.Problem != "":
				// A finding stays a failure when a later check could
				// not run.
				msg := fmt.Sprintf("%s at entry %d: %s", a.Problem, a.FirstBadSeq, a.Message)
				if a.Error != "" {
					msg += " (the check since could not run: " + a.Error + ")"
				}
				out = append(out, Result{Name: name, Status: Fail, Message: msg,
					Fix: "the broker's record of this mesh cannot be trusted: tell the mesh owner; claudemesh audit verify --mesh " + m.Slug + " shows the finding"})
			default:
				out = append(out, Result{Name: name, Status: Warn, Message: "the daemon's check could not run: " + a.Error, Fix: "claudemesh audit verify --mesh " + m.Slug})
			}
			continue
		}
		if h, ok := heads[m.MeshID]; ok {
			out = append(out, Result{Name: name, Status: OK, Message: fmt.Sprintf("verified up to entry %d on %s", h.Seq, h.VerifiedAt)})
			continue
		}
		out = append(out, Result{Name: name, Status: Warn, Message: "never verified on this machine", Fix: "claudemesh audit verify --mesh " + m.Slug})
	}
	return out
}
