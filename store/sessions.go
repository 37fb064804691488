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
// record is left missing, and a later time already stored is kept.
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
	if s.LastSeenAt >= at {
		return nil
	}
	s.LastSeenAt = at
	return b.Put(pk(pubkey), enc(&s))
}

// ForgetSession deletes the stored record of a session key that memory
// forgot, with its queue, returning what was dropped, when the store holds
// that recording (SameRecording), an earlier recording made by the same
// node (the same Node, a smaller HelloAt), or none. An earlier recording
// of the node is the one the node's memory replaced with the recording it
// forgot, whose own write was cancelled before it ran (the key said hello
// with again, then evicted or expired while that write waited): one clock
// stamped both. Another node's recording stays with its queue: a hello of
// the key there may have recorded it again meanwhile, and that node's
// clock need not agree with this one's, so HelloAt cannot say which is
// later; deleting it would drop messages the broker accepted for a
// session that may be connected. A recording so left that no node's
// memory holds (two nodes' hellos of one key, the store keeping the one
// that committed last) is loaded at the next start and expires with its
// own LastSeenAt. kept is the recording it left (nil: it deleted, or
// the store held none), for the caller's memory to know the key by.
func ForgetSession(tx *Tx, meshID string, forgotten *Session) (dropped []Expired, kept *Session, err error) {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return nil, nil, err
	}
	if v := b.Get(pk(forgotten.Pubkey)); v != nil {
		var s Session
		if dec(v, &s) == nil && !SameRecording(&s, forgotten) && (s.Node != forgotten.Node || s.HelloAt > forgotten.HelloAt) {
			return nil, &s, nil
		}
		if err := b.Delete(pk(forgotten.Pubkey)); err != nil {
			return nil, nil, err
		}
	}
	dropped, err = DropQueue(tx, meshID, forgotten.Pubkey)
	return dropped, nil, err
}
