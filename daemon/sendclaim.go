package daemon

// A pending row of the outbox is claimed while something decides its
// fate: a drain round that returned it (the drain sends it), or a failer
// recording that it can never be sent (session_ended, left_mesh,
// member_removed). A drain round returns no claimed row, and a failer
// leaves a row the drain is sending (its outcome is the drain's to
// record), so a row is never both sent and failed, nor sent twice by two
// rounds. (Two failers may hold one row: each reads it again in its
// write transaction.)
//
// A claim whose row's outcome was committed (settle) is released only by
// the next round of its mesh's drain, before that round reads the outbox,
// or between rounds: a round reads the outbox in one read transaction,
// and one that began before the commit still finds the row pending.
// Released at once instead (as before claims), such a round found the row
// pending and not busy and sent it again after its ack was recorded, or
// sent a row the outbox had just called dead. A mesh's rounds run one at
// a time (under meshRT.lineMu), so a claim settled before a round begins
// is safe to release in that round.

// rowClaim is one row's claim: sending while the drain sends the row and
// has not recorded its outcome ("inflight" lives here, not in
// daemon.db), holds the failers holding it plus the settled claims
// waiting for their release.
type rowClaim struct {
	sending bool
	holds   int
}

// claimForSend claims the row seq for a drain round, if nothing claims it.
func (d *Daemon) claimForSend(seq uint64) bool {
	d.claimsMu.Lock()
	defer d.claimsMu.Unlock()
	if _, taken := d.claims[seq]; taken {
		return false
	}
	if d.claims == nil {
		d.claims = map[uint64]rowClaim{}
	}
	d.claims[seq] = rowClaim{sending: true}
	return true
}

// claimed says whether the row seq is claimed, or its claim not released.
func (d *Daemon) claimed(seq uint64) bool {
	d.claimsMu.Lock()
	defer d.claimsMu.Unlock()
	_, taken := d.claims[seq]
	return taken
}

// unclaim releases a round's claim on a row the drain did not send after
// all (the row did not change).
func (d *Daemon) unclaim(seq uint64) {
	d.claimsMu.Lock()
	defer d.claimsMu.Unlock()
	if c, taken := d.claims[seq]; taken && c.sending && c.holds == 0 {
		delete(d.claims, seq)
	}
}

// settle says the claimed row seq's outcome is committed (the drain's
// record of its send, or a failer's): m's next drain round releases the
// claim. With no mesh (m nil) or a drain that has ended, no round reads
// the row any more, and it is released now.
func (d *Daemon) settle(m *meshRT, seq uint64) {
	d.claimsMu.Lock()
	defer d.claimsMu.Unlock()
	c, taken := d.claims[seq]
	if !taken {
		return
	}
	if c.sending {
		c.sending = false
		c.holds++ // released by a round, below
		d.claims[seq] = c
	}
	if m == nil || m.drainEnded {
		d.releaseLocked(seq)
		return
	}
	m.settled = append(m.settled, seq)
}

// releaseLocked drops one hold of the row seq's claim.
func (d *Daemon) releaseLocked(seq uint64) {
	if c, taken := d.claims[seq]; taken {
		if c.holds--; c.holds <= 0 && !c.sending {
			delete(d.claims, seq)
		} else {
			d.claims[seq] = c
		}
	}
}

// releaseSettled releases the claims of m's rows whose outcomes were
// committed before now: called with m.lineMu held, by a round before it
// reads the outbox, or between rounds (releaseBetweenRounds).
func (m *meshRT) releaseSettled() {
	m.d.claimsMu.Lock()
	defer m.d.claimsMu.Unlock()
	for _, seq := range m.settled {
		m.d.releaseLocked(seq)
	}
	m.settled = m.settled[:0]
}

// releaseBetweenRounds releases the claims of recorded outcomes while no
// round runs (the mesh is not open: its rows are not read).
func (m *meshRT) releaseBetweenRounds() {
	m.lineMu.Lock()
	defer m.lineMu.Unlock()
	m.releaseSettled()
}

// endClaims releases m's settled claims when its drain ends (no round
// follows), and those settled later at once.
func (m *meshRT) endClaims() {
	m.d.claimsMu.Lock()
	m.drainEnded = true
	m.d.claimsMu.Unlock()
	m.releaseBetweenRounds()
}

// failUnlessSending runs fail, a failer's record that the row seq can
// never be sent, unless the drain is sending the row (its outcome is the
// drain's to record), and says whether it ran. The row is claimed
// meanwhile, so no round sends it; fail reads it again in its write
// transaction, so a row sent and recorded since the caller listed it is
// left as it is.
func (d *Daemon) failUnlessSending(m *meshRT, seq uint64, fail func()) bool {
	d.claimsMu.Lock()
	c := d.claims[seq]
	if c.sending {
		d.claimsMu.Unlock()
		return false
	}
	if d.claims == nil {
		d.claims = map[uint64]rowClaim{}
	}
	c.holds++
	d.claims[seq] = c
	d.claimsMu.Unlock()
	fail()
	d.settle(m, seq)
	return true
}

// inflightCount is the number of rows being sent (pending in daemon.db,
// inflight in memory), for the status counts.
func (d *Daemon) inflightCount() int {
	d.claimsMu.Lock()
	defer d.claimsMu.Unlock()
	n := 0
	for _, c := range d.claims {
		if c.sending {
			n++
		}
	}
	return n
}

// isSending says whether the drain is sending the row with this seq: a
// pending row in daemon.db that is shown as inflight.
func (d *Daemon) isSending(seq uint64) bool {
	d.claimsMu.Lock()
	defer d.claimsMu.Unlock()
	return d.claims[seq].sending
}
