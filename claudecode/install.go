package claudecode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
	"claudemesh/internal/jsonedit"
)

// install / uninstall (04-cli "Claude Code integration files"): the MCP
// server entry in ~/.claude.json, the UserPromptSubmit and Stop hooks in
// ~/.claude/settings.json, the skill in ~/.claude/skills/claudemesh, and
// the daemon service. Edits splice bytes (internal/jsonedit): every other
// byte of a file stays as it was, install twice changes nothing the second
// time, and uninstall removes exactly what install added. A file that does
// not parse is refused, never overwritten. Writes are atomic and keep the
// file's mode; a timestamped backup of each changed file goes to
// ~/.claudemesh/backups/ first. What install created (a file, an object it
// had to add) is recorded in ~/.claudemesh/install.json so uninstall removes
// it only if it is empty again.

// claudeHome is the directory holding .claude.json and .claude/ (the user's
// home; CLAUDEMESH_CLAUDE_HOME overrides it, for tests).
func claudeHome() (string, error) {
	if h := os.Getenv("CLAUDEMESH_CLAUDE_HOME"); h != "" {
		return h, nil
	}
	return os.UserHomeDir()
}

// selfPath is the absolute path of the running binary, symlinks resolved.
func selfPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	return filepath.Abs(exe)
}

// installState is ~/.claudemesh/install.json.
type installState struct {
	// Created lists "file" or "file#path" entries install created.
	Created []string `json:"created"`
	// Replaced holds, per "file#path", the JSON an entry of ours had
	// before install updated it (a claudemesh entry the user or an older
	// install wrote): uninstall puts it back instead of deleting it.
	// Kept as strings: MarshalIndent would re-indent raw JSON.
	Replaced map[string]string `json:"replaced,omitempty"`
	// Wrote holds, per entry, what this home's install last wrote there:
	// a hook's command line (hookKey), the MCP entry's command (mcpKey).
	// A hook is known as this home's by it whatever the binary is called
	// (a name without "claudemesh", or a binary since deleted).
	// install.json files from before it have none.
	Wrote map[string]string `json:"wrote,omitempty"`

	// legacyMCP is, for an install.json from before Wrote (loadState),
	// the command of the MCP entry in ~/.claude.json when this home's
	// install wrote that entry and it runs for this home: the same
	// install wrote the hooks with the same binary, so a hook line
	// running it is this home's (the default home's lines carry no
	// --home to tell them by; parseHook).
	legacyMCP string
}

// wrote records what install wrote into an entry.
func (st *installState) wrote(key, v string) {
	if st.Wrote == nil {
		st.Wrote = map[string]string{}
	}
	st.Wrote[key] = v
}

// remember records the value an entry had before install first changed
// it (a later install keeps the first value; an entry install added itself
// has nothing to restore).
func (st *installState) remember(key string, old []byte) {
	if st.has(key) {
		return
	}
	if st.Replaced == nil {
		st.Replaced = map[string]string{}
	}
	if _, ok := st.Replaced[key]; !ok {
		st.Replaced[key] = string(old)
	}
}

// previous returns (and forgets) what an entry was before install.
func (st *installState) previous(key string) ([]byte, bool) {
	v, ok := st.Replaced[key]
	if ok {
		delete(st.Replaced, key)
	}
	return []byte(v), ok
}

func statePath(home string) string { return filepath.Join(home, "install.json") }

func loadState(home string) installState {
	var st installState
	if data, err := os.ReadFile(statePath(home)); err == nil {
		json.Unmarshal(data, &st)
	}
	if st.Wrote == nil && recorded(st, mcpKey, mcpKey) {
		st.legacyMCP = installedMCPCommand(home)
	}
	return st
}

// installedMCPCommand is the command of the MCP entry in ~/.claude.json
// when it runs for home ("" otherwise).
func installedMCPCommand(home string) string {
	chome, err := claudeHome()
	if err != nil {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(chome, ".claude.json"))
	if err != nil || jsonedit.Check(data) != nil {
		return ""
	}
	srv, ok, err := jsonedit.Find(data, jsonedit.Root(data), "mcpServers")
	if err != nil || !ok || data[srv.Value.Start] != '{' {
		return ""
	}
	m, ok, err := jsonedit.Find(data, srv.Value, "claudemesh")
	if err != nil || !ok {
		return ""
	}
	entry := data[m.Value.Start:m.Value.End]
	var e struct {
		Command string `json:"command"`
	}
	if json.Unmarshal(entry, &e) != nil {
		return ""
	}
	if p, _ := mcpEntryHome(entry); !samePin(p, pinFor(home)) {
		return ""
	}
	return e.Command
}

