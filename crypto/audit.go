package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// The audit chain (02-crypto "Audit chain"): each mesh keeps an append-only
// list of entries whose hashes chain them, so a verifier that remembers one
// head detects any later rewrite of what came before it, and the broker's
// signature over the head (AuditHeadString) binds the chain to the broker
// key the members pinned.

// AuditGenesisHash is the prevHash of a chain's first entry: 64 zeros.
const AuditGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// AuditTimeLayout is how an entry's createdAt is written: RFC 3339 in UTC
// with all nine digits of nanoseconds, so every timestamp has one spelling
// and entries sort as strings.
const AuditTimeLayout = "2006-01-02T15:04:05.000000000Z"

// AuditTime formats t as an entry's createdAt.
func AuditTime(t time.Time) string { return t.UTC().Format(AuditTimeLayout) }

// ErrBadJSON is returned for a payload that is not one valid JSON value
// (invalid UTF-8, a duplicate object name, trailing data).
var ErrBadJSON = errors.New("crypto: invalid JSON")

// AuditHash is an entry's hash:
//
//	sha256hex(prevHash|meshId|seq|eventType|actorPubkey|canonicalJSON(payload)|createdAt)
//
// canonicalPayload must already be canonical (CanonicalJSON); it is the one
// field that may contain '|', which stays unambiguous because it is the
// only such field and the fields after it (createdAt) cannot hold one.
func AuditHash(prevHash, meshID string, seq uint64, eventType, actorPubkey string, canonicalPayload []byte, createdAt string) (string, error) {
	for _, f := range []field{{"prevHash", prevHash}, {"meshId", meshID}, {"eventType", eventType}, {"actorPubkey", actorPubkey}, {"createdAt", createdAt}} {
		if err := checkField(f.name, f.value); err != nil {
			return "", err
		}
	}
	h := sha256.New()
	for i, part := range []string{prevHash, meshID, strconv.FormatUint(seq, 10), eventType, actorPubkey} {
		if i > 0 {
			h.Write([]byte{'|'})
		}
		io.WriteString(h, part)
	}
	h.Write([]byte{'|'})
	h.Write(canonicalPayload)
	h.Write([]byte{'|'})
	io.WriteString(h, createdAt)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CanonicalJSON rewrites one JSON value in the canonical form the audit
// chain hashes: object names sorted bytewise (by their UTF-8 bytes), no
// insignificant whitespace, strings escaped only where JSON requires it
// (no HTML escaping: '<', '>' and '&' stay as they are; control characters
// as \b \t \n \f \r or \u00xx), numbers as ECMAScript writes them (1.0 → 1,
// 1e2 → 100). That is exactly what JSON.stringify produces for a value
// whose keys were sorted the same way, so a verifier in any language can
// reproduce it. A duplicate object name or invalid UTF-8 is an error.
func CanonicalJSON(data []byte) ([]byte, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	out, err := canonicalValue(dec, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the value", ErrBadJSON)
	}
	return out, nil
}

func canonicalValue(dec *jsontext.Decoder, dst []byte) ([]byte, error) {
	switch dec.PeekKind() {
	case '{':
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		type member struct {
			name  string
			value []byte
		}
		var members []member
		for dec.PeekKind() != '}' {
			tok, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			// A token is valid only until the next read.
			name := tok.String()
			v, err := canonicalValue(dec, nil)
			if err != nil {
				return nil, err
			}
			members = append(members, member{name, v})
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		// Go strings compare bytewise, which is the order asked for.
		slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.name, b.name) })
		dst = append(dst, '{')
		for i, m := range members {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = jsontext.AppendQuote(dst, m.name); err != nil {
				return nil, err
			}
			dst = append(dst, ':')
			dst = append(dst, m.value...)
		}
		return append(dst, '}'), nil
	case '[':
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		dst = append(dst, '[')
		for i := 0; dec.PeekKind() != ']'; i++ {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = canonicalValue(dec, dst); err != nil {
				return nil, err
			}
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return append(dst, ']'), nil
	case '"':
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, err
		}
		return jsontext.AppendQuote(dst, tok.String())
	case '0':
		v, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		// RFC 8785 number formatting is ECMAScript's Number.toString.
		v = v.Clone()
		if err := v.Canonicalize(); err != nil {
			return nil, err
		}
		return append(dst, v...), nil
	case 0:
		// PeekKind reports 0 on a syntax error or the end of input;
		// reading says which.
		_, err := dec.ReadToken()
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	default: // true, false, null
		v, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		return append(dst, v...), nil
	}
}
