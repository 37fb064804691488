package store

import (
	bolt "go.etcd.io/bbolt"
)

// Tx is a transaction over the broker's records. It is bbolt's transaction
// with one addition: it can record every change it makes (a redo log of
// puts, deletes, bucket creations and sequence numbers) so that a cluster
// can replay exactly those changes on every node (store/redo.go, and the
// cluster package's JetStream engine). A single broker never records; the
// wrapper then only forwards to bbolt.
//
// The broker's code reaches its records only through Tx, Bucket and Cursor,
// which offer the subset of bbolt's API the records need, with the same
// meaning.
type Tx struct {
	tx  *bolt.Tx
	rec *Redo
	// meshes are the mesh buckets meshBucket has opened in a write
	// transaction, each remembering its sub-buckets: a broker's commit
	// runs hundreds of writes of one mesh in one Tx (Local), each opening
	// the same five queue buckets, which were as many lookups and
	// wrappers a write. Never while recording (the wrappers' paths).
	meshes map[string]*Bucket
}

// WrapTx wraps a bbolt transaction; rec (nil for none) receives every
// change made through it.
func WrapTx(tx *bolt.Tx, rec *Redo) *Tx { return &Tx{tx: tx, rec: rec} }

// Bolt is the underlying bbolt transaction, for reads that need bbolt's
// own API (backups: WriteTo). Writes through it are not recorded.
func (t *Tx) Bolt() *bolt.Tx { return t.tx }

// Writable reports whether the transaction may write.
func (t *Tx) Writable() bool { return t.tx.Writable() }

// Bucket returns a top-level bucket, or nil.
func (t *Tx) Bucket(name []byte) *Bucket {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return t.wrap(b, nil, name)
}

// CreateBucketIfNotExists creates a top-level bucket.
func (t *Tx) CreateBucketIfNotExists(name []byte) (*Bucket, error) {
	b, err := t.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	if t.rec != nil {
		t.rec.createBucket(nil, name)
	}
	return t.wrap(b, nil, name), nil
}

// DeleteBucket removes a top-level bucket.
func (t *Tx) DeleteBucket(name []byte) error {
	if err := t.tx.DeleteBucket(name); err != nil {
		return err
	}
	if t.rec != nil {
		t.rec.deleteBucket(nil, name)
	}
	return nil
}

func (t *Tx) wrap(b *bolt.Bucket, parent *Bucket, name []byte) *Bucket {
	w := &Bucket{b: b, tx: t}
	if t.rec != nil {
		if parent != nil {
			w.path = make([][]byte, 0, len(parent.path)+1)
			w.path = append(w.path, parent.path...)
		}
		w.path = append(w.path, name)
	}
	return w
}

// Bucket is a bbolt bucket seen through a Tx.
type Bucket struct {
	b    *bolt.Bucket
	tx   *Tx
	path [][]byte // from the root, only while recording
	// kids are the sub-buckets opened through a mesh bucket of
	// Tx.meshes (nil elsewhere), dropped when deleted through it.
	kids map[string]*Bucket
}

// SetFillPercent sets how full bbolt packs split pages (a local layout
// choice, not a change of content: it is not recorded).
func (b *Bucket) SetFillPercent(f float64) { b.b.FillPercent = f }

// Get returns the value of key, or nil. The slice is valid only during the
// transaction.
func (b *Bucket) Get(key []byte) []byte { return b.b.Get(key) }

// Put sets key to value.
func (b *Bucket) Put(key, value []byte) error {
	if err := b.b.Put(key, value); err != nil {
		return err
	}
	if b.tx.rec != nil {
		b.tx.rec.put(b.path, key, value)
	}
	return nil
}

// Delete removes key (a missing key is not an error).
func (b *Bucket) Delete(key []byte) error {
	if err := b.b.Delete(key); err != nil {
		return err
	}
	if b.tx.rec != nil {
		b.tx.rec.del(b.path, key)
	}
	return nil
}

