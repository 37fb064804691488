package verbs

import (
	"bytes"
	"strings"
	"text/tabwriter"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"claudemesh/internal/cliui"
)

// table prints aligned human columns through Out (two-space indent, skipped
// under --json). Cells that come from peers must be sanitised by the caller.
type table struct {
	out *cliui.Out
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(out *cliui.Out) *table {
	t := &table{out: out}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 4, 2, ' ', 0)
	return t
}

func (t *table) row(cells ...string) {
	t.tw.Write([]byte(strings.Join(cells, "\t") + "\n"))
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	if t.buf.Len() == 0 {
		return nil
	}
	lines := strings.Split(strings.TrimRight(t.buf.String(), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	t.out.Resultf("%s", strings.Join(lines, "\n"))
	return nil
}

// jsonArray streams one JSON array to stdout element by element, so the
// cold inbox can show a page and settle it before fetching the next one and
// still print a single document. Its bytes equal Out.JSON of the whole
// slice: elements carry their own schemaVersion.
type jsonArray struct {
	out     *cliui.Out
	started bool
}

func (a *jsonArray) add(v any) error {
	b, err := json.Marshal(v, jsontext.AllowInvalidUTF8(true), json.Deterministic(true))
	if err != nil {
		return err
	}
	sep := ","
	if !a.started {
		sep, a.started = "[", true
	}
	_, err = a.out.Stdout().Write(append([]byte(sep), b...))
	return err
}

// close ends the array ("[]" if nothing was added).
func (a *jsonArray) close() error {
	s := "]\n"
	if !a.started {
		s, a.started = "[]\n", true
	}
	_, err := a.out.Stdout().Write([]byte(s))
	return err
}
