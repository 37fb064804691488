package daemon

import (
	"claudemesh/client/config"
)

// noteRole keeps the member's role in config.json (what `mesh list` and
// `whoami` print) in step with the broker: the role written at join goes
// stale when an owner changes it or hands the mesh over (`mesh transfer`),
// and a listing that still says "member" to a new owner is untrue. The
// broker states the role in every hello_ack and in member_changed events
// for this member. A failed write is logged; the next connect retries.
func (m *meshRT) noteRole(role string) {
	if role == "" {
		return
	}
	if m.role() == role {
		return
	}
	err := config.RecordRole(m.d.home, m.cfg.MeshID, role)
	if err != nil {
		m.d.log.Warn("could not record the member's new role in config.json", "mesh", m.cfg.Slug, "role", role, "err", err)
		return
	}
	m.mu.Lock()
	m.roleNow = role
	m.mu.Unlock()
	m.d.log.Info("the member's role changed", "mesh", m.cfg.Slug, "role", role)
}

// role is the member's role in this mesh as the broker last said it (the
// one in config.json until then).
func (m *meshRT) role() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.roleNow != "" {
		return m.roleNow
	}
	return m.cfg.Role
}

// noteBrokerURLs records the broker URLs a clustered broker announces in
// hello_ack in config.json (only when they changed), so the one-shot verbs
// and the next daemon start know every node the presence learned of. A
// failed write is logged; the next connect retries.
func (m *meshRT) noteBrokerURLs(announced []string) {
	urls, err := config.BrokerURLsFrom(m.cfg.BrokerURL, announced)
	if err != nil {
		m.d.log.Warn("the broker announced unusable broker URLs; ignored", "mesh", m.cfg.Slug, "err", err)
		return
	}
	if urls == nil {
		return
	}
	if err := config.RecordBrokerURLs(m.d.home, m.cfg.MeshID, urls); err != nil {
		m.d.log.Warn("could not record the broker's URLs in config.json", "mesh", m.cfg.Slug, "err", err)
	}
}
