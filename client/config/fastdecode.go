package config

import (
	"bytes"
	"io"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// decodeFast decodes config.json when it holds exactly what claudemesh
// writes: the known members, strings where strings go, a plain integer
// version, no nulls, no duplicate members, nothing after the object. ok is
// false for anything else, and Load then decodes with json.Unmarshal, whose
// result (or error) is the file's meaning; for every file decodeFast
// accepts, the result is the one json.Unmarshal gives. It reads tokens
// without reflection: json.Unmarshal's first use in a process builds its
// decoders by reflection (~0.1 ms), which every verb paid at start, `send`
// through the daemon included.
func decodeFast(data []byte) (c Config, ok bool) {
	d := jsontext.NewDecoder(bytes.NewReader(data))
	if !readDelim(d, '{') {
		return Config{}, false
	}
	for d.PeekKind() == '"' {
		name, err := d.ReadToken()
		if err != nil {
			return Config{}, false
		}
		switch name.String() {
		case "version":
			v, ok := readInt(d)
			if !ok {
				return Config{}, false
			}
			c.Version = v
		case "meshes":
			if !readDelim(d, '[') {
				return Config{}, false
			}
			c.Meshes = []Mesh{}
			for d.PeekKind() == '{' {
				m, ok := decodeMesh(d)
				if !ok {
					return Config{}, false
				}
				c.Meshes = append(c.Meshes, m)
			}
			if !readDelim(d, ']') {
				return Config{}, false
			}
		default:
			return Config{}, false
		}
	}
	if !readDelim(d, '}') {
		return Config{}, false
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return Config{}, false
	}
	return c, true
}

// decodeMesh reads one mesh object (decodeFast's rules).
func decodeMesh(d *jsontext.Decoder) (m Mesh, ok bool) {
	if !readDelim(d, '{') {
		return Mesh{}, false
	}
	for d.PeekKind() == '"' {
		name, err := d.ReadToken()
		if err != nil {
			return Mesh{}, false
		}
		var field *string
		switch name.String() {
		case "meshId":
			field = &m.MeshID
		case "memberId":
			field = &m.MemberID
		case "slug":
			field = &m.Slug
		case "name":
			field = &m.Name
		case "pubkey":
			field = &m.Pubkey
		case "secretKey":
			field = &m.SecretKey
		case "brokerUrl":
			field = &m.BrokerURL
		case "brokerPubkey":
			field = &m.BrokerPubkey
		case "role":
			field = &m.Role
		case "displayName":
			field = &m.DisplayName
		case "joinedAt":
			field = &m.JoinedAt
		case "brokerUrls":
			if !readDelim(d, '[') {
				return Mesh{}, false
			}
			m.BrokerURLs = []string{}
			for d.PeekKind() == '"' {
				s, ok := readString(d)
				if !ok {
					return Mesh{}, false
				}
				m.BrokerURLs = append(m.BrokerURLs, s)
			}
			if !readDelim(d, ']') {
				return Mesh{}, false
			}
			continue
		default:
			return Mesh{}, false
		}
		s, ok := readString(d)
		if !ok {
			return Mesh{}, false
		}
		*field = s
	}
	if !readDelim(d, '}') {
		return Mesh{}, false
	}
	return m, true
}

// readDelim reads the token kind (an object's or array's '{', '}', '[' or
// ']').
func readDelim(d *jsontext.Decoder, kind jsontext.Kind) bool {
	if d.PeekKind() != kind {
		return false
	}
	_, err := d.ReadToken()
	return err == nil
}

// readString reads a string value.
func readString(d *jsontext.Decoder) (string, bool) {
	if d.PeekKind() != '"' {
		return "", false
	}
	tok, err := d.ReadToken()
	if err != nil {
		return "", false
	}
	return tok.String(), true
}

// readInt reads a number written as a plain decimal integer (no fraction,
// exponent or minus zero) that fits an int.
func readInt(d *jsontext.Decoder) (int, bool) {
	if d.PeekKind() != '0' {
		return 0, false
	}
	v, err := d.ReadValue()
	if err != nil {
		return 0, false
	}
	s := string(v)
	for i, r := range s {
		if !(r >= '0' && r <= '9' || r == '-' && i == 0 && len(s) > 1 && s[1] != '0') {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	return n, true
}
