// Package jsonedit edits JSON documents people also edit by hand (Claude
// Code's ~/.claude.json and settings.json) by splicing bytes: it adds or
// removes one object member or array element and leaves every other byte
// as it was, so removing what was added restores the original file exactly.
// Positions come from the go-json-experiment/json tokenizer.
package jsonedit

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json/jsontext"
)

// Span is a value's position in a document: data[Start:End].
type Span struct{ Start, End int }

// Member is one object member: its name and the spans of name and value.
type Member struct {
	Name  string
	Key   Span
	Value Span
}

// Check reports whether data is one JSON object (with a parse error that
// says where it is not).
func Check(data []byte) error {
	d := jsontext.NewDecoder(bytes.NewReader(data))
	v, err := d.ReadValue()
	if err != nil {
		return err
	}
	if v.Kind() != '{' {
		return errors.New("the document is not a JSON object")
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return errors.New("text after the JSON object")
	}
	return nil
}

// skipWS returns the index of the first non-space byte at or after i.
func skipWS(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// Members lists the members of the object at span obj.
func Members(data []byte, obj Span) ([]Member, error) {
	if obj.Start >= len(data) || data[obj.Start] != '{' {
		return nil, errors.New("not an object")
	}
	d := jsontext.NewDecoder(bytes.NewReader(data[obj.Start:obj.End]))
	if _, err := d.ReadToken(); err != nil {
		return nil, err
	}
	var out []Member
	for d.PeekKind() != '}' {
		k, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		kEnd := obj.Start + int(d.InputOffset())
		name, err := jsontext.AppendUnquote(nil, k)
		if err != nil {
			return nil, err
		}
		v, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		vEnd := obj.Start + int(d.InputOffset())
		out = append(out, Member{Name: string(name), Key: Span{kEnd - len(k), kEnd}, Value: Span{vEnd - len(v), vEnd}})
	}
	return out, nil
}

// Elements lists the element spans of the array at span arr.
func Elements(data []byte, arr Span) ([]Span, error) {
	if arr.Start >= len(data) || data[arr.Start] != '[' {
		return nil, errors.New("not an array")
	}
	d := jsontext.NewDecoder(bytes.NewReader(data[arr.Start:arr.End]))
	if _, err := d.ReadToken(); err != nil {
		return nil, err
	}
	var out []Span
	for d.PeekKind() != ']' {
		v, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		end := arr.Start + int(d.InputOffset())
		out = append(out, Span{end - len(v), end})
	}
	return out, nil
}

// Root is the span of the document's top-level value.
func Root(data []byte) Span {
	s := skipWS(data, 0)
	e := len(data)
	for e > s && (data[e-1] == ' ' || data[e-1] == '\t' || data[e-1] == '\n' || data[e-1] == '\r') {
		e--
	}
	return Span{s, e}
}

// Find returns the member name of the object at obj, if present.
func Find(data []byte, obj Span, name string) (Member, bool, error) {
	ms, err := Members(data, obj)
	if err != nil {
		return Member{}, false, err
	}
	for _, m := range ms {
		if m.Name == name {
			return m, true, nil
		}
	}
	return Member{}, false, nil
}

func splice(data []byte, at, end int, insert string) []byte {
	out := make([]byte, 0, len(data)+len(insert))
	out = append(out, data[:at]...)
	out = append(out, insert...)
	return append(out, data[end:]...)
}

// indentBefore is the whitespace in front of the byte at i, back to the
// separator before it: how the document lays out that member or element.
func indentBefore(data []byte, i int) string {
	j := i
	for j > 0 && (data[j-1] == ' ' || data[j-1] == '\t' || data[j-1] == '\n' || data[j-1] == '\r') {
		j--
	}
	return string(data[j:i])
}

// AddMember adds `"name": value` as the last member of the object at obj,
// laid out like the member before it (right after `{` in an empty object).
// RemoveMember of it gives back data.
func AddMember(data []byte, obj Span, name string, value []byte) ([]byte, error) {
	ms, err := Members(data, obj)
	if err != nil {
		return nil, err
	}
	key, err := jsontext.AppendQuote(nil, name)
	if err != nil {
		return nil, err
	}
	member := string(key) + ": " + string(value)
	if len(ms) == 0 {
		return splice(data, obj.Start+1, obj.Start+1, member), nil
	}
	last := ms[len(ms)-1]
	ws := indentBefore(data, last.Key.Start)
	if ws == "" {
		ws = " "
	}
	return splice(data, last.Value.End, last.Value.End, ","+ws+member), nil
}

// RemoveMember removes member m of the object at obj with one separator.
func RemoveMember(data []byte, obj Span, m Member) ([]byte, error) {
	ms, err := Members(data, obj)
	if err != nil {
		return nil, err
	}
	i := -1
	for j := range ms {
		if ms[j].Key == m.Key {
			i = j
		}
	}
	if i < 0 {
		return nil, fmt.Errorf("no member %q there", m.Name)
	}
	switch {
	case i > 0:
		return splice(data, ms[i-1].Value.End, ms[i].Value.End, ""), nil
	case len(ms) > 1:
		return splice(data, ms[0].Key.Start, ms[1].Key.Start, ""), nil
	default:
		// The only member: the layout in front of it goes too (AddMember
		// puts a first member right after `{`), so no blank line is left.
		return splice(data, obj.Start+1, ms[0].Value.End, ""), nil
	}
}

// AppendElement adds value as the last element of the array at arr.
func AppendElement(data []byte, arr Span, value []byte) ([]byte, error) {
	es, err := Elements(data, arr)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return splice(data, arr.Start+1, arr.Start+1, string(value)), nil
	}
	last := es[len(es)-1]
	ws := indentBefore(data, last.Start)
	if ws == "" {
		ws = " "
	}
	return splice(data, last.End, last.End, ","+ws+string(value)), nil
}

// RemoveElement removes element i of the array at arr with one separator.
func RemoveElement(data []byte, arr Span, i int) ([]byte, error) {
	es, err := Elements(data, arr)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= len(es) {
		return nil, errors.New("no such element")
	}
	switch {
	case i > 0:
		return splice(data, es[i-1].End, es[i].End, ""), nil
	case len(es) > 1:
		return splice(data, es[0].Start, es[1].Start, ""), nil
	default:
		// The only element: the layout in front of it goes too.
		return splice(data, arr.Start+1, es[0].End, ""), nil
	}
}

// Replace puts value in place of span s.
func Replace(data []byte, s Span, value []byte) []byte {
	return splice(data, s.Start, s.End, string(value))
}
