package store

import (
	"bytes"
)

// Buckets of schema 5 and earlier that schema 6 drops: expiry and purge
// indexes written for every message, replaced by walks of the queues (from
// their heads) and of msgs (from the oldest).
var (
	bMsgExp  = []byte("msgexp")  // createdAt ‖ messageId → nil
	bRcptExp = []byte("rcptexp") // createdAt ‖ raw recipient ‖ seq → receiptId
	bMsgDel  = []byte("msgdel")  // createdAt ‖ messageId → nil: expired, awaiting purge
)

// legacyIdemKey is the idempotency key before schema 6.
func legacyIdemKey(sender, clientMessageID string) []byte {
	return cat(pk(sender), []byte(clientMessageID))
}

// migrateQueueLayout (5 → 6) moves a file to the append-friendly queue
// layout of queue.go: every mesh gains its bodies bucket, idempotency keys
// are rewritten client id first, and the expiry and purge indexes go.
// Messages written before keep their push inline (GetMessage reads both),
// and receipts queued before keep their delivery records (Ack and expiry
// settle both kinds), so nothing in flight is lost or delivered twice.
func migrateQueueLayout(tx *Tx) error {
	meshes := tx.Bucket(bucketMeshes)
	return meshes.ForEachBucket(func(id []byte) error {
		mb := meshes.Bucket(id)
		if _, err := mb.CreateBucketIfNotExists(bBodies); err != nil {
			return err
		}
		idem := mb.Bucket(bIdem)
		var olds, news [][]byte
		var vals [][]byte
		err := idem.ForEach(func(k, v []byte) error {
			if len(k) < 32 {
				return nil
			}
			// sender (32 raw bytes) ‖ clientMessageId
			olds = append(olds, bytes.Clone(k))
			news = append(news, cat(k[32:], k[:32]))
			vals = append(vals, bytes.Clone(v))
			return nil
		})
		if err != nil {
			return err
		}
		for i := range olds {
			if err := idem.Delete(olds[i]); err != nil {
				return err
			}
		}
		for i := range news {
			if err := idem.Put(news[i], vals[i]); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bMsgExp, bRcptExp, bMsgDel} {
			if mb.Bucket(name) != nil {
				if err := mb.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