// Bucket returns a nested bucket, or nil.
func (b *Bucket) Bucket(name []byte) *Bucket {
	if k := b.kids[string(name)]; k != nil {
		return k
	}
	nb := b.b.Bucket(name)
	if nb == nil {
		return nil
	}
	w := b.tx.wrap(nb, b, name)
	if b.kids != nil {
		b.kids[string(name)] = w
	}
	return w
}

// CreateBucket creates a nested bucket; bbolt's errors if it exists.
func (b *Bucket) CreateBucket(name []byte) (*Bucket, error) {
	nb, err := b.b.CreateBucket(name)
	if err != nil {
		return nil, err
	}
	if b.tx.rec != nil {
		b.tx.rec.createBucket(b.path, name)
	}
	return b.tx.wrap(nb, b, name), nil
}

// CreateBucketIfNotExists creates a nested bucket unless it exists.
func (b *Bucket) CreateBucketIfNotExists(name []byte) (*Bucket, error) {
	nb, err := b.b.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	if b.tx.rec != nil {
		b.tx.rec.createBucket(b.path, name)
	}
	return b.tx.wrap(nb, b, name), nil
}

// DeleteBucket removes a nested bucket and everything in it.
func (b *Bucket) DeleteBucket(name []byte) error {
	delete(b.kids, string(name))
	if err := b.b.DeleteBucket(name); err != nil {
		return err
	}
	if b.tx.rec != nil {
		b.tx.rec.deleteBucket(b.path, name)
	}
	return nil
}

// NextSequence increments and returns the bucket's sequence number.
func (b *Bucket) NextSequence() (uint64, error) {
	n, err := b.b.NextSequence()
	if err != nil {
		return 0, err
	}
	if b.tx.rec != nil {
		b.tx.rec.setSequence(b.path, n)
	}
	return n, nil
}

// Sequence is the bucket's current sequence number.
func (b *Bucket) Sequence() uint64 { return b.b.Sequence() }

// ForEach calls fn for every key (nested buckets have a nil value). fn
// must not change the bucket.
func (b *Bucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }

// ForEachBucket calls fn with the name of every nested bucket.
func (b *Bucket) ForEachBucket(fn func(k []byte) error) error { return b.b.ForEachBucket(fn) }

// Cursor iterates over the bucket in key order.
func (b *Bucket) Cursor() *Cursor { return &Cursor{c: b.b.Cursor(), b: b} }

// Cursor is a bbolt cursor whose deletes are recorded.
type Cursor struct {
	c   *bolt.Cursor
	b   *Bucket
	key []byte // where the cursor is, for Delete
}

func (c *Cursor) at(k, v []byte) ([]byte, []byte) { c.key = k; return k, v }

// First moves to the first key.
func (c *Cursor) First() ([]byte, []byte) { return c.at(c.c.First()) }

// Last moves to the last key.
func (c *Cursor) Last() ([]byte, []byte) { return c.at(c.c.Last()) }

// Next moves to the next key.
func (c *Cursor) Next() ([]byte, []byte) { return c.at(c.c.Next()) }

// Prev moves to the previous key.
func (c *Cursor) Prev() ([]byte, []byte) { return c.at(c.c.Prev()) }

// Seek moves to key, or the next key after it.
func (c *Cursor) Seek(seek []byte) ([]byte, []byte) { return c.at(c.c.Seek(seek)) }

// Delete removes the key the cursor is on.
func (c *Cursor) Delete() error {
	if c.b.tx.rec != nil && c.key != nil {
		// Copied before the delete: the key slice points into a page
		// the delete may rewrite.
		k := append([]byte(nil), c.key...)
		if err := c.c.Delete(); err != nil {
			return err
		}
		c.b.tx.rec.del(c.b.path, k)
		return nil
	}
	return c.c.Delete()
}

// Stats are bbolt's statistics of the bucket.
func (b *Bucket) Stats() bolt.BucketStats { return b.b.Stats() }
