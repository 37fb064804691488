package daemon

import (
	"context"
	"net/http"
	"sync"
	"time"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
)

// Governance in the daemon: what it does when an admin kicks or bans this
// member (the mesh's presence stops for good, its outbox rows wait, and
// `daemon up` or a reload brings it back), the daily audit-chain check of
// every mesh, and the mesh-skill routes.

// stopped reports whether the mesh's presence ended because the broker
// told this member to go away (kicked or banned): such a mesh is started
// afresh by Reload (`daemon up`, POST /v1/reload), after an unban, or at
// the user's word after a kick.
func (m *meshRT) stopped() bool {
	p := m.presence.Load()
	if p == nil {
		return false
	}
	s, _ := p.State()
	return s == client.StateKicked || s == client.StateRemoved || s == client.StateBanned
}

// auditState is the outcome of a mesh's last background audit check.
type auditState struct {
	mu  sync.Mutex
	res map[string]localapi.AuditStatus // by mesh slug
}

func (a *auditState) set(slug string, st localapi.AuditStatus) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.res == nil {
		a.res = map[string]localapi.AuditStatus{}
	}
	a.res[slug] = st
}

// couldNotRun records a check that could not run. What an earlier check
// found wrong stays until a check runs: a broker that answers a daemon
// which found its rollback by cutting the next connection, or by never
// answering audit_query, must not turn the finding into "could not run".
func (a *auditState) couldNotRun(slug string, at int64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.res == nil {
		a.res = map[string]localapi.AuditStatus{}
	}
	st := a.res[slug]
	if st.Problem == "" {
		st = localapi.AuditStatus{CheckedAt: at}
	}
	st.Error = err.Error()
	a.res[slug] = st
}

// hasProblem reports whether the last check that ran for slug found the
// chain wrong.
func (a *auditState) hasProblem(slug string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.res[slug].Problem != ""
}

func (a *auditState) snapshot() map[string]localapi.AuditStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.res) == 0 {
		return nil
	}
	out := make(map[string]localapi.AuditStatus, len(a.res))
	for k, v := range a.res {
		out[k] = v
	}
	return out
}

// auditLoop verifies the mesh's audit chain on every connection the mesh
// opens (a broker restarted from an older copy of its store serves a
// shorter chain: a rollback shows at the reconnection, not a day later),
// and every AuditInterval (a day) while one stays open, and records the
// outcome for `daemon status` and `doctor`. A failure is also logged. It
// shares the verified heads with `audit verify` (audit-heads.json).
//
// The first check and then one every AuditInterval read the whole chain
// (500 entries a request); a check at a reconnection in between reads
// only what was appended since the head verified here
// (client.VerifyMeshAuditSince): when a broker restarts, every daemon of
// its meshes reconnects at once, and a long chain read in full by each
// would be the broker's largest cost of the restart.
func (m *meshRT) auditLoop(ctx context.Context) {
	interval := m.d.opts.AuditInterval
	var checked *client.Conn // the connection of the last check
	var at, fullAt time.Time
	for {
		p := m.presence.Load()
		changed := p.Changed()
		if s, _ := p.State(); finalForGood(p, s) {
			return // a mismatch is checked again: the loop waits for it
		}
		c := m.conn()
		if c != nil && (c != checked || time.Since(at) >= interval) {
			// Full while a finding stands: a check from the head verified
			// here does not read again the entry a full one found edited,
			// and would clear the finding.
			full := fullAt.IsZero() || time.Since(fullAt) >= interval || m.d.audit.hasProblem(m.cfg.Slug)
			if m.checkAudit(ctx, c, full) && full {
				fullAt = time.Now()
			}
			checked, at = c, time.Now()
			continue
		}
		var due <-chan time.Time
		var t *time.Timer
		if c != nil {
			t = time.NewTimer(interval - time.Since(at))
			due = t.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-due:
		case <-m.auditWake:
			checked = nil // a check on the current connection, now
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// checkAudit verifies the chain over c, in full or from the head verified
// here, and reports whether the check ran (whatever it found).
func (m *meshRT) checkAudit(ctx context.Context, c *client.Conn, full bool) bool {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st := localapi.AuditStatus{CheckedAt: time.Now().UnixMilli()}
	verify := client.VerifyMeshAuditSince
	if full {
		verify = client.VerifyMeshAudit
	}
	rep, err := verify(cctx, m.d.home, m.cfg.MeshID, m.cfg.BrokerPubkey, c)
	switch {
	case rep == nil && ctx.Err() != nil:
		return false // the daemon is stopping
	case rep == nil:
		// Out of time, or the connection lost: said so (the next open
		// or day tries again), beside what an earlier check found.
		m.d.log.Warn("audit check could not run", "mesh", m.cfg.Slug, "err", err)
		m.d.audit.couldNotRun(m.cfg.Slug, st.CheckedAt, err)
		return false
	default:
		st.OK, st.Seq, st.Problem, st.FirstBadSeq, st.Message = rep.OK, rep.Head.Seq, rep.Problem, rep.FirstBadSeq, rep.Message
		if !rep.OK {
			m.d.log.Error("audit chain check failed", "mesh", m.cfg.Slug, "problem", rep.Problem, "firstBadSeq", rep.FirstBadSeq, "message", rep.Message)
		}
		if err != nil {
			m.d.log.Warn("audit chain verified, but its head could not be recorded", "mesh", m.cfg.Slug, "err", err)
		}
	}
	m.d.audit.set(m.cfg.Slug, st)
	return true
}

func (d *Daemon) handleSkills(w http.ResponseWriter, r *http.Request) {
	slug, query := r.URL.Query().Get("mesh"), r.URL.Query().Get("query")
	d.brokerCall(w, r, slug, func(ctx context.Context, c *client.Conn) (any, error) {
		list, err := c.SkillList(ctx, query)
		if err != nil {
			return nil, err
		}
		mesh := d.meshOfConn(slug)
		out := make([]localapi.Skill, 0, len(list))
		for _, s := range list {
			out = append(out, localapi.Skill{Mesh: mesh, Name: s.Name, Description: s.Description, Tags: s.Tags,
				AuthorName: s.AuthorName, AuthorPubkey: s.AuthorPubkey, Size: s.Size, UpdatedAt: s.UpdatedAt})
		}
		return out, nil
	})
}

func (d *Daemon) handleSkill(w http.ResponseWriter, r *http.Request) {
	slug, name := r.URL.Query().Get("mesh"), r.PathValue("name")
	d.brokerCall(w, r, slug, func(ctx context.Context, c *client.Conn) (any, error) {
		s, err := c.SkillGet(ctx, name)
		if err != nil {
			return nil, err
		}
		return localapi.Skill{Mesh: d.meshOfConn(slug), Name: s.Name, Description: s.Description, Tags: s.Tags,
			AuthorName: s.AuthorName, AuthorPubkey: s.AuthorPubkey, Size: s.Size, UpdatedAt: s.UpdatedAt, Body: s.Body}, nil
	})
}

// meshOfConn is the slug brokerCall chose for slug ("" = the only mesh).
func (d *Daemon) meshOfConn(slug string) string {
	if m, err := d.chooseMesh(slug); err == nil {
		return m.cfg.Slug
	}
	return slug
}
