package cliui

import (
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
)

// WithExamples builds a Description following the examples convention:
// prose, then one "$ example" line per example. Help prints the examples
// first, the prose after the usage line.
func WithExamples(prose string, examples ...string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(prose))
	for _, ex := range examples {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("$ " + ex)
	}
	return b.String()
}

// splitDescription separates a Description into prose lines and examples
// (lines starting with "$ ").
func splitDescription(desc string) (prose, examples []string) {
	for _, line := range strings.Split(desc, "\n") {
		t := strings.TrimSpace(line)
		if ex, ok := strings.CutPrefix(t, "$ "); ok {
			examples = append(examples, ex)
			continue
		}
		prose = append(prose, strings.TrimRight(line, " \t"))
	}
	for len(prose) > 0 && strings.TrimSpace(prose[0]) == "" {
		prose = prose[1:]
	}
	for len(prose) > 0 && strings.TrimSpace(prose[len(prose)-1]) == "" {
		prose = prose[:len(prose)-1]
	}
	return prose, examples
}

// maxCollectedExamples bounds the examples gathered from subcommands for an
// app or group that has none of its own.
const maxCollectedExamples = 6

// collectExamples takes the first example of each visible command below
// cmds, in order, up to maxCollectedExamples.
func collectExamples(cmds []*cli.Command) []string {
	var out []string
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || len(out) >= maxCollectedExamples {
				continue
			}
			if _, ex := splitDescription(c.Description); len(ex) > 0 {
				out = append(out, ex[0])
			}
			walk(c.Subcommands)
		}
	}
	walk(cmds)
	return out
}

func isGroupAction(a cli.ActionFunc) bool {
	return a == nil || reflect.ValueOf(a).Pointer() == reflect.ValueOf(cli.ActionFunc(groupAction)).Pointer()
}

func visible(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if !c.Hidden {
			out = append(out, c)
		}
	}
	return out
}

// helpRow is one line of a two-column list.
type helpRow struct {
	left, right, dim string
}

// commandRows lists the runnable commands below cmds with their syntax
// relative to the app ("mesh create NAME --broker URL"), flattening groups
// so every verb's full syntax is visible at once, like 04-cli's command tree.
func commandRows(prefix string, cmds []*cli.Command) []helpRow {
	var rows []helpRow
	for _, c := range visible(cmds) {
		name := strings.TrimSpace(prefix + " " + c.Name)
		subs := visible(c.Subcommands)
		if len(subs) == 0 || !isGroupAction(c.Action) {
			left := name
			if c.ArgsUsage != "" {
				left += " " + c.ArgsUsage
			}
			row := helpRow{left: left, right: c.Usage}
			if len(c.Aliases) > 0 {
				row.dim = "(alias: " + strings.Join(c.Aliases, ", ") + ")"
			}
			rows = append(rows, row)
		}
		rows = append(rows, commandRows(name, subs)...)
	}
	return rows
}

// flagRows lists flags as "-q, --quiet" / "--mesh SLUG" with usage,
// default, required marker and environment variables.
func flagRows(flags []cli.Flag) []helpRow {
	var rows []helpRow
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		row := helpRow{left: flagSyntax(f)}
		d, ok := f.(cli.DocGenerationFlag)
		if !ok {
			rows = append(rows, row)
			continue
		}
		_, usage := unquoteUsage(d.GetUsage())
		row.right = usage
		var extra []string
		if d.TakesValue() {
			def := d.GetDefaultText()
			if def == "" {
				def = d.GetValue()
			}
			if u, err := strconv.Unquote(def); err == nil {
				def = u
			}
			switch def {
			case "", "0", "0s", "[]":
				// zero values say nothing
			default:
				extra = append(extra, "default: "+def)
			}
		}
		if r, ok := f.(cli.RequiredFlag); ok && r.IsRequired() {
			extra = append(extra, "required")
		}
		if env := d.GetEnvVars(); len(env) > 0 {
			extra = append(extra, "$"+strings.Join(env, ", $"))
		}
		if len(extra) > 0 {
			row.dim = "(" + strings.Join(extra, "; ") + ")"
		}
		rows = append(rows, row)
	}
	return rows
}

// flagNames is "-q, --quiet": short names first.
func flagNames(f cli.Flag) string {
	names := slices.Clone(f.Names())
	slices.SortStableFunc(names, func(a, b string) int { return min(len(a), 2) - min(len(b), 2) })
	for i, n := range names {
		if len(n) == 1 {
			names[i] = "-" + n
		} else {
			names[i] = "--" + n
		}
	}
	return strings.Join(names, ", ")
}

// flagSyntax is flagNames plus the value placeholder: the backquoted word
// of the usage string (urfave/cli's convention), else VALUE.
func flagSyntax(f cli.Flag) string {
	s := flagNames(f)
	if d, ok := f.(cli.DocGenerationFlag); ok && d.TakesValue() {
		ph, _ := unquoteUsage(d.GetUsage())
		if ph == "" {
			ph = "VALUE"
		}
		s += " " + ph
	}
	return s
}

// maxLeftColumn is the widest left column; longer entries put their
// description on the next line.
const maxLeftColumn = 40

func writeRows(b *strings.Builder, rows []helpRow, left func(string) string, s Style) {
	width := 0
	for _, r := range rows {
		if n := utf8.RuneCountInString(r.left); n > width && n <= maxLeftColumn {
			width = n
		}
	}
	for _, r := range rows {
		n := utf8.RuneCountInString(r.left)
		b.WriteString("  " + left(r.left))
		right := r.right
		if r.dim != "" {
			right = strings.TrimSpace(right + " " + s.Dim(r.dim))
		}
		if right == "" {
			b.WriteByte('\n')
			continue
		}
		if n > width {
			b.WriteString("\n  " + strings.Repeat(" ", width))
		} else {
			b.WriteString(strings.Repeat(" ", width-n))
		}
		b.WriteString("   " + right + "\n")
	}
}

