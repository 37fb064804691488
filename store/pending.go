package store

// PendingFor returns the ids among ids that have a pending delivery (or
// receipt) record for recipient: the ones a client_ack from recipient would
// settle. It only reads, so the broker can drop unknown and already-settled
// ids before they reach the committer, which every mesh shares: a flood of
// acks for ids that settle nothing must cost its sender, not everyone.
func PendingFor(tx *Tx, meshID, recipient string, ids []string) ([]string, error) {
	b, err := sub(tx, meshID, bDlv)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		v := b.Get(dkey(id, recipient))
		if v == nil {
			continue
		}
		var d deliveryRec
		if err := decodeDelivery(v, &d); err != nil {
			return nil, err
		}
		if d.State == DeliveryPending {
			out = append(out, id)
		}
	}
	return out, nil
}
