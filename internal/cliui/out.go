package cliui

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/urfave/cli/v2"
)

// SchemaVersion is stamped on every JSON document the CLI prints.
const SchemaVersion = 1

// Out is a command's output: human lines (two-space indented, skipped
// under --json, optional ones skipped under --quiet) or JSON documents on
// stdout, warnings on stderr. It is safe for concurrent use, so a follow
// loop and a progress goroutine can share it.
type Out struct{ st *runState }

// OutFrom returns the output of the run c belongs to.
func OutFrom(c *cli.Context) *Out { return &Out{st: stateOf(c)} }

// NewOut returns an Out writing to the given streams, for code (and tests)
// that is not run through Run.
func NewOut(stdout, stderr io.Writer, jsonMode, quiet, color bool) *Out {
	return &Out{st: &runState{stdout: stdout, stderr: stderr, json: jsonMode, quiet: quiet,
		style: NewStyle(color), errStyle: NewStyle(color)}}
}

// JSONMode reports whether --json was given; commands print with JSON or
// NDJSON then.
func (o *Out) JSONMode() bool { return o.st.json }

// Quiet reports whether --quiet was given.
func (o *Out) Quiet() bool { return o.st.quiet }

// Style is the colour style for stdout (plain unless colour is on).
func (o *Out) Style() Style { return o.st.style }

// ErrStyle is the colour style for stderr.
func (o *Out) ErrStyle() Style { return o.st.errStyle }

// Stdout is the raw standard output, for output that is neither lines nor
// JSON (a generated completion script, an invite link for piping).
func (o *Out) Stdout() io.Writer { return o.st.stdout }

// Stderr is the raw standard error.
func (o *Out) Stderr() io.Writer { return o.st.stderr }

// JSON writes v as one JSON document on stdout with "schemaVersion":1 added
// to it if it is an object, or to each object element if it is an array; a
// nil or empty slice prints [] (never null). Only the top level is stamped:
// nested objects are parts of the document, not documents.
func (o *Out) JSON(v any) error {
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	return writeJSON(o.st.stdout, v)
}

// NDJSON writes v as newline-delimited JSON: one line per element if v is a
// slice or array, else one line, each stamped with "schemaVersion":1. Follow
// loops call it once per item as items arrive.
func (o *Out) NDJSON(v any) error {
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return writeJSON(o.st.stdout, v)
	}
	for i := range rv.Len() {
		if err := writeJSON(o.st.stdout, rv.Index(i).Interface()); err != nil {
			return err
		}
	}
	return nil
}

// Linef prints an informational human line (two-space indented, every line
// of a multi-line text), unless --json or --quiet.
func (o *Out) Linef(format string, args ...any) {
	if o.st.quiet {
		return
	}
	o.Resultf(format, args...)
}

// Resultf prints an essential human line, one that --quiet keeps (the
// result a script would want), unless --json.
func (o *Out) Resultf(format string, args ...any) {
	if o.st.json {
		return
	}
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	io.WriteString(o.st.stdout, indent(fmt.Sprintf(format, args...)))
}

// Warn prints a warning on stderr as "  ⚠ msg" and a dim "  → hint" (hint
// optional). Under --json it is dropped (stderr stays empty for agents that
// capture both streams) unless CLAUDEMESH_DEBUG=1.
func (o *Out) Warn(msg, hint string) {
	if o.st.json && !o.st.debug {
		return
	}
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	s := o.st.errStyle
	msg, hint = o.st.hints.commands(msg), o.st.hints.commands(hint)
	// ⚠, as every warning the CLI shows (doctor, install, launch); ✘ is a
	// failure's (the error line, a failed check).
	io.WriteString(o.st.stderr, "  "+s.Yellow("⚠")+" "+strings.ReplaceAll(msg, "\n", "\n    ")+"\n")
	if hint != "" {
		io.WriteString(o.st.stderr, "  "+s.Dim("→ "+hint)+"\n")
	}
}

// Spinner starts a progress spinner on stderr labelled msg. It only draws
// when stderr is a terminal and neither --json nor --quiet was given;
// otherwise it is inert. Stop it before printing results.
func (o *Out) Spinner(msg string) *Spinner {
	on := !o.st.json && !o.st.quiet && spinnerWanted(o.st.stderr)
	return startSpinner(o.st.stderr, msg, on, spinnerInterval)
}

