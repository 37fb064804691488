package localapi

import (
	"bytes"
	"io"

	"github.com/go-json-experiment/json/jsontext"
)

// A send through the daemon is a whole process (`claudemesh send`), and
// json.Marshal and json.Unmarshal build their encoders and decoders by
// reflection at their first use in a process (~0.1 ms, a few hundred
// allocations). The send's request and answer are therefore written and
// read with jsontext tokens: the same bytes json.Marshal writes, and
// whatever json.Unmarshal would read (anything the token reader does not
// expect goes to json.Unmarshal).

// encodeFast writes r as json.Marshal does. ok is false if it could not
// (a string that is not UTF-8): json.Marshal then says why.
func (r *SendRequest) encodeFast() (data []byte, ok bool) {
	var buf bytes.Buffer
	e := jsontext.NewEncoder(&buf)
	ok = true
	write := func(t jsontext.Token) {
		if ok && e.WriteToken(t) != nil {
			ok = false
		}
	}
	put := func(name, value string, omitEmpty bool) {
		if value == "" && omitEmpty {
			return
		}
		write(jsontext.String(name))
		write(jsontext.String(value))
	}
	write(jsontext.BeginObject)
	put("to", r.To, false)
	put("message", r.Message, false)
	put("mesh", r.Mesh, true)
	put("priority", r.Priority, true)
	put("clientMessageId", r.ClientMessageID, true)
	put("replyToId", r.ReplyToID, true)
	if len(r.Mentions) > 0 {
		write(jsontext.String("mentions"))
		write(jsontext.BeginArray)
		for _, m := range r.Mentions {
			write(jsontext.String(m))
		}
		write(jsontext.EndArray)
	}
	write(jsontext.EndObject)
	if !ok {
		return nil, false
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), true
}

// decodeFast reads data, the daemon's answer to POST /v1/send, when it
// holds only SendResponse's members, each of its type (no nulls, no
// duplicates); ok is false for anything else.
func (r *SendResponse) decodeFast(data []byte) (ok bool) {
	var v SendResponse
	d := jsontext.NewDecoder(bytes.NewReader(data))
	if !readObject(d, func(name string) bool {
		switch name {
		case "clientMessageId":
			return readString(d, &v.ClientMessageID)
		case "messageId":
			return readString(d, &v.MessageID)
		case "mesh":
			return readString(d, &v.Mesh)
		case "status":
			return readString(d, &v.Status)
		case "duplicate":
			return readBool(d, &v.Duplicate)
		case "error":
			return readString(d, &v.Error)
		case "errorCode":
			return readString(d, &v.ErrorCode)
		case "meshState":
			return readString(d, &v.MeshState)
		case "target":
			return readObject(d, func(name string) bool {
				switch name {
				case "kind":
					return readString(d, &v.Target.Kind)
				case "targetSpec":
					return readString(d, &v.Target.TargetSpec)
				case "displayName":
					return readString(d, &v.Target.DisplayName)
				case "status":
					return readString(d, &v.Target.Status)
				case "online":
					var b bool
					if !readBool(d, &b) {
						return false
					}
					v.Target.Online = &b
					return true
				}
				return false
			})
		}
		return false
	}) {
		return false
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return false
	}
	*r = v
	return true
}

// readObject reads an object, calling member for each member's name with
// the value next; member reads the value, or says it cannot.
func readObject(d *jsontext.Decoder, member func(name string) bool) bool {
	if d.PeekKind() != '{' {
		return false
	}
	if _, err := d.ReadToken(); err != nil {
		return false
	}
	for d.PeekKind() == '"' {
		name, err := d.ReadToken()
		if err != nil || !member(name.String()) {
			return false
		}
	}
	if d.PeekKind() != '}' {
		return false
	}
	_, err := d.ReadToken()
	return err == nil
}

func readString(d *jsontext.Decoder, s *string) bool {
	if d.PeekKind() != '"' {
		return false
	}
	tok, err := d.ReadToken()
	if err != nil {
		return false
	}
	*s = tok.String()
	return true
}

func readBool(d *jsontext.Decoder, b *bool) bool {
	if k := d.PeekKind(); k != 't' && k != 'f' {
		return false
	}
	tok, err := d.ReadToken()
	if err != nil {
		return false
	}
	*b = tok.Bool()
	return true
}