// claudeDirKey records in installState that install created ~/.claude
// (it was not there): uninstall removes it when it is empty again, never
// one the user had.
const claudeDirKey = ".claude/"

// noteClaudeDir records that install is about to create ~/.claude, when
// it is not there.
func noteClaudeDir(chome string, st *installState) {
	if _, err := os.Stat(filepath.Join(chome, ".claude")); errors.Is(err, fs.ErrNotExist) {
		st.add(claudeDirKey)
	}
}

// removeClaudeDir removes ~/.claude after uninstall when install created
// it and it is still a real directory, empty now (os.Remove refuses a
// directory that is not). Anything else there now is the user's: a
// symlink to a dotfiles copy (os.Remove would unlink it whatever its
// target holds), a file. It stays, and the record goes.
func removeClaudeDir(home, chome string) error {
	st := loadState(home)
	if !st.has(claudeDirKey) {
		return nil
	}
	p := filepath.Join(chome, ".claude")
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil // not empty: something else is in it now
		}
	}
	st.drop(claudeDirKey)
	return saveState(home, st)
}

func (st *installState) add(s string) {
	if !slices.Contains(st.Created, s) {
		st.Created = append(st.Created, s)
	}
}

func (st *installState) has(s string) bool { return slices.Contains(st.Created, s) }

func (st *installState) drop(s string) {
	st.Created = slices.DeleteFunc(st.Created, func(x string) bool { return x == s })
}

func saveState(home string, st installState) error {
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return err
	}
	if len(st.Created) == 0 && len(st.Replaced) == 0 && len(st.Wrote) == 0 {
		err := os.Remove(statePath(home))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	return fsutil.WriteFileAtomic(statePath(home), append(data, '\n'), 0o600)
}

// jsonFile is one JSON file being edited.
type jsonFile struct {
	path    string // the real path (symlinks resolved)
	name    string // how install.json names it
	data    []byte
	orig    []byte
	mode    fs.FileMode
	existed bool
}

func openJSON(path, name string) (*jsonFile, error) {
	f := &jsonFile{path: path, name: name, mode: 0o600}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		f.path = real
	}
	data, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.data = []byte("{}\n")
	case err != nil:
		return nil, err
	default:
		fi, err := os.Stat(f.path)
		if err != nil {
			return nil, err
		}
		f.mode, f.existed, f.data = fi.Mode().Perm(), true, data
		if err := jsonedit.Check(data); err != nil {
			// The JSON package's name ("jsontext: ") and its "after offset
			// N" are not the user's words.
			why := strings.Replace(strings.ReplaceAll(err.Error(), "jsontext: ", ""), " after offset ", " at byte ", 1)
			return nil, cliui.Errorf("unparsable_file", "%s is not valid JSON (%s); it was left as it is", path, why).
				WithHint("fix or move the file, then run the command again")
		}
	}
	f.orig = bytes.Clone(f.data)
	return f, nil
}

func (f *jsonFile) changed() bool { return !bytes.Equal(f.data, f.orig) }

// save writes the file atomically with its mode, after a backup of the
// old content; a file install created and that is empty again is removed.
func (f *jsonFile) save(home string, st *installState) error {
	if !f.changed() {
		return nil
	}
	if f.existed {
		if err := backup(home, f.path, f.orig); err != nil {
			return err
		}
	}
	if st.has(f.name) && isEmptyObject(f.data) {
		st.drop(f.name)
		return os.Remove(f.path)
	}
	if !f.existed {
		st.add(f.name)
		if f.name == ".claude/settings.json" {
			noteClaudeDir(filepath.Dir(filepath.Dir(f.path)), st)
		}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return err
		}
	}
	if err := fsutil.WriteFileAtomic(f.path, f.data, f.mode); err != nil {
		return err
	}
	if afterSave != nil {
		afterSave(f.path)
	}
	return nil
}

// afterSave, when set (tests), is called after install or uninstall wrote
// one of Claude Code's files.
var afterSave func(path string)

func isEmptyObject(data []byte) bool {
	var v map[string]any
	return json.Unmarshal(data, &v) == nil && len(v) == 0
}

