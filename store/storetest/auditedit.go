package storetest

import (
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// EditAuditEntry rewrites entry seq of the only mesh in a stopped broker's
// broker.db at path the way someone with the disk could: in place, without
// fixing any hash. The tests of the audit chain's verification use it to
// make a broker serve an edited entry.
func EditAuditEntry(t testing.TB, path string, seq uint64, edit func(map[string]any)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		meshes := tx.Bucket([]byte("meshes"))
		return meshes.ForEachBucket(func(id []byte) error {
			b := meshes.Bucket(id).Bucket([]byte("audit"))
			k := binary.BigEndian.AppendUint64(nil, seq)
			var e map[string]any
			if err := json.Unmarshal(b.Get(k), &e); err != nil {
				return err
			}
			edit(e)
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			return b.Put(k, v)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
