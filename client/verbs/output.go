package verbs

import (
	"strings"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"claudemesh/internal/cliui"
)

// table prints aligned human columns through Out (two-space indent, skipped
// under --json). Cells that come from peers must be sanitised by the caller.
// Columns are padded by display width (cliui.Width), not by runes or
// bytes, so a name in Japanese or with an emoji does not push the columns
// after it out of line; colour sequences take no room.
type table struct {
	out  *cliui.Out
	rows [][]string
}

func newTable(out *cliui.Out) *table { return &table{out: out} }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

// tableGap is the room between two columns.
const tableGap = 2

func (t *table) flush() error {
	if len(t.rows) == 0 {
		return nil
	}
	// A column's width is that of its widest cell among the rows that
	// have a cell after it (a row's last cell is not padded).
	var widths []int
	for _, r := range t.rows {
		for i := 0; i < len(r)-1; i++ {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], cliui.Width(r[i]))
		}
	}
	// On a terminal a row is cut before its edge (--json has it all): the
	// terminal's own wrap would start the rest of a row (a peer's summary,
	// padded to the edge) at column 0, where it could pass for a row.
	width := t.out.Width()
	if width > 0 {
		width -= 2 // Resultf's indent
	}
	lines := make([]string, len(t.rows))
	var b strings.Builder
	for n, r := range t.rows {
		b.Reset()
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-cliui.Width(c)+tableGap))
			}
		}
		lines[n] = cliui.CutToWidth(strings.TrimRight(b.String(), " "), width)
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