func backup(home, path string, data []byte) error {
	dir := filepath.Join(home, "backups")
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return err
	}
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return err
	}
	name := fmt.Sprintf("%s.%s", strings.TrimPrefix(filepath.Base(path), "."), time.Now().UTC().Format("20060102T150405.000000000Z"))
	return fsutil.WriteFileAtomic(filepath.Join(dir, name), data, 0o600)
}

// ensureObject returns the span of member name of the object at parent,
// adding `"name": {}` (recorded as created) when it is missing.
func (f *jsonFile) ensureObject(parent jsonedit.Span, name, created string, st *installState, empty string) (jsonedit.Span, error) {
	m, ok, err := jsonedit.Find(f.data, parent, name)
	if err != nil {
		return jsonedit.Span{}, err
	}
	if ok {
		if k := f.data[m.Value.Start]; (empty == "{}" && k != '{') || (empty == "[]" && k != '[') {
			return jsonedit.Span{}, cliui.Errorf("unexpected_file", "%s: %q is not a JSON %s; it was left as it is", f.path, name, map[string]string{"{}": "object", "[]": "array"}[empty])
		}
		return m.Value, nil
	}
	f.data, err = jsonedit.AddMember(f.data, parent, name, []byte(empty))
	if err != nil {
		return jsonedit.Span{}, err
	}
	st.add(created)
	m, _, err = jsonedit.Find(f.data, parent2(f.data, parent), name)
	return m.Value, err
}

// parent2 re-reads a span after an edit inside it: the start is unchanged
// and the value runs to its matching end.
func parent2(data []byte, old jsonedit.Span) jsonedit.Span {
	if old.Start == jsonedit.Root(data).Start {
		return jsonedit.Root(data)
	}
	return spanAt(data, old.Start)
}

// spanAt is the span of the value starting at i.
func spanAt(data []byte, i int) jsonedit.Span {
	depth, inStr, esc := 0, false, false
	for j := i; j < len(data); j++ {
		c := data[j]
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case inStr && c == '"':
			inStr = false
		case inStr:
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return jsonedit.Span{Start: i, End: j + 1}
			}
		}
	}
	return jsonedit.Span{Start: i, End: len(data)}
}

// dropIfCreatedAndEmpty removes member name of the object at parent when
// install created it and it is empty again.
func (f *jsonFile) dropIfCreatedAndEmpty(parent jsonedit.Span, name, created string, st *installState) error {
	if !st.has(created) {
		return nil
	}
	m, ok, err := jsonedit.Find(f.data, parent, name)
	if err != nil || !ok {
		st.drop(created)
		return err
	}
	v := f.data[m.Value.Start:m.Value.End]
	var any_ any
	if json.Unmarshal(v, &any_) != nil {
		return nil
	}
	switch x := any_.(type) {
	case map[string]any:
		if len(x) > 0 {
			return nil
		}
	case []any:
		if len(x) > 0 {
			return nil
		}
	}
	f.data, err = jsonedit.RemoveMember(f.data, parent, m)
	st.drop(created)
	return err
}

// mcpKey names the MCP entry in installState.
const mcpKey = ".claude.json#mcpServers.claudemesh"

// entryMembers are the members of mcpServers.claudemesh that install owns.
func entryMembers(bin, home string) [][2]string {
	cmd, _ := json.Marshal(bin)
	args, _ := json.Marshal(mcpArgs(home))
	return [][2]string{{"command", string(cmd)}, {"args", string(bytes.ReplaceAll(args, []byte(`","`), []byte(`", "`)))}}
}

// setMembers gives the object at obj the members want (name, JSON value),
// replacing a value that differs and adding a missing member, and leaves
// every other member as it is. It reports whether anything changed.
func setMembers(data []byte, obj jsonedit.Span, want [][2]string) ([]byte, bool, error) {
	changed := false
	for _, w := range want {
		m, ok, err := jsonedit.Find(data, obj, w[0])
		if err != nil {
			return nil, false, err
		}
		switch {
		case !ok:
			if data, err = jsonedit.AddMember(data, obj, w[0], []byte(w[1])); err != nil {
				return nil, false, err
			}
		case !sameJSON(data[m.Value.Start:m.Value.End], []byte(w[1])):
			data = jsonedit.Replace(data, m.Value, []byte(w[1]))
		default:
			continue
		}
		changed = true
		obj = spanAt(data, obj.Start)
	}
	return data, changed, nil
}

