package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Redo is the record of the changes one or more transactions made: every
// put, delete, bucket creation and removal and sequence number, in order,
// each with the path of its bucket from the root. Replaying it on a copy of
// the database that was in the same state gives the same content, whatever
// the code that made the changes read, computed or drew at random. This is
// what a cluster replicates (the cluster package): the node that takes a
// request runs the broker's ordinary write against its own copy, and every
// node replays the redo.
//
// Encoding: a sequence of ops, each
//
//	op byte, uvarint path length, each path element (uvarint length,
//	bytes), uvarint key length, key, then for put: uvarint value length,
//	value; for a sequence: uvarint sequence.
type Redo struct {
	buf []byte
	n   int
}

// Redo op codes.
const (
	OpPut          byte = 1
	OpDelete       byte = 2
	OpCreateBucket byte = 3 // if it does not exist
	OpDeleteBucket byte = 4
	OpSetSequence  byte = 5
)

// Bytes is the encoded redo (valid until the next change).
func (r *Redo) Bytes() []byte { return r.buf }

// Len is the number of ops recorded.
func (r *Redo) Len() int { return r.n }

// Reset empties the redo, keeping its buffer.
func (r *Redo) Reset() { r.buf, r.n = r.buf[:0], 0 }

// Truncate drops the ops recorded after a Mark, undoing the record of a
// write that is rolled back on its own.
func (r *Redo) Truncate(m RedoMark) { r.buf, r.n = r.buf[:m.size], m.ops }

// Mark remembers the redo's current end for Truncate.
func (r *Redo) Mark() RedoMark { return RedoMark{len(r.buf), r.n} }

// RedoMark is a position in a Redo.
type RedoMark struct{ size, ops int }

func (r *Redo) head(op byte, path [][]byte, key []byte) {
	r.n++
	r.buf = append(r.buf, op)
	r.buf = binary.AppendUvarint(r.buf, uint64(len(path)))
	for _, p := range path {
		r.buf = appendBytes(r.buf, p)
	}
	r.buf = appendBytes(r.buf, key)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func (r *Redo) put(path [][]byte, key, value []byte) {
	r.head(OpPut, path, key)
	r.buf = appendBytes(r.buf, value)
}

func (r *Redo) del(path [][]byte, key []byte) { r.head(OpDelete, path, key) }

func (r *Redo) createBucket(path [][]byte, name []byte) { r.head(OpCreateBucket, path, name) }

func (r *Redo) deleteBucket(path [][]byte, name []byte) { r.head(OpDeleteBucket, path, name) }

func (r *Redo) setSequence(path [][]byte, seq uint64) {
	r.head(OpSetSequence, path, nil)
	r.buf = binary.AppendUvarint(r.buf, seq)
}

// RedoOp is one decoded op. Its slices point into the encoded redo.
type RedoOp struct {
	Op    byte
	Path  [][]byte
	Key   []byte
	Value []byte
	Seq   uint64
}

var errCorruptRedo = errors.New("store: corrupt redo")

type redoReader struct{ b []byte }

func (r *redoReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, errCorruptRedo
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *redoReader) bytes() ([]byte, error) {
	n, err := r.uvarint()
	if err != nil || n > uint64(len(r.b)) {
		return nil, errCorruptRedo
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, nil
}

// DecodeRedo calls fn for every op of an encoded redo, in order.
func DecodeRedo(data []byte, fn func(op *RedoOp) error) error {
	r := redoReader{data}
	var op RedoOp
	for len(r.b) > 0 {
		op = RedoOp{Op: r.b[0], Path: op.Path[:0]}
		r.b = r.b[1:]
		n, err := r.uvarint()
		if err != nil || n > 16 {
			return errCorruptRedo
		}
		for range n {
			p, err := r.bytes()
			if err != nil {
				return err
			}
			op.Path = append(op.Path, p)
		}
		if op.Key, err = r.bytes(); err != nil {
			return err
		}
		switch op.Op {
		case OpPut:
			if op.Value, err = r.bytes(); err != nil {
				return err
			}
		case OpSetSequence:
			if op.Seq, err = r.uvarint(); err != nil {
				return err
			}
		case OpDelete, OpCreateBucket, OpDeleteBucket:
		default:
			return fmt.Errorf("%w: op %d", errCorruptRedo, op.Op)
		}
		if err := fn(&op); err != nil {
			return err
		}
	}
	return nil
}

// ApplyRedo replays an encoded redo in tx. before (nil for none) is called
// with every put and delete and the value the key held before it (nil if
// none), so a follower can tell what changed (the cluster's change feed);
// the slices are valid only during the call.
func ApplyRedo(tx *bolt.Tx, data []byte, before func(op *RedoOp, old []byte)) error {
	type cached struct {
		path string
		b    *bolt.Bucket
	}
	var last cached
	bucketAt := func(path [][]byte) (*bolt.Bucket, error) {
		key := string(joinPath(path))
		if last.b != nil && last.path == key {
			return last.b, nil
		}
		var b *bolt.Bucket
		for i, p := range path {
			if i == 0 {
				b = tx.Bucket(p)
			} else {
				b = b.Bucket(p)
			}
			if b == nil {
				return nil, fmt.Errorf("store: redo names a missing bucket %q", path[:i+1])
			}
		}
		last = cached{key, b}
		return b, nil
	}
	return DecodeRedo(data, func(op *RedoOp) error {
		if len(op.Path) == 0 {
			switch op.Op {
			case OpCreateBucket:
				_, err := tx.CreateBucketIfNotExists(op.Key)
				return err
			case OpDeleteBucket:
				last = cached{}
				return tx.DeleteBucket(op.Key)
			}
			return errCorruptRedo
		}
		b, err := bucketAt(op.Path)
		if err != nil {
			return err
		}
		switch op.Op {
		case OpPut:
			if before != nil {
				before(op, b.Get(op.Key))
			}
			return b.Put(op.Key, op.Value)
		case OpDelete:
			if before != nil {
				before(op, b.Get(op.Key))
			}
			return b.Delete(op.Key)
		case OpCreateBucket:
			_, err := b.CreateBucketIfNotExists(op.Key)
			return err
		case OpDeleteBucket:
			last = cached{}
			return b.DeleteBucket(op.Key)
		case OpSetSequence:
			return b.SetSequence(op.Seq)
		}
		return errCorruptRedo
	})
}

func joinPath(path [][]byte) []byte {
	var out []byte
	for _, p := range path {
		out = appendBytes(out, p)
	}
	return out
}
