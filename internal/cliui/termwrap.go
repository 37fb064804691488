package cliui

import (
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// TerminalWidth is the width in columns of the terminal w writes to, 0
// when w is not a terminal (or its size cannot be read).
func TerminalWidth(w io.Writer) int {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok || !IsTerminal(w) {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 0
	}
	return int(ws.Col)
}

// Width is the terminal width of stdout, 0 when it is not a terminal.
func (o *Out) Width() int { return TerminalWidth(o.st.stdout) }

// PeerTextWidth is the width to break peer text at (WrapPeerText): the
// terminal stdout writes to, else the terminal stderr writes to (stdout
// piped to a pager, `| less`, which wraps at that terminal's width), 0
// when neither is a terminal.
func (o *Out) PeerTextWidth() int {
	if w := TerminalWidth(o.st.stdout); w > 0 {
		return w
	}
	return TerminalWidth(o.st.stderr)
}

// VisibleCols counts the columns s takes on a terminal, high: ANSI
// colour sequences take none, a tab counts 8, and any character outside
// ASCII 2 (the widest a terminal gives one), so a break made by these
// counts comes at or before the terminal's own.
func VisibleCols(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == 0x1b && i+1 < len(s) && s[i+1] == '[':
			i += csiLen(s[i:])
			continue
		case c < utf8.RuneSelf:
			n += runeCols(rune(c))
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			n += runeCols(r)
			i += size
			continue
		}
		i++
	}
	return n
}

// runeCols is the columns VisibleCols counts for r: 8 for a tab, 1 for
// other ASCII, 2 for anything else.
func runeCols(r rune) int {
	switch {
	case r == '\t':
		return 8
	case r < utf8.RuneSelf:
		return 1
	}
	return 2
}

// WrapPeerText breaks a peer's text, printed after a prefix that takes
// prefixCols columns on a terminal of width columns, so that the terminal
// never wraps a line itself: each piece that would reach the edge goes on
// a line of its own, after indent (a further line of the text, after a
// '\n', starts after indent too). A terminal's own wrap starts the rest
// of a line at column 0, where a post or a message header starts: a peer
// who pads its text to the edge could print a line that passes for
// another member's post. width 0 (no terminal: output to a file, or to a
// pager of unknown width) indents further lines and shows a run of more
// than two blanks (spaces, tabs) inside a line as one space: such padding
// is how a post's rest is pushed to a wrap's column 0 (a line's leading
// indentation is kept).
func WrapPeerText(text string, prefixCols int, indent string, width int) string {
	ind := VisibleCols(indent)
	if width <= 0 {
		return strings.ReplaceAll(squeezeBlanks(text), "\n", "\n"+indent)
	}
	if width <= ind+8 {
		return strings.ReplaceAll(text, "\n", "\n"+indent)
	}
	var b strings.Builder
	col := prefixCols
	for i, line := range strings.Split(text, "\n") {
		if i > 0 {
			b.WriteString("\n" + indent)
			col = ind
		}
		for j := 0; j < len(line); {
			if n := csiLen(line[j:]); n > 0 {
				// Our own colour (a peer's escapes are stripped before): it
				// takes no column and is never cut, or the terminal would
				// read the break inside it and the colour would run on.
				b.WriteString(line[j : j+n])
				j += n
				continue
			}
			r, size := utf8.DecodeRuneInString(line[j:])
			w := runeCols(r)
			if col+w > width-1 { // the last column: some terminals wrap on it
				b.WriteString("\n" + indent)
				col = ind
			}
			b.WriteString(line[j : j+size])
			j += size
			col += w
		}
	}
	return b.String()
}

// maxKeptIndent is the most indentation (columns) squeezeBlanks keeps at
// the start of a line: enough for code, far from a pager's edge.
const maxKeptIndent = 8