// mcpEntry is mcpServers.claudemesh.
func mcpEntry(bin, home string) []byte {
	b, _ := json.Marshal(map[string]any{"command": bin, "args": mcpArgs(home)})
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte(`":`), []byte(`": `)), []byte(`,"`), []byte(`, "`))
}

// hookEvents maps Claude Code hook events to the hook verb's argument.
var hookEvents = []struct{ event, arg string }{{"UserPromptSubmit", "working"}, {"Stop", "idle"}}

// hookCommandLine is the hook command install writes for home.
func hookCommandLine(bin, home, arg string) string {
	line := shellQuote(bin)
	for _, a := range config.HomeArgs(home) {
		line += " " + shellQuote(a)
	}
	return line + " hook " + arg
}

func shellQuote(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func hookEntry(bin, home, arg string) []byte {
	b, _ := json.Marshal(map[string]any{"hooks": []any{map[string]any{"type": "command", "command": hookCommandLine(bin, home, arg)}}})
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte(`":`), []byte(`": `)), []byte(`,"`), []byte(`, "`))
}

// isOurHook reports whether an element of a hook event's array is the one
// install adds for home: a single command running this binary (bin), any
// `<…claudemesh…>`, or the binary install.json records (parseHook), with `[--home DIR] hook ARG` for this home. (Matching
// only on "claudemesh" in the path took a binary installed under another
// name for a stranger: every install added its hooks again and uninstall
// left them. Matching without the home took another home's hooks for this
// one's.) A claudemesh hook for another home is ours too when this home's
// install.json records the event's hook (an older install wrote it without
// the home), and, for install (claim), when the other home's install.json
// does not (the user's own line, taken over and given back by uninstall).
func isOurHook(elem []byte, event, arg, bin, home string, st installState, created string, claim bool) bool {
	pin, a, ok := parseHook(elem, bin, event, home, st)
	switch {
	case !ok || a != arg:
		return false
	case samePin(pin, pinFor(home)) || recorded(st, created+"[claudemesh]", created):
		return true
	}
	return claim && !claimedBy(pin, created+"[claudemesh]", created)
}

// anotherHomes is install's refusal: Claude Code's settings hold one
// home's entries, and pin's install wrote these.
func anotherHomes(what, path, pin, home string) error {
	hint := fmt.Sprintf("Claude Code's settings hold one claudemesh home's entries: run %s first", uninstallFor(pin))
	if homeOfPin(pin) == "" {
		// $HOME is not set: whether the default home's install wrote
		// them cannot be read.
		hint = "$HOME is not set, so whether the default home's install wrote them cannot be checked (its install.json is under $HOME): set HOME and run install again"
	}
	if pin == "" {
		// The default home's entries follow the CLAUDEMESH_HOME launch sets.
		hint += fmt.Sprintf(", or keep them and start this home's sessions with %s launch", config.InvocationWithHome(home))
	}
	return cliui.Errorf(codeAnotherHome, "%s in %s runs claudemesh for %s, not for %s; it was left as it is", what, path, describePin(pin), home).WithHint(hint)
}

// codeAnotherHome is the error code of that refusal.
const codeAnotherHome = "installed_for_another_home"

type step struct {
	What   string `json:"what"`
	Path   string `json:"path,omitempty"`
	Result string `json:"result"` // added | updated | unchanged | removed | restored | absent | installed and started | not started: … | skipped: …
	// Warn marks a step that did not do what it is for (shown with ⚠).
	Warn bool `json:"warning,omitempty"`
}

