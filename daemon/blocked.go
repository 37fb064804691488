package daemon

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What `block` frees (trial 18, finding 11). A block refuses a member's new
// DMs at the broker, but what that member sent before stayed: its unseen
// rows kept their share of the inbox, and its pushes already queued kept
// coming, to be refused for that share and left on the broker. The daemon
// reads the member's grants (grants_get) when a mesh opens and when it is
// told to reload (the grant verbs do, after a change): rows from a member
// blocked there are marked seen (listed by `inbox --all`, no longer new,
// and the first the cap drops), and its pushes still on their way are
// stored as seen and acked, not announced to followers or agent sessions.

// refreshBlocked reads which members m's member blocked and, for those
// newly blocked, marks their unseen rows seen and makes room.
func (d *Daemon) refreshBlocked(m *meshRT) {
	c := m.conn()
	if c == nil {
		if h := d.opts.testBlockedSkipped; h != nil {
			h()
		}
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	g, err := c.GrantsGet(ctx)
	if err != nil {
		d.log.Debug("grants", "mesh", m.cfg.Slug, "err", err)
		return
	}
	set := map[string]bool{}
	for k, caps := range g.Grants {
		if caps != nil && len(caps) == 0 {
			set[k] = true
		}
	}
	m.mu.Lock()
	old := m.blocked
	m.blocked = set
	m.mu.Unlock()
	var fresh []string
	for k := range set {
		if !old[k] {
			fresh = append(fresh, k)
		}
	}
	if len(fresh) > 0 {
		d.seenFrom(m, fresh)
	}
}

// isBlocked reports whether m's member blocked sending member from.
func (m *meshRT) isBlocked(from string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.blocked[from]
}

// seenFrom marks the unseen rows of m from the given sending members seen.
func (d *Daemon) seenFrom(m *meshRT, members []string) {
	want := map[string]bool{}
	for _, k := range members {
		want[k] = true
	}
	now := time.Now().UnixMilli()
	n := 0
	err := d.db.Update(func(tx *bolt.Tx) error {
		n = 0
		ib := tx.Bucket(bInbox)
		var keys [][]byte
		c := ib.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if !bytesContains(v, `"seenAt"`) && want[rowSender(v)] {
				keys = append(keys, append([]byte(nil), k...))
			}
		}
		for _, k := range keys {
			var r inboxRow
			if err := getJSON(ib, k, &r); err != nil {
				return err
			}
			if r.MeshID != m.cfg.MeshID || r.SeenAt != 0 {
				continue
			}
			r.SeenAt = now
			if err := putJSON(ib, k, &r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		d.log.Error("inbox: marking a blocked member's rows seen", "err", err)
		return
	}
	if n > 0 {
		d.log.Info("inbox: a blocked member's unseen rows were marked seen", "mesh", m.cfg.Slug, "rows", n)
		d.inboxChanged()
		d.unseenChanged()
		d.threadsChanged()
		d.trimInbox()
	}
	d.roomMade()
}

// refreshBlockedAll reads the grants of every open mesh (a reload).
func (d *Daemon) refreshBlockedAll() {
	for _, m := range d.meshList() {
		go d.refreshBlocked(m)
	}
}
