// Package binrec is the small binary record codec behind the stores' hot
// records (the broker's queue and delivery records, the daemon's outbox
// rows): a format byte, then fields in a fixed order, integers as varints
// and strings as a uvarint length and the bytes. Records that are written
// and read on every message are where JSON's reflection and name matching
// cost the most; everything rarely written stays JSON.
//
// A record's first byte tells the two apart: Format for a binary record,
// '{' for a JSON one written by an earlier version, which readers keep
// accepting.
package binrec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Format is the first byte of every binary record.
const Format byte = 0x01

// ErrShort means a record ended before its last field.
var ErrShort = errors.New("truncated record")

// IsJSON tells a JSON record (written before the binary layout) from a
// binary one.
func IsJSON(v []byte) bool { return len(v) > 0 && v[0] == '{' }

// AppendStr appends a length-prefixed string.
func AppendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendBytes appends a length-prefixed byte string.
func AppendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// SizeOf is an upper bound of the bytes AppendStr needs for ss, for sizing
// a record's buffer once.
func SizeOf(ss ...string) int {
	n := 0
	for _, s := range ss {
		n += len(s) + binary.MaxVarintLen64
	}
	return n
}

// Reader reads a binary record field by field. The first error sticks and
// later reads return zero values, so a decoder checks once, in Done.
// Strings and byte strings are copied: the record belongs to bbolt and is
// only valid inside its transaction.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads v.
func NewReader(v []byte) *Reader { return &Reader{b: v} }

// Header checks the format byte and returns the byte after it (a record's
// flags).
func (r *Reader) Header() byte {
	if f := r.Byte(); r.err == nil && f != Format {
		r.err = fmt.Errorf("unknown record format %#x", f)
	}
	return r.Byte()
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	p := r.Take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

// Take returns the next n bytes, aliasing the record: callers copy what
// outlives the transaction.
func (r *Reader) Take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = ErrShort
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = ErrShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = ErrShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Count reads a uvarint element count, refusing one that the rest of the
// record could not hold (each element takes at least min bytes), so a
// corrupt count never allocates a huge slice.
func (r *Reader) Count(min int) int {
	n := r.Uvarint()
	if r.err == nil && n > uint64(len(r.b)/max(min, 1)) {
		r.err = ErrShort
		return 0
	}
	return int(n)
}

// Str reads a length-prefixed string (a copy).
func (r *Reader) Str() string {
	n := r.Uvarint()
	if n > uint64(len(r.b)) {
		r.err = ErrShort
		return ""
	}
	return string(r.Take(int(n)))
}

// Bytes reads a length-prefixed byte string (a copy; nil when empty).
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if n > uint64(len(r.b)) {
		r.err = ErrShort
		return nil
	}
	p := r.Take(int(n))
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

// Fail records an error found by the decoder itself (an unknown enum
// value), unless an earlier one stuck.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// Done reports the first error, or trailing bytes, as a corrupt record of
// the named kind.
func (r *Reader) Done(kind string) error {
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("corrupt %s record: %w", kind, r.err)
	}
	return nil
}
