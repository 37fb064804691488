package store

// DeleteSession forgets one known session key. Its queue is the caller's
// to drop (DropQueue) in the same transaction.
func DeleteSession(tx *Tx, meshID, pubkey string) error {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return err
	}
	return b.Delete(pk(pubkey))
}

// TouchSession records when a session key was last connected; a missing
// record is left missing.
func TouchSession(tx *Tx, meshID, pubkey string, at int64) error {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return err
	}
	v := b.Get(pk(pubkey))
	if v == nil {
		return nil
	}
	var s Session
	if err := dec(v, &s); err != nil {
		return nil // reported at start-up, not fatal here
	}
	s.LastSeenAt = at
	return b.Put(pk(pubkey), enc(&s))
}
