package binrec

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestRoundTripAndCopies(t *testing.T) {
	b := []byte{Format, 7}
	b = binary.AppendVarint(b, -42)
	b = binary.AppendUvarint(b, 2)
	b = AppendStr(b, "héllo")
	b = AppendBytes(b, []byte{1, 2, 3})
	b = AppendBytes(b, nil)
	r := NewReader(b)
	if f := r.Header(); f != 7 {
		t.Fatalf("flags %d", f)
	}
	if v := r.Varint(); v != -42 {
		t.Fatalf("varint %d", v)
	}
	if n := r.Count(1); n != 2 {
		t.Fatalf("count %d", n)
	}
	s, p, empty := r.Str(), r.Bytes(), r.Bytes()
	if err := r.Done("test"); err != nil {
		t.Fatal(err)
	}
	if s != "héllo" || string(p) != "\x01\x02\x03" || empty != nil {
		t.Fatalf("got %q %v %v", s, p, empty)
	}
	// What the reader returned does not alias the record.
	for i := range b {
		b[i] = 0xff
	}
	if s != "héllo" || p[0] != 1 {
		t.Fatal("decoded values alias the record")
	}
}

func TestCorruptRecords(t *testing.T) {
	for name, rec := range map[string][]byte{
		"empty":          {},
		"unknown format": {0x7f, 0},
		"short string":   AppendStr([]byte{Format, 0}, "abc")[:5],
		"trailing bytes": {Format, 0, 9},
		"huge count":     binary.AppendUvarint([]byte{Format, 0}, 1<<40),
	} {
		r := NewReader(rec)
		r.Header()
		if name == "huge count" {
			if n := r.Count(1); n != 0 {
				t.Errorf("%s: count %d", name, n)
			}
		} else if name == "short string" {
			r.Str()
		}
		err := r.Done("test")
		if err == nil {
			t.Errorf("%s: decoded without error", name)
		}
		if name == "short string" && !errors.Is(err, ErrShort) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
