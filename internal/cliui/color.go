package cliui

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
)

// ColorEnabled decides whether output to os.Stdout is coloured; see
// ColorEnabledFor for the rules.
func ColorEnabled(noColorFlag bool) bool { return ColorEnabledFor(os.Stdout, noColorFlag) }

// ColorEnabledFor decides whether output to w is coloured. In order of
// precedence: --no-color and NO_COLOR (any non-empty value, no-color.org)
// always win, because they are explicit opt-outs; CLICOLOR_FORCE (non-empty,
// not "0") forces colour even when w is not a terminal or TERM=dumb, because
// it is an explicit opt-in (for pagers and tests); otherwise colour is on
// only when w is a terminal and TERM is not "dumb".
func ColorEnabledFor(w io.Writer, noColorFlag bool) bool {
	if noColorFlag || os.Getenv("NO_COLOR") != "" {
		return false
	}
	if f := os.Getenv("CLICOLOR_FORCE"); f != "" && f != "0" {
		return true
	}
	return os.Getenv("TERM") != "dumb" && IsTerminal(w)
}

// IsTerminal reports whether w is a terminal (a file descriptor go-isatty
// recognises, Cygwin/MSYS ptys included).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}

// Style colours text when colour is on and returns it unchanged otherwise,
// so callers never branch on colour themselves. The zero Style is plain.
type Style struct {
	on        bool
	truecolor bool
}

// NewStyle returns a Style that colours when on is true. The brand colour
// uses 24-bit colour when COLORTERM advertises it, else the nearest of the
// 256-colour palette.
func NewStyle(on bool) Style {
	ct := os.Getenv("COLORTERM")
	return Style{on: on, truecolor: ct == "truecolor" || ct == "24bit"}
}

// Enabled reports whether this style emits ANSI sequences.
func (s Style) Enabled() bool { return s.on }

func (s Style) wrap(code, text string) string {
	if !s.on || text == "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

// Brand is the claudemesh orange (#D97757), used for titles.
func (s Style) Brand(text string) string {
	if s.truecolor {
		return s.wrap("1;38;2;217;119;87", text)
	}
	return s.wrap("1;38;5;208", text)
}

// Bold is for section headers.
func (s Style) Bold(text string) string { return s.wrap("1", text) }

// Cyan is for command syntax.
func (s Style) Cyan(text string) string { return s.wrap("36", text) }

// Dim is for hints, aliases and secondary detail.
func (s Style) Dim(text string) string { return s.wrap("2", text) }

// Red is for the error mark.
func (s Style) Red(text string) string { return s.wrap("31", text) }

// Green is for success marks.
func (s Style) Green(text string) string { return s.wrap("32", text) }

// Yellow is for warnings.
func (s Style) Yellow(text string) string { return s.wrap("33", text) }