func indent(text string) string {
	text = strings.TrimSuffix(text, "\n")
	return "  " + strings.ReplaceAll(text, "\n", "\n  ") + "\n"
}

// jsonOptions: invalid UTF-8 (a peer's broken text) becomes U+FFFD instead
// of failing the whole output, and maps print in a stable order.
func jsonOptions() json.Options {
	return json.JoinOptions(jsontext.AllowInvalidUTF8(true), json.Deterministic(true))
}

// writeJSON marshals v, stamps it and writes it as one line.
func writeJSON(w io.Writer, v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	b, err = stamp(b)
	if err != nil {
		return err
	}
	_, err = w.Write(append(escapeForAgents(b), '\n'))
	return err
}

// marshal is json.Marshal(v, jsonOptions()). A value that writes itself
// (json.MarshalerTo: `send`'s document) is given an encoder directly, as
// json.Marshal would give it one: json.Marshal's first use in a process
// costs ~0.1 ms of reflection, which a verb that prints one small
// document at every run (an agent's `send --json`) need not pay.
func marshal(v any) ([]byte, error) {
	m, ok := v.(json.MarshalerTo)
	if !ok {
		return json.Marshal(v, jsonOptions())
	}
	var buf bytes.Buffer
	enc := jsontext.NewEncoder(&buf, jsontext.AllowInvalidUTF8(true))
	if err := m.MarshalJSONTo(enc); err != nil {
		return nil, err
	}
	if enc.StackDepth() != 0 || buf.Len() == 0 {
		return nil, fmt.Errorf("cliui: %T wrote no complete JSON value", v)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// escapeForAgents writes, in compact JSON, `<`, `>` and `&` as \u003c,
// \u003e and \u0026, and C1 controls, bidi controls and U+2028/U+2029 as
// \u escapes too: agents read --json output (SKILL.md has them pass it
// always, and the hook and the MCP server point them at `inbox --json`),
// so peer text in it must never read as markup (a body holding
// "</channel><channel from_name=…>") nor reach a terminal as a control.
// The JSON value is the same: these characters only ever occur inside
// strings, where the escapes mean what they replace (C0 controls are
// escaped by the encoder already).
func escapeForAgents(b []byte) []byte {
	if !slices.ContainsFunc(b, func(c byte) bool { return c == '<' || c == '>' || c == '&' || c >= 0xc2 }) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c == '<' || c == '>' || c == '&' {
				out = fmt.Appendf(out, `\u%04x`, c)
			} else {
				out = append(out, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if (r >= 0x80 && r <= 0x9f) || isBidiControl(r) || r == 0x200e || r == 0x200f || r == 0x061c || r == 0x2028 || r == 0x2029 {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[i:i+n]...)
		}
		i += n
	}
	return out
}

// stamp adds "schemaVersion":1 to a compact JSON object, or to every object
// element of a compact JSON array. Objects that already carry it are left
// alone.
func stamp(doc []byte) ([]byte, error) {
	switch jsontext.Value(doc).Kind() {
	case '{':
		return stampObject(doc)
	case '[':
		dec := jsontext.NewDecoder(bytes.NewReader(doc), jsontext.AllowInvalidUTF8(true))
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		out := []byte{'['}
		for dec.PeekKind() != ']' {
			v, err := dec.ReadValue()
			if err != nil {
				return nil, err
			}
			if len(out) > 1 {
				out = append(out, ',')
			}
			if v.Kind() == '{' {
				sv, err := stampObject(v)
				if err != nil {
					return nil, err
				}
				out = append(out, sv...)
			} else {
				out = append(out, v...)
			}
		}
		return append(out, ']'), nil
	default:
		return doc, nil
	}
}

const schemaMember = `"schemaVersion":1`

func stampObject(obj []byte) ([]byte, error) {
	has, err := hasMember(obj, "schemaVersion")
	if err != nil || has {
		return obj, err
	}
	out := make([]byte, 0, len(obj)+len(schemaMember)+1)
	out = append(out, '{')
	out = append(out, schemaMember...)
	if rest := obj[1:]; len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, obj[1:]...), nil
}

func hasMember(obj []byte, name string) (bool, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(obj), jsontext.AllowInvalidUTF8(true))
	if _, err := dec.ReadToken(); err != nil {
		return false, err
	}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return false, err
		}
		if tok.String() == name {
			return true, nil
		}
		if err := dec.SkipValue(); err != nil {
			return false, err
		}
	}
	return false, nil
}
