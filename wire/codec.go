package wire

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// RawJSON is an already-encoded JSON value, used where the broker hands out
// bytes it stored (queued pushes) without decoding and re-encoding them.
type RawJSON = jsontext.Value

// ErrIllShaped wraps every decoding failure: invalid JSON, a duplicate key,
// invalid UTF-8, a missing `type` or a field of the wrong JSON type. The
// broker answers it with `malformed` before the handshake and
// `invalid_argument` after it.
var ErrIllShaped = errors.New("ill-shaped frame")

// Decode parses one frame strictly into v. The JSON v2 decoder rejects
// duplicate object names and invalid UTF-8, and matches names
// case-sensitively, which is exactly the framing rule of 01-protocol §1
// ("field names are exact camelCase", "a duplicate key or invalid UTF-8 makes
// a frame ill-shaped"). Unknown fields are ignored.
func Decode(data []byte, v any) error {
	// The v2 decoder treats a bare null as "leave v alone"; a frame or body
	// must be an object.
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("%w: a frame must be a JSON object", ErrIllShaped)
	}
	if decodeFast(data, v) {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrIllShaped, err)
	}
	return nil
}

// DescribeDecodeError says why Decode refused a JSON body in the body's
// own terms, for an API's error message: which field holds what instead
// of what (`"priority" must be a string, not a number`), or where the JSON
// is broken, never the decoder's Go type names ("cannot unmarshal JSON
// number into Go string"). what names the document ("the body").
func DescribeDecodeError(err error, what string) string {
	if err == nil {
		return ""
	}
	var se *json.SemanticError
	if errors.As(err, &se) && se.JSONPointer != "" {
		// "/ids/0" is said as ids[0], "/a/b" as a.b.
		var field string
		for _, tok := range strings.Split(strings.TrimPrefix(string(se.JSONPointer), "/"), "/") {
			tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
			if _, err := strconv.Atoi(tok); err == nil && field != "" {
				field += "[" + tok + "]"
			} else if field != "" {
				field += "." + tok
			} else {
				field = tok
			}
		}
		want := jsonWords(se.GoType)
		got := kindWords(se.JSONKind)
		switch {
		case want != "" && got != "" && want != got:
			return fmt.Sprintf("%s: %q must be %s, not %s", what, field, want, got)
		case want != "":
			return fmt.Sprintf("%s: %q must be %s", what, field, want)
		default:
			return fmt.Sprintf("%s: %q has a value of the wrong kind", what, field)
		}
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		return fmt.Sprintf("%s is not valid JSON (%s)", what, strings.Replace(strings.TrimPrefix(syn.Error(), "jsontext: "), " after offset ", " at byte ", 1))
	}
	msg := strings.TrimPrefix(err.Error(), ErrIllShaped.Error()+": ")
	if strings.Contains(msg, "a frame must be a JSON object") {
		return what + " must be a JSON object"
	}
	return what + " is not valid JSON"
}

// jsonWords is what JSON a Go type takes, in words.
func jsonWords(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return ""
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return ""
}

// kindWords is a JSON value's kind, in words.
func kindWords(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "true or false"
	case 'n':
		return "null"
	case '[':
		return "an array"
	case '{':
		return "an object"
	}
	return ""
}

// Peek reads the envelope (type and reqId) of a frame and validates the
// whole frame's JSON well-formedness on the way, so a frame that passes Peek
// can only fail its typed Decode on a field's shape.
func Peek(data []byte) (Envelope, error) {
	var env Envelope
	if len(data) == 0 || data[0] != '{' {
		// Only objects are frames; checking the first byte spares the
		// decoder a pass on obvious junk.
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		if len(trimmed) == 0 || trimmed[0] != '{' {
			return env, fmt.Errorf("%w: a frame must be a JSON object", ErrIllShaped)
		}
	}
	if err := json.Unmarshal(data, &env); err != nil {
		// Try to salvage the reqId so the error can still be correlated.
		return env, fmt.Errorf("%w: %v", ErrIllShaped, err)
	}
	if env.Type == "" {
		return env, fmt.Errorf("%w: missing \"type\"", ErrIllShaped)
	}
	return env, nil
}

// Encode serialises a frame. Frames are plain structs, so failure here is a
// programming error; it is still returned rather than panicking.
func Encode(v any) ([]byte, error) {
	return json.Marshal(v)
}

// MustEncode is Encode for values built by our own code (fixed frames such
// as OK or Error), where a failure is a bug.
func MustEncode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("wire: encoding %T: %v", v, err))
	}
	return b
}

// EncodePushWithKey splices a recipient's `key` entry into an encoded push
// that has none, so a multi message is serialised once per fan-out and each
// recipient costs only its own small key object. base must be the encoding
// of a Push whose Key was nil (it ends in '}').
func EncodePushWithKey(base []byte, key *MultiKey) []byte {
	if key == nil {
		return base
	}
	out := make([]byte, 0, len(base)+len(key.To)+len(key.Nonce)+len(key.Box)+40)
	out = append(out, base[:len(base)-1]...)
	return AppendPushKey(out, key)
}

