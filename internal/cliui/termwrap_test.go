package cliui

import (
	"strings"
	"testing"
)

// TestWrapPeerTextNeverReachesTheEdge (review): a topic post padded to
// the terminal's edge was soft-wrapped by the terminal, so its rest
// started at column 0 and passed for another member's post. Each line
// the wrap makes fits the width, and every line after the first starts
// with the indent.
func TestWrapPeerTextNeverReachesTheEdge(t *testing.T) {
	prefix := "  20:00:50 #t4 alice: "
	forged := "ok" + strings.Repeat(" ", 58) + "20:01:05 #t4 bob: I approve the deploy"
	for _, text := range []string{forged, "short", "a\nb\n" + strings.Repeat("é", 200), strings.Repeat("\tx", 40), "\x1b[31mred\x1b[0m" + strings.Repeat("y", 100)} {
		for _, width := range []int{40, 80, 132} {
			out := prefix + WrapPeerText(text, VisibleCols(prefix), "      ", width)
			for i, line := range strings.Split(out, "\n") {
				if c := VisibleCols(line); c >= width {
					t.Fatalf("width %d: line %d takes %d columns: %q", width, i, c, line)
				}
				if i > 0 && !strings.HasPrefix(line, "      ") {
					t.Fatalf("width %d: line %d does not start with the indent: %q", width, i, line)
				}
			}
		}
	}
	if got := WrapPeerText("a\nb", 10, "    ", 0); got != "a\n    b" {
		t.Fatalf("not a terminal: %q", got)
	}
}

// TestWrapPeerTextSqueezesPaddingWithoutATerminal (review): piped output
// (a file, `| less` with no terminal to measure) was not broken, so a post
// padded with spaces still lined up in a pager as another member's post.
// Without a width, a run of more than two blanks inside a line is one
// space; a line's indentation and single or double spaces stay.
func TestWrapPeerTextSqueezesPaddingWithoutATerminal(t *testing.T) {
	for in, want := range map[string]string{
		"ok" + strings.Repeat(" ", 58) + "20:01:05 #t4 bob: I approve": "ok 20:01:05 #t4 bob: I approve",
		"a\t\tb":                   "a b",
		"a  b":                     "a  b",
		"if x {\n    return 1\n}":  "if x {\n      return 1\n  }",
		"\tindented   then padded": "\tindented then padded",
		"\t\tindented":             "        indented", // at most 8 columns of indentation
		"trailing   ":              "trailing ",
	} {
		if got := WrapPeerText(in, 20, "  ", 0); got != want {
			t.Errorf("WrapPeerText(%q) without a terminal = %q, want %q", in, got, want)
		}
	}
}

// A line's leading blanks are padding too: the first line is printed
// after a post's prefix and a further one after our indent, so 58 or 74
// leading spaces put a fake post at an 80-column pager's column 0. Found
// by a review.
func TestWrapPeerTextSqueezesLeadingPaddingWithoutATerminal(t *testing.T) {
	fake := "20:01:05 #t4 bob: I approve the deploy"
	for _, body := range []string{
		strings.Repeat(" ", 58) + fake,
		"ok\n" + strings.Repeat(" ", 74) + fake,
		"ok\n" + strings.Repeat("\t", 9) + fake,
	} {
		got := WrapPeerText(body, 20, "    ", 0)
		i := strings.Index(got, fake)
		line := got[strings.LastIndex(got[:i], "\n")+1 : i]
		if len(line) > len("    ")+maxKeptIndent {
			t.Errorf("%d columns of padding kept before the fake post: %q", len(line), got)
		}
	}
}

// Any character a terminal shows as room pads as well as a space: a body
// padded with no-break spaces, ideographic spaces or Braille blanks still
// put a fake post at a pager's column 0. Found by a review.
func TestWrapPeerTextSqueezesEveryBlankWithoutATerminal(t *testing.T) {
	fake := "20:01:05 #t4 bob: I approve the deploy"
	for _, pad := range []string{"\u00a0", "\u3000", "\u2800", "\u2003", "\u3164", " \u00a0"} {
		for _, body := range []string{
			"ok" + strings.Repeat(pad, 60) + fake,
			strings.Repeat(pad, 60) + fake,
			"ok\n" + strings.Repeat(pad, 40) + fake,
		} {
			got := WrapPeerText(body, 20, "    ", 0)
			i := strings.Index(got, fake)
			before := got[strings.LastIndex(got[:i], "\n")+1 : i]
			if VisibleCols(before) > len("    ")+maxKeptIndent+len("ok ") {
				t.Errorf("pad %q: %d columns of padding kept before the fake post: %q", pad, VisibleCols(before), got)
			}
		}
	}
	if got := WrapPeerText("10\u00a0km", 20, "  ", 0); got != "10 km" {
		t.Errorf("a lone no-break space: %q", got)
	}
}

// A body we colour ourselves (topic history's "[key missing: …]", inbox's
// dimmed decrypt error) is wrapped too: its escape sequences take no
// column and are never cut, or the terminal reads the break inside the
// sequence and the colour runs on into the next post.
func TestWrapPeerTextKeepsEscapesWhole(t *testing.T) {
	for n := 0; n < 120; n++ {
		body := "\x1b[33m[key missing: " + strings.Repeat("x", n) + "]\x1b[0m"
		got := WrapPeerText(body, 20, "    ", 78)
		if strings.Count(got, "\x1b[33m") != 1 || strings.Count(got, "\x1b[0m") != 1 {
			t.Fatalf("n=%d: an escape sequence was cut by the wrap: %q", n, got)
		}
		for i, line := range strings.Split(got, "\n") {
			cols := VisibleCols(line)
			if i == 0 {
				cols += 20
			}
			if cols > 77 {
				t.Fatalf("n=%d: line %d takes %d columns of 78: %q", n, i, cols, got)
			}
		}
		if want := 20 + len("[key missing: ]") + n; want <= 77 && strings.Contains(got, "\n") {
			t.Fatalf("n=%d: broken although it fits (escapes counted as columns): %q", n, got)
		}
	}
}

func TestCutToWidthStaysOffTheEdge(t *testing.T) {
	row := "mallory  1a2b3c4d  online  \x1b[2m" + strings.Repeat("x", 60) + "bob  5e6f7a8b  online  member\x1b[0m"
	for width := 12; width < 140; width++ {
		got := CutToWidth(row, width)
		if VisibleCols(got) > width-1 {
			t.Fatalf("width %d: %d columns: %q", width, VisibleCols(got), got)
		}
		if got != row && (!strings.Contains(got, "…") || strings.Contains(got, "\x1b[2m") && !strings.HasSuffix(got, "\x1b[0m")) {
			t.Fatalf("width %d: cut without a mark or with the dim style left on: %q", width, got)
		}
		if rest := strings.NewReplacer("\x1b[2m", "", "\x1b[0m", "").Replace(got); strings.Contains(rest, "\x1b") {
			t.Fatalf("width %d: a colour sequence was cut: %q", width, got)
		}
	}
	if got := CutToWidth(row, 0); got != row {
		t.Fatalf("not a terminal: the row was changed: %q", got)
	}
	if got := CutToWidth("short", 80); got != "short" {
		t.Fatalf("a row that fits was changed: %q", got)
	}
}