// squeezeBlanks shows each run of more than two blanks (spaces, tabs)
// inside a line as one space, and a line's indentation as at most
// maxKeptIndent columns: padding is how a peer's text puts a line of its
// own at a pager's column 0, and both a first line (printed after a
// prefix) and a further line (after our indent) start inside a line.
func squeezeBlanks(text string) string {
	if !strings.Contains(text, "   ") && !strings.Contains(text, "\t") && isASCII(text) {
		return text
	}
	var b strings.Builder
	b.Grow(len(text))
	lead := true // in a line's leading indentation
	for i := 0; i < len(text); {
		if text[i] == '\n' {
			lead = true
			b.WriteByte('\n')
			i++
			continue
		}
		// plain: spaces only; ascii: spaces and tabs only.
		j, n, cols, plain, ascii := i, 0, 0, true, true
		for j < len(text) {
			size, w := blankAt(text[j:])
			if size == 0 {
				break
			}
			plain = plain && text[j] == ' '
			ascii = ascii && (text[j] == ' ' || text[j] == '\t')
			j, n, cols = j+size, n+1, cols+w
		}
		switch {
		case n == 0:
			lead = false
			b.WriteByte(text[i])
			i++
			continue
		case lead && cols > maxKeptIndent:
			b.WriteString(strings.Repeat(" ", maxKeptIndent))
		case lead && !ascii:
			b.WriteString(strings.Repeat(" ", cols))
		case !lead && (n > 2 || !plain):
			b.WriteByte(' ')
		default:
			b.WriteString(text[i:j])
		}
		i = j
	}
	return b.String()
}

// blankAt is the size in bytes of the blank s starts with and the columns
// it takes (counted high), 0 when s starts with none: a space, a tab, and
// every other character a terminal shows as nothing but room (no-break
// and other Unicode spaces, the Braille blank, the Hangul fillers), since
// any of them pads as well as a space.
func blankAt(s string) (size, cols int) {
	switch s[0] {
	case ' ':
		return 1, 1
	case '\t':
		return 1, 8
	}
	if s[0] < utf8.RuneSelf {
		return 0, 0
	}
	r, size := utf8.DecodeRuneInString(s)
	switch {
	case unicode.Is(unicode.Zs, r), r == 0x2800, r == 0x3164, r == 0xffa0, r == 0x115f, r == 0x1160:
		return size, 2
	}
	return 0, 0
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// csiLen is the length of the ANSI CSI sequence s starts with (ESC '['
// parameters, then a final byte in 0x40..0x7e), 0 when it starts with none.
func csiLen(s string) int {
	if len(s) < 2 || s[0] != 0x1b || s[1] != '[' {
		return 0
	}
	j := 2
	for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
		j++
	}
	if j == len(s) {
		return len(s)
	}
	return j + 1
}

// CutToWidth cuts s so that it takes fewer than width columns on a
// terminal (counted high, as VisibleCols does), ending it with "…" when
// something was cut; colour sequences are kept whole and a cut one is
// reset. width 0 (not a terminal) leaves s as it is. A table row that
// reached the terminal's edge would be wrapped by the terminal, and what a
// peer put at the end of its row (a summary) would start the next screen
// line at column 0, where a row of its own starts.
func CutToWidth(s string, width int) string {
	if width <= 0 || VisibleCols(s) <= width-1 {
		return s
	}
	var b strings.Builder
	col, styled := 0, false
	for j := 0; j < len(s); {
		if n := csiLen(s[j:]); n > 0 {
			b.WriteString(s[j : j+n])
			styled = s[j:j+n] != "\x1b[0m"
			j += n
			continue
		}
		r, size := utf8.DecodeRuneInString(s[j:])
		w := runeCols(r)
		if col+w > width-3 { // room for the "…" (counted 2, high) before the last column
			break
		}
		b.WriteString(s[j : j+size])
		j += size
		col += w
	}
	b.WriteString("…")
	if styled {
		b.WriteString("\x1b[0m")
	}
	return b.String()
}