func section(b *strings.Builder, title string, s Style) {
	b.WriteString("\n" + s.Bold(title) + "\n")
}

// renderHelp writes the help of the app (path empty) or of the command at
// path: title, examples, usage, description, commands, flags, global flags.
func renderHelp(w io.Writer, app *cli.App, path []*cli.Command, s Style) {
	name := commandName(app, path)
	var usage, desc, argsUsage, usageText string
	var subs []*cli.Command
	var flags []cli.Flag
	group := true
	if len(path) == 0 {
		usage, desc, usageText, subs = app.Usage, app.Description, app.UsageText, app.Commands
	} else {
		c := path[len(path)-1]
		usage, desc, argsUsage, usageText, subs, flags = c.Usage, c.Description, c.ArgsUsage, c.UsageText, c.Subcommands, c.Flags
		group = len(visible(subs)) > 0
	}
	prose, examples := splitDescription(desc)
	if len(examples) == 0 && group {
		examples = collectExamples(subs)
	}

	var b strings.Builder
	title := name
	if usage != "" {
		title += " — " + usage
	}
	b.WriteString(s.Brand(title) + "\n")

	if len(examples) > 0 {
		section(&b, "EXAMPLES", s)
		for _, ex := range examples {
			b.WriteString("  " + s.Dim("$") + " " + ex + "\n")
		}
	}

	section(&b, "USAGE", s)
	switch {
	case usageText != "":
		for _, line := range strings.Split(strings.TrimSpace(usageText), "\n") {
			b.WriteString("  " + s.Cyan(strings.TrimSpace(line)) + "\n")
		}
	case len(path) == 0:
		b.WriteString("  " + s.Cyan(name+" COMMAND [ARGS...] [FLAGS]") + "\n")
	default:
		syntax := name
		if argsUsage != "" {
			syntax += " " + argsUsage
		}
		if group && isGroupAction(path[len(path)-1].Action) {
			syntax = name + " COMMAND"
		}
		b.WriteString("  " + s.Cyan(syntax) + "\n")
		if group && !isGroupAction(path[len(path)-1].Action) {
			b.WriteString("  " + s.Cyan(name+" COMMAND") + "\n")
		}
	}
	if len(prose) > 0 {
		b.WriteByte('\n')
		for _, line := range prose {
			if strings.TrimSpace(line) == "" {
				b.WriteByte('\n')
				continue
			}
			b.WriteString("  " + line + "\n")
		}
	}

	if group {
		prefix := strings.TrimSpace(strings.TrimPrefix(name, app.Name))
		writeCommandSections(&b, prefix, visible(subs), s)
	}

	if rows := flagRows(flags); len(rows) > 0 {
		section(&b, "FLAGS", s)
		writeRows(&b, rows, func(x string) string { return x }, s)
	}

	if len(path) == 0 {
		section(&b, "GLOBAL FLAGS", s)
		writeRows(&b, flagRows(app.Flags), func(x string) string { return x }, s)
		b.WriteString("\n  " + s.Dim("Flags go anywhere on the line; put a message that starts with - after --.") + "\n")
		b.WriteString("  " + s.Dim("Run "+name+" COMMAND --help for a command's flags and examples, "+name+" help exit-codes for the exit codes.") + "\n")
	} else {
		section(&b, "GLOBAL FLAGS", s)
		var names []string
		for _, f := range app.Flags {
			names = append(names, flagSyntax(f))
		}
		b.WriteString("  " + strings.Join(names, "  ") + "\n")
		b.WriteString("  " + s.Dim("(see "+app.Name+" --help)") + "\n")
	}
	io.WriteString(w, b.String())
}

// writeCommandSections lists commands under COMMANDS, or under one section
// per category when commands carry categories (uncategorised ones first).
func writeCommandSections(b *strings.Builder, prefix string, cmds []*cli.Command, s Style) {
	var order []string
	byCat := map[string][]*cli.Command{}
	for _, c := range cmds {
		if _, seen := byCat[c.Category]; !seen {
			order = append(order, c.Category)
		}
		byCat[c.Category] = append(byCat[c.Category], c)
	}
	slices.SortStableFunc(order, func(a, b string) int {
		switch {
		case a == "" && b != "":
			return -1
		case a != "" && b == "":
			return 1
		}
		return 0
	})
	for _, cat := range order {
		title := "COMMANDS"
		if cat != "" {
			title = strings.ToUpper(cat)
		}
		rows := commandRows(prefix, byCat[cat])
		if len(rows) == 0 {
			continue
		}
		section(b, title, s)
		writeRows(b, rows, s.Cyan, s)
	}
}

// unquoteUsage extracts the placeholder from a flag usage string: the first
// backquoted word ("choose the mesh by `SLUG`" → "SLUG", "choose the mesh by
// SLUG"), the same convention urfave/cli uses.
func unquoteUsage(usage string) (placeholder, text string) {
	start := strings.IndexByte(usage, '`')
	if start < 0 {
		return "", usage
	}
	end := strings.IndexByte(usage[start+1:], '`')
	if end < 0 {
		return "", usage
	}
	name := usage[start+1 : start+1+end]
	return name, usage[:start] + name + usage[start+2+end:]
}