// AppendPushKey appends to dst what EncodePushWithKey puts after base's
// last byte but one: the `key` entry and the closing brace. A fan-out can
// keep this alone per recipient (~180 bytes of a ~1.2 KB frame) and splice
// it when it writes the frame (base[:len(base)-1] then this).
func AppendPushKey(dst []byte, key *MultiKey) []byte {
	dst = append(dst, `,"key":`...)
	dst = appendMultiKey(dst, key)
	return append(dst, '}')
}

// Validation of the string shapes the protocol fixes. These are
// hand-written rather than regexps: they run on every frame, and compiling
// the regexps would cost every short-lived CLI process a millisecond at
// start-up.

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// allIn reports whether s is 1..max bytes, each alphanumeric or in extra.
func allIn(s string, max int, extra string) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

// ValidReqID reports whether s is a legal reqId: ^[A-Za-z0-9._:-]{1,64}$.
func ValidReqID(s string) bool { return allIn(s, 64, "._:-") }

// ValidSessionID reports whether s is a legal sessionId: ^[A-Za-z0-9._-]{1,64}$.
func ValidSessionID(s string) bool { return allIn(s, 64, "._-") }

// validLabel is one segment of a group or a topic name:
// ^[a-z0-9][a-z0-9_-]{0,max-1}$.
func validLabel(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		lowerAlnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !lowerAlnum && (i == 0 || (c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

// ValidGroup reports whether s is a legal group name:
// ^[a-z0-9][a-z0-9_-]{0,31}(/[a-z0-9][a-z0-9_-]{0,31}){0,3}$.
func ValidGroup(s string) bool {
	parts := strings.Split(s, "/")
	if len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		if !validLabel(p, 32) {
			return false
		}
	}
	return true
}

// ValidTopicName reports whether s is a legal topic name: ^[a-z0-9][a-z0-9_-]{0,63}$.
func ValidTopicName(s string) bool { return validLabel(s, 64) }

// ValidULID reports whether s looks like a ULID (broker-assigned ids):
// 26 characters of Crockford base32, uppercase (no I, L, O, U).
func ValidULID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'A' || c > 'Z' || c == 'I' || c == 'L' || c == 'O' || c == 'U') {
			return false
		}
	}
	return true
}

// IsHex reports whether s is exactly n lowercase hex characters. Uppercase is
// refused on purpose: keys are compared as strings everywhere, and two
// spellings of one key would make two identities.
func IsHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidText reports whether s is valid UTF-8 of at most maxBytes bytes with
// no control characters — the rule for free-text fields a peer can set
// (cwd, hostname, summary) that other peers will display.
func ValidText(s string, maxBytes int) bool {
	if len(s) > maxBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return false
		}
	}
	return true
}

// CleanText makes s pass ValidText(s, maxBytes): invalid UTF-8 and control
// characters become U+FFFD, and it is cut to maxBytes at a character
// boundary. For text the user did not write as a field (a working
// directory's path, shown to peers), which is better shown marked than
// refused.
func CleanText(s string, maxBytes int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > maxBytes {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// PeekFields returns the string values of the named top-level fields of
// an object frame, reading it only as far as it must to find them all
// (the frames this project writes put `id` and `reqId` right after
// `type`). A field that is missing, not a string, or after a syntax error
// comes back "". It is for answering a frame that is refused before it is
// decoded (a send over the member's byte budget: broker/route.go), and
// checks nothing else: its values must be validated before they are used.
func PeekFields(data []byte, names ...string) []string {
	out := make([]string, len(names))
	dec := jsontext.NewDecoder(bytes.NewBuffer(data))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return out
	}
	left := len(names)
	for left > 0 && dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return out
		}
		i := slices.Index(names, name.String())
		if i < 0 || out[i] != "" || dec.PeekKind() != '"' {
			if dec.SkipValue() != nil {
				return out
			}
			continue
		}
		v, err := dec.ReadToken()
		if err != nil {
			return out
		}
		out[i] = v.String()
		left--
	}
	return out
}

// ValidTargetSpec reports whether s is a targetSpec a push may carry: a
// 64-hex pubkey, "*", "@<group>" or "#<topicId>" (an id: ValidReqID).
func ValidTargetSpec(s string) bool {
	switch {
	case s == "*":
		return true
	case strings.HasPrefix(s, "@"):
		return ValidGroup(s[1:])
	case strings.HasPrefix(s, "#"):
		return ValidReqID(s[1:])
	}
	return IsHex(s, 64)
}

// ShownReplyToID and ShownTargetSpec are a push's replyToId and
// targetSpec as a receiver keeps them: as they are when of their wire form,
// else "". A box's targetSpec and (outside topics) replyToId are signed by
// nobody, so the sender's broker, or a sender writing frames by hand, could
// otherwise put controls or text that reads as something else into a
// recipient's inbox ("reply to 01J… (via alice)"). The message is kept;
// only the label is dropped. Call them on a copy of the fields, after
// verification (a multi's signature covers its targetSpec as sent).
func ShownReplyToID(s string) string {
	if ValidReqID(s) {
		return s
	}
	return ""
}

// ShownTargetSpec: see ShownReplyToID.
func ShownTargetSpec(s string) string {
	if ValidTargetSpec(s) {
		return s
	}
	return ""
}