// installFiles adds (remove=false) or removes home's MCP entry and hooks.
func installFiles(home, chome, bin string, hooks, remove bool) ([]step, error) {
	st := loadState(home)
	pin := pinFor(home)
	var steps []step
	cj, err := openJSON(filepath.Join(chome, ".claude.json"), ".claude.json")
	if err != nil {
		return nil, err
	}
	var sj *jsonFile
	if hooks || remove {
		if sj, err = openJSON(filepath.Join(chome, ".claude", "settings.json"), ".claude/settings.json"); err != nil {
			return nil, err
		}
	}
	if !remove {
		// Another home's entries are refused before anything is written.
		if err := checkAnotherHome(cj, sj, bin, home, st); err != nil {
			return nil, err
		}
	}
	// ~/.claude.json: mcpServers.claudemesh
	res := "unchanged"
	if remove {
		res = "absent"
		if srv, ok, err := jsonedit.Find(cj.data, jsonedit.Root(cj.data), "mcpServers"); err == nil && ok && cj.data[srv.Value.Start] == '{' {
			if m, ok, _ := jsonedit.Find(cj.data, srv.Value, "claudemesh"); ok {
				if p, _ := mcpEntryHome(cj.data[m.Value.Start:m.Value.End]); !samePin(p, pin) && !recorded(st, mcpKey, mcpKey) {
					// Another home's: not what this home's install wrote.
					res = "skipped: it runs claudemesh for " + describePin(p) + ", not for this home"
				} else {
					st.drop(mcpKey)
					delete(st.Wrote, mcpKey)
					if old, ok := st.previous(mcpKey); ok {
						cj.data, res = jsonedit.Replace(cj.data, m.Value, old), "restored"
					} else {
						if cj.data, err = jsonedit.RemoveMember(cj.data, srv.Value, m); err != nil {
							return nil, err
						}
						res = "removed"
					}
				}
			}
			if err := cj.dropIfCreatedAndEmpty(jsonedit.Root(cj.data), "mcpServers", ".claude.json#mcpServers", &st); err != nil {
				return nil, err
			}
		}
	} else {
		srv, err := cj.ensureObject(jsonedit.Root(cj.data), "mcpServers", ".claude.json#mcpServers", &st, "{}")
		if err != nil {
			return nil, err
		}
		want := mcpEntry(bin, home)
		m, ok, err := jsonedit.Find(cj.data, srv, "claudemesh")
		switch {
		case err != nil:
			return nil, err
		case !ok:
			cj.data, err = jsonedit.AddMember(cj.data, srv, "claudemesh", want)
			res = "added"
			st.add(mcpKey)
		case cj.data[m.Value.Start] == '{':
			// An entry that is there already (an older install's, or the
			// user's own): only command and args are ours to set; env and
			// anything else the user put there stay.
			old := bytes.Clone(cj.data[m.Value.Start:m.Value.End])
			var changed bool
			if cj.data, changed, err = setMembers(cj.data, m.Value, entryMembers(bin, home)); err == nil && changed {
				st.remember(mcpKey, old)
				res = "updated"
			}
		case !sameJSON(cj.data[m.Value.Start:m.Value.End], want):
			st.remember(mcpKey, cj.data[m.Value.Start:m.Value.End])
			cj.data, res = jsonedit.Replace(cj.data, m.Value, want), "updated"
		}
		if err != nil {
			return nil, err
		}
		st.wrote(mcpKey, bin)
	}
	steps = append(steps, step{What: "MCP server entry (mcpServers.claudemesh)", Path: cj.path, Result: res})
	if err := cj.save(home, &st); err != nil {
		return nil, err
	}

	// ~/.claude/settings.json: hooks.UserPromptSubmit and hooks.Stop
	if sj != nil {
		for _, h := range hookEvents {
			res := "unchanged"
			created := hookKey(h.event)
			hk, ok, err := jsonedit.Find(sj.data, jsonedit.Root(sj.data), "hooks")
			if err != nil {
				return nil, err
			}
			if remove {
				res = "absent"
				if ok && sj.data[hk.Value.Start] == '{' {
					if arr, ok, _ := jsonedit.Find(sj.data, hk.Value, h.event); ok && sj.data[arr.Value.Start] == '[' {
						es, _ := jsonedit.Elements(sj.data, arr.Value)
						mine := make([]bool, len(es))
						for i, e := range es {
							mine[i] = isOurHook(sj.data[e.Start:e.End], h.event, h.arg, bin, home, st, created, false)
							if p, a, ok := parseHook(sj.data[e.Start:e.End], bin, h.event, home, st); ok && a == h.arg && !mine[i] {
								res = "skipped: it runs claudemesh for " + describePin(p) + ", not for this home"
							}
						}
						st.drop(created + "[claudemesh]")
						delete(st.Wrote, created)
						old, hadOld := st.previous(created)
						for i := len(es) - 1; i >= 0; i-- {
							if mine[i] {
								if hadOld {
									sj.data, res, hadOld = jsonedit.Replace(sj.data, es[i], old), "restored", false
								} else if sj.data, err = jsonedit.RemoveElement(sj.data, arr.Value, i); err != nil {
									return nil, err
								} else {
									res = "removed"
								}
								arr.Value = spanAt(sj.data, arr.Value.Start)
							}
						}
					}
					hk.Value = spanAt(sj.data, hk.Value.Start)
					if err := sj.dropIfCreatedAndEmpty(hk.Value, h.event, created, &st); err != nil {
						return nil, err
					}
				}
			} else {
				hooksSpan, err := sj.ensureObject(jsonedit.Root(sj.data), "hooks", ".claude/settings.json#hooks", &st, "{}")
				if err != nil {
					return nil, err
				}
				arr, err := sj.ensureObject(hooksSpan, h.event, created, &st, "[]")
				if err != nil {
					return nil, err
				}
				es, err := jsonedit.Elements(sj.data, arr)
				if err != nil {
					return nil, err
				}
				want := hookEntry(bin, home, h.arg)
				var ours []int
				for i, e := range es {
					if isOurHook(sj.data[e.Start:e.End], h.event, h.arg, bin, home, st, created, true) {
						ours = append(ours, i)
					}
				}
				if len(ours) == 0 {
					if sj.data, err = jsonedit.AppendElement(sj.data, arr, want); err != nil {
						return nil, err
					}
					res = "added"
					st.add(created + "[claudemesh]")
				} else {
					// One is kept (updated); more that this home's install
					// wrote are a pair an older install added beside a
					// line it did not know as its own: removed, from the
					// last (the spans before stay where they are).
					for j := len(ours) - 1; j > 0; j-- {
						if e := es[ours[j]]; !isOurHook(sj.data[e.Start:e.End], h.event, h.arg, bin, home, st, created, false) {
							continue // a line of the user's, taken over only once
						}
						if sj.data, err = jsonedit.RemoveElement(sj.data, arr, ours[j]); err != nil {
							return nil, err
						}
						arr, res = spanAt(sj.data, arr.Start), "updated"
					}
					if e := es[ours[0]]; !sameJSON(sj.data[e.Start:e.End], want) {
						if !st.has(created + "[claudemesh]") {
							st.remember(created, sj.data[e.Start:e.End])
						}
						sj.data, res = jsonedit.Replace(sj.data, e, want), "updated"
					}
				}
				st.wrote(created, hookCommandLine(bin, home, h.arg))
			}
			steps = append(steps, step{What: h.event + " hook (claudemesh hook " + h.arg + ")", Path: sj.path, Result: res})
		}
		if remove {
			if err := sj.dropIfCreatedAndEmpty(jsonedit.Root(sj.data), "hooks", ".claude/settings.json#hooks", &st); err != nil {
				return nil, err
			}
		}
		if err := sj.save(home, &st); err != nil {
			return nil, err
		}
	}
	return steps, saveState(home, st)
}

// checkAnotherHome refuses an install into settings whose claudemesh
// entries another home's install wrote (see homes.go).
func checkAnotherHome(cj, sj *jsonFile, bin, home string, st installState) error {
	pin := pinFor(home)
	if srv, ok, err := jsonedit.Find(cj.data, jsonedit.Root(cj.data), "mcpServers"); err == nil && ok && cj.data[srv.Value.Start] == '{' {
		if m, ok, _ := jsonedit.Find(cj.data, srv.Value, "claudemesh"); ok && cj.data[m.Value.Start] == '{' {
			if p, _ := mcpEntryHome(cj.data[m.Value.Start:m.Value.End]); !samePin(p, pin) && !recorded(st, mcpKey, mcpKey) && claimedBy(p, mcpKey, mcpKey) {
				return anotherHomes("mcpServers.claudemesh", cj.path, p, home)
			}
		}
	}
	if sj == nil {
		return nil
	}
	hk, ok, err := jsonedit.Find(sj.data, jsonedit.Root(sj.data), "hooks")
	if err != nil || !ok || sj.data[hk.Value.Start] != '{' {
		return nil
	}
	for _, h := range hookEvents {
		created := hookKey(h.event)
		arr, ok, _ := jsonedit.Find(sj.data, hk.Value, h.event)
		if !ok || sj.data[arr.Value.Start] != '[' {
			continue
		}
		es, _ := jsonedit.Elements(sj.data, arr.Value)
		for _, e := range es {
			el := sj.data[e.Start:e.End]
			if p, a, ok := parseHook(el, bin, h.event, home, st); ok && a == h.arg && !isOurHook(el, h.event, h.arg, bin, home, st, created, true) {
				return anotherHomes(h.event+" hook", sj.path, p, home)
			}
		}
	}
	return nil
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// skillPath is where Claude Code finds the skill.
func skillPath(chome string) string {
	return filepath.Join(chome, ".claude", "skills", "claudemesh", "SKILL.md")
}

func installSkill(home, chome string, remove bool) (step, error) {
	p := skillPath(chome)
	skills := filepath.Dir(filepath.Dir(p))
	cur, err := os.ReadFile(p)
	ours := err == nil && isOurSkill(cur)
	if remove {
		if !ours {
			return step{What: "skill", Path: p, Result: "absent"}, nil
		}
		if err := os.Remove(p); err != nil {
			return step{}, err
		}
		os.Remove(filepath.Dir(p)) // only if empty
		// ~/.claude/skills too, when install created it and it is empty.
		if st := loadState(home); st.has(".claude/skills") {
			if err := os.Remove(skills); err == nil || errors.Is(err, fs.ErrNotExist) {
				st.drop(".claude/skills")
				if err := saveState(home, st); err != nil {
					return step{}, err
				}
			}
		}
		return step{What: "skill", Path: p, Result: "removed"}, nil
	}
	if err == nil && !ours {
		return step{What: "skill", Path: p, Result: "skipped (a SKILL.md that is not claudemesh's is there)"}, nil
	}
	if ours && bytes.Equal(cur, SkillMD) {
		return step{What: "skill", Path: p, Result: "unchanged"}, nil
	}
	if _, err := os.Stat(skills); errors.Is(err, fs.ErrNotExist) {
		st := loadState(home)
		st.add(".claude/skills")
		noteClaudeDir(chome, &st)
		if err := saveState(home, st); err != nil {
			return step{}, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return step{}, err
	}
	if err := fsutil.WriteFileAtomic(p, SkillMD, 0o644); err != nil {
		return step{}, err
	}
	if ours {
		return step{What: "skill", Path: p, Result: "updated"}, nil
	}
	return step{What: "skill", Path: p, Result: "added"}, nil
}

func isOurSkill(data []byte) bool { return bytes.Contains(data, []byte("\nname: claudemesh\n")) }

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "set up Claude Code: the MCP server, the status hooks, the skill and the daemon service",
		Description: cliui.WithExamples(
			"Adds mcpServers.claudemesh to ~/.claude.json, the UserPromptSubmit and Stop hooks to\n"+
				"~/.claude/settings.json, the skill to ~/.claude/skills/claudemesh/SKILL.md, and installs and starts\n"+
				"the daemon as a user service. It writes the absolute path of this binary, touches only its own\n"+
				"entries, backs each changed file up to ~/.claudemesh/backups/ first, and changes nothing when run\n"+
				"again. A file that is not valid JSON is refused, not overwritten. For a home other than\n"+
				"~/.claudemesh (--home or CLAUDEMESH_HOME) the MCP server and the hooks run with --home DIR.\n"+
				"Claude Code's settings hold one home's entries: install over another home's is refused\n"+
				"(exit 6) until that home's uninstall. Then run plain claude, or claudemesh launch.",
			"claudemesh install",
			"claudemesh install --no-service --json",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-service", Usage: "do not install the daemon service"},
			&cli.BoolFlag{Name: "no-hooks", Usage: "do not add the status hooks"},
			&cli.BoolFlag{Name: "no-skill", Usage: "do not install the skill"},
		},
		Action: func(c *cli.Context) error { return runInstall(c, false) },
	}
}

func uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "remove exactly what install added (MCP entry, hooks, skill, service)",
		Description: cliui.WithExamples("Leaves every other entry, and files install did not create, as they were.",
			"claudemesh uninstall"),
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "no-service", Usage: "leave the daemon service"}},
		Action: func(c *cli.Context) error { return runInstall(c, true) },
	}
}

type installJSON struct {
	Binary string `json:"binary"`
	Steps  []step `json:"steps"`
}

// upAdvice is how the daemon starts where the service did not, for this
// home as it is now: a daemon running already keeps running until
// logout or a restart; a home that joined a mesh can start one now;
// `daemon up` refuses a home that joined none (install runs before join).
func upAdvice(home string) string {
	cm := config.Invocation(home)
	if _, v, err := localapi.Probe(context.Background(), home); err == nil && v.PID > 0 {
		return fmt.Sprintf("the daemon is running now (pid %d), but nothing starts it at login: after one, run %s daemon up (or any verb that needs it starts it)", v.PID, cm)
	}
	if cfg, err := config.Load(home); err == nil && len(cfg.Meshes) > 0 {
		return "run " + cm + " daemon up now (any verb that needs the daemon starts it too); nothing starts it at login"
	}
	return "run " + cm + " daemon up once a mesh is joined (or any verb after " + cm + " join starts it)"
}

// serviceStep runs `claudemesh daemon install-service|uninstall-service
// --json` and says what really happened: a unit written but not started
// (no systemd user session, say) is a warning, not "done".
func serviceStep(bin, home, verb string) step {
	st := step{What: "daemon service (claudemesh daemon " + verb + ")"}
	outb, err := exec.Command(bin, "--home", home, "daemon", verb, "--json").Output()
	var res struct {
		Path    string `json:"path"`
		Started bool   `json:"started"`
		Removed bool   `json:"removed"`
		Reason  string `json:"startError"`
		Error   struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	jerr := json.Unmarshal(outb, &res)
	if jerr == nil && res.Error.Code == "service_not_started" {
		// Written, but the service manager did not start it (exit 1):
		// a warning of this step, not a skipped one.
		st.Result, st.Warn = "not started: "+res.Error.Message+": "+upAdvice(home), true
		return st
	}
	if err != nil || jerr != nil {
		msg := res.Error.Message
		if msg == "" && err != nil {
			msg = err.Error()
		}
		st.Result, st.Warn = "skipped: "+msg, true
		return st
	}
	st.Path = res.Path
	switch {
	case verb == "uninstall-service" && res.Removed:
		st.Result = "removed"
	case verb == "uninstall-service":
		st.Result = "absent"
	case res.Started:
		st.Result = "installed and started"
	default:
		st.Result, st.Warn = "written, but not started ("+res.Reason+"): "+upAdvice(home), true
	}
	return st
}

func runInstall(c *cli.Context, remove bool) error {
	if err := cliui.NoArgs(c); err != nil {
		return err
	}
	out := cliui.OutFrom(c)
	home, err := config.ResolveHome(cliui.GlobalsFrom(c).Home)
	if err != nil {
		return err
	}
	chome, err := claudeHome()
	if err != nil {
		return err
	}
	bin, err := selfPath()
	if err != nil {
		return err
	}
	steps, err := installFiles(home, chome, bin, !c.Bool("no-hooks"), remove)
	if err != nil {
		return err
	}
	anotherHome := false
	for _, s := range steps {
		anotherHome = anotherHome || strings.HasPrefix(s.Result, "skipped")
	}
	if remove && anotherHome {
		// The skill serves the home whose entries are there.
		steps = append(steps, step{What: "skill", Path: skillPath(chome), Result: "skipped: another home's install uses it"})
	} else if remove || !c.Bool("no-skill") {
		s, err := installSkill(home, chome, remove)
		if err != nil {
			return err
		}
		steps = append(steps, s)
	}
	if remove {
		if err := removeClaudeDir(home, chome); err != nil {
			return err
		}
	}
	if !c.Bool("no-service") {
		verb := "install-service"
		if remove {
			verb = "uninstall-service"
		}
		steps = append(steps, serviceStep(bin, home, verb))
	}
	if out.JSONMode() {
		return out.JSON(installJSON{Binary: bin, Steps: steps})
	}
	s := out.Style()
	for _, st := range steps {
		mark := s.Green("✔")
		if st.Warn || strings.HasPrefix(st.Result, "skipped") {
			mark = s.Yellow("⚠")
		}
		line := fmt.Sprintf("%s %s: %s", mark, st.What, st.Result)
		if st.Path != "" {
			line += "  " + s.Dim(st.Path)
		}
		out.Resultf("%s", line)
	}
	if !remove {
		if _, err := exec.LookPath("claude"); err != nil {
			// What install wrote is read by Claude Code alone.
			out.Warn("claude (Claude Code) is not on PATH: the entries above take effect once it is installed and run", "")
		}
		out.Linef("%s", s.Dim("→ now run claude (ambient) or "+config.Invocation(home)+" launch --name NAME"))
	}
	return nil
}
