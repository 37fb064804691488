// Package config owns the client's home directory and its config.json: the
// meshes this machine has joined and the identity used in each. Every writer
// goes through Update, which serialises read-modify-write cycles across
// processes with a file lock, so two concurrent `claudemesh join` runs never
// lose a mesh, and writes atomically so a crash never leaves a torn file.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/sys/unix"

	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/fsutil"
	"claudemesh/wire"
)

const (
	// FileName is the config file inside the home directory.
	FileName = "config.json"
	// LockName is the lock file that serialises Update across processes.
	// It is separate from config.json because config.json is replaced by
	// rename, and a lock on a replaced inode would protect nothing.
	LockName = "config.lock"
	// CurrentVersion is the only config.json schema version this build
	// reads and writes.
	CurrentVersion = 1
	// HomeEnv overrides the default home directory.
	HomeEnv = "CLAUDEMESH_HOME"
	// DefaultHomeDir is the home directory's name under the user's home.
	DefaultHomeDir = ".claudemesh"
)

// Mesh is one joined mesh and this machine's identity in it. SecretKey is the
// ed25519 seed followed by the public key, hex; it is why the file is 0600.
type Mesh struct {
	MeshID    string `json:"meshId"`
	MemberID  string `json:"memberId"`
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	Pubkey    string `json:"pubkey"`
	SecretKey string `json:"secretKey"`
	BrokerURL string `json:"brokerUrl"`
	// BrokerURLs, when present, lists every public URL of the mesh's
	// (clustered) broker, BrokerURL first; clients fail over between
	// them. Absent in configs written before clusters (and for a single
	// broker): BrokerURL alone is used.
	BrokerURLs   []string `json:"brokerUrls,omitempty"`
	BrokerPubkey string   `json:"brokerPubkey"`
	Role         string   `json:"role"`
	DisplayName  string   `json:"displayName"`
	// JoinedAt is RFC 3339 (UTC), kept as text so the file round-trips
	// byte-for-byte.
	JoinedAt string `json:"joinedAt"`
}

// Config is the content of config.json.
type Config struct {
	Version int    `json:"version"`
	Meshes  []Mesh `json:"meshes"`
}

// ResolveHome returns the client state directory: the --home flag value if
// given, else $CLAUDEMESH_HOME, else ~/.claudemesh. The result is absolute
// (the daemon and children may run from another working directory) and a
// leading "~/" is expanded because `--home=~/x` reaches us unexpanded.
// Invocation is how a hint tells the user to run claudemesh against home
// (a resolved home): "claudemesh", or "claudemesh --home DIR" when home is
// not the one claudemesh uses without --home, so that a suggested
// `daemon down` never stops another identity's daemon.
func Invocation(home string) string {
	if def, err := ResolveHome(""); err == nil && def == home {
		return "claudemesh"
	}
	return "claudemesh --home " + shellQuote(home)
}

// DefaultHome is the home claudemesh uses when neither --home nor
// $CLAUDEMESH_HOME names one: ~/.claudemesh.
func DefaultHome() (string, error) {
	userHome, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot find the home directory (set --home or %s): %w", HomeEnv, err)
	}
	return filepath.Join(userHome, DefaultHomeDir), nil
}

// HomeArgs are the arguments that make a claudemesh command line written
// into another program's configuration (Claude Code's MCP server entry
// and hooks) reach home (a resolved home) whatever that program's
// environment: none for the default home (such a line follows the
// $CLAUDEMESH_HOME it runs with, which is how `claudemesh launch` hands
// its claude the home), else --home DIR. Unlike Invocation, it ignores the
// $CLAUDEMESH_HOME of this process: Claude Code does not run with it.
func HomeArgs(home string) []string {
	if def, err := DefaultHome(); err == nil && def == home {
		return nil
	}
	return []string{"--home", home}
}

// InvocationWithHome is "claudemesh --home DIR" always: for hints a
// daemon builds, whose environment ($CLAUDEMESH_HOME, $HOME) need not be
// the shell's of the user who reads them.
func InvocationWithHome(home string) string { return "claudemesh --home " + shellQuote(home) }

// JoinedNow is a JoinedAt for now: RFC 3339 with milliseconds, so a
// daemon can tell the rows a member sent before joining again (a new key,
// the same mesh) from those after, within the second.
func JoinedNow() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// ShellQuote quotes s for a POSIX shell when it holds anything but plain
// path characters (for commands written into hints).
func ShellQuote(s string) string { return shellQuote(s) }

// shellQuote quotes s for a POSIX shell when it holds anything but plain
// path characters.
func shellQuote(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func ResolveHome(flagValue string) (string, error) {
	home := flagValue
	if home == "" {
		home = os.Getenv(HomeEnv)
	}
	if home == "" {
		userHome, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the home directory (set --home or %s): %w", HomeEnv, err)
		}
		return filepath.Join(userHome, DefaultHomeDir), nil
	}
	if home == "~" || strings.HasPrefix(home, "~/") {
		userHome, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot expand %q: %w", home, err)
		}
		home = filepath.Join(userHome, home[1:])
	}
	return filepath.Abs(home)
}

// Path is config.json's path inside home.
func Path(home string) string { return filepath.Join(home, FileName) }

// Load reads home/config.json. A missing file is an empty config (nothing
// joined yet). A file group or other users can access, or a home they can
// write in, is refused with an *fsutil.InsecurePermError (code
// insecure_permissions) rather than used, because it holds secret keys. Parsing is strict: unknown or duplicate
// members and an unknown version are errors, so a typo never silently
// drops an identity.
func Load(home string) (*Config, error) {
	path := Path(home)
	data, err := fsutil.ReadPrivateFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{Version: CurrentVersion, Meshes: []Mesh{}}, nil
	}
	if err != nil {
		return nil, err
	}
	// A home others can write in is no safer than a config.json they can
	// write: they can put their own in its place.
	if err := fsutil.CheckNotWritableByOthers(home); err != nil {
		return nil, err
	}
	c, ok := decodeFast(data)
	if !ok {
		c = Config{}
		if err := json.Unmarshal(data, &c, json.RejectUnknownMembers(true)); err != nil {
			return nil, &InvalidError{Path: path, Why: jsonProblem(err), Err: err}
		}
	}
	if c.Meshes == nil {
		c.Meshes = []Mesh{}
	}
	if c.Version > CurrentVersion {
		return nil, &InvalidError{Path: path, Why: fmt.Sprintf("it is version %d, and this claudemesh understands %d", c.Version, CurrentVersion),
			Hint: "a newer claudemesh wrote it: run that one (or a newer build) with this home", Err: errors.ErrUnsupported}
	}
	if err := c.Validate(); err != nil {
		return nil, &InvalidError{Path: path, Why: err.Error(), Err: err}
	}
	return &c, nil
}

// InvalidError is a config.json that cannot be used: not JSON, an unknown
// or duplicate member, a version or a mesh this build refuses. Code
// config_invalid (exit 1).
type InvalidError struct {
	Path string
	Why  string // in the user's words, no Go package prefix
	Hint string // when not the default (ErrorHint)
	Err  error
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s cannot be used: %s", e.Path, e.Why)
}

func (e *InvalidError) Unwrap() error { return e.Err }

// ErrorCode is the CLI error code.
func (e *InvalidError) ErrorCode() string { return "config_invalid" }

// ErrorHint says what to do: the file holds the identities' secret keys,
// so it is repaired, not replaced.
func (e *InvalidError) ErrorHint() string {
	if e.Hint != "" {
		return e.Hint
	}
	return "it holds your identities' secret keys: repair it by hand or restore a copy (claudemesh writes it as JSON, mode 0600); " +
		"if it cannot be recovered, move it aside and join each mesh again with a new invite"
}

// jsonProblem is a JSON decoding error without the encoder's package
// prefix ("jsontext: ", "json: ") and Go type names: what is wrong, and
// where.
func jsonProblem(err error) string {
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) && syn.Err != nil {
		return fmt.Sprintf("not valid JSON: %s (at byte %d)", syn.Err, syn.ByteOffset)
	}
	var sem *json.SemanticError
	if errors.As(err, &sem) {
		why := "a value of the wrong type"
		if sem.Err != nil {
			why = sem.Err.Error()
		} else if sem.JSONKind != 0 {
			why = "unexpected JSON " + sem.JSONKind.String()
		}
		if sem.JSONPointer != "" {
			why += " at " + string(sem.JSONPointer)
		}
		return why
	}
	msg := err.Error()
	for _, p := range []string{"jsontext: ", "json: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// Validate checks what the rest of the client relies on: a known version,
// and meshes that can be told apart by meshId and by slug (--mesh selects
// by slug, so a duplicate would make one mesh unreachable).
func (c *Config) Validate() error {
	if c.Version != CurrentVersion {
		return fmt.Errorf("unsupported config version %d (this claudemesh understands %d)", c.Version, CurrentVersion)
	}
	ids := make(map[string]bool, len(c.Meshes))
	slugs := make(map[string]bool, len(c.Meshes))
	for i, m := range c.Meshes {
		switch {
		case m.MeshID == "":
			return fmt.Errorf("mesh #%d has no meshId", i+1)
		case m.Slug == "":
			return fmt.Errorf("mesh %s has no slug", m.MeshID)
		case !cmcrypto.ValidSlug(m.Slug):
			// It names directories (sessions/<slug>/) and is printed.
			return fmt.Errorf("mesh %s has the slug %q, which is not a slug (a-z, 0-9 and '-', 1 to 32)", m.MeshID, m.Slug)
		case ids[m.MeshID]:
			return fmt.Errorf("mesh %s appears twice", m.MeshID)
		case slugs[m.Slug]:
			return fmt.Errorf("two meshes share the slug %q", m.Slug)
		}
		if m.BrokerURLs != nil {
			if err := wire.CheckBrokerURLs(m.BrokerURLs); err != nil {
				return fmt.Errorf("mesh %s: brokerUrls: %w", m.Slug, err)
			}
		}
		ids[m.MeshID] = true
		slugs[m.Slug] = true
	}
	return nil
}

// Update runs a read-modify-write cycle on home/config.json under an
// exclusive lock on home/config.lock, so concurrent updaters (in this or
// other processes) apply one after another and none loses another's change.
// The home directory is created 0700 (or tightened to it) first. If fn
// returns an error nothing is written and the error is returned as is.
func Update(home string, fn func(*Config) error) error {
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return err
	}
	unlock, err := lock(filepath.Join(home, LockName))
	if err != nil {
		return err
	}
	defer unlock()

	c, err := Load(home)
	if err != nil {
		return err
	}
	if err := fn(c); err != nil {
		return err
	}
	if c.Meshes == nil {
		c.Meshes = []Mesh{}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("refusing to write %s: %w", Path(home), err)
	}
	data, err := json.Marshal(c, jsontext.WithIndent("  "))
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(Path(home), append(data, '\n'), 0o600)
}

// lock takes an exclusive flock on path, creating it 0600. flock (unlike
// fcntl locks) conflicts between separate opens in the same process too, so
// goroutines are serialised as well as processes.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// Closing the descriptor releases the lock.
	return func() { _ = f.Close() }, nil
}

// Find returns the mesh with the given slug.
func (c *Config) Find(slug string) (*Mesh, bool) {
	for i := range c.Meshes {
		if c.Meshes[i].Slug == slug {
			return &c.Meshes[i], true
		}
	}
	return nil, false
}

// Upsert stores m, replacing the mesh with the same MeshID (re-joining a
// mesh updates it in place, keeping its position) or appending it.
func (c *Config) Upsert(m Mesh) {
	for i := range c.Meshes {
		if c.Meshes[i].MeshID == m.MeshID {
			c.Meshes[i] = m
			return
		}
	}
	c.Meshes = append(c.Meshes, m)
}

// Remove forgets the mesh with the given slug and reports whether there was
// one.
func (c *Config) Remove(slug string) bool {
	for i := range c.Meshes {
		if c.Meshes[i].Slug == slug {
			c.Meshes = append(c.Meshes[:i], c.Meshes[i+1:]...)
			return true
		}
	}
	return false
}

// Slugs lists the joined meshes' slugs in config order.
func (c *Config) Slugs() []string {
	s := make([]string, len(c.Meshes))
	for i, m := range c.Meshes {
		s[i] = m.Slug
	}
	return s
}

// Choose picks the mesh a write goes to: the named one (slug is --mesh, or
// the calling session's mesh when there is no --mesh), else the only joined
// mesh. It never guesses between several meshes: that is a
// *SelectionError with code mesh_required listing the choices. The result
// points into c.Meshes.
func (c *Config) Choose(slug string) (*Mesh, error) {
	if slug != "" {
		if m, ok := c.Find(slug); ok {
			return m, nil
		}
		return nil, &SelectionError{Code: CodeMeshNotFound, Slug: slug, Choices: c.Slugs()}
	}
	switch len(c.Meshes) {
	case 0:
		return nil, &SelectionError{Code: CodeNotJoined}
	case 1:
		return &c.Meshes[0], nil
	default:
		return nil, &SelectionError{Code: CodeMeshRequired, Choices: c.Slugs()}
	}
}

// Error codes of SelectionError; the CLI maps them to exit codes 3, 2 and 4.
const (
	CodeMeshNotFound = "mesh_not_found"
	CodeMeshRequired = "mesh_required"
	CodeNotJoined    = "not_joined"
)

// SelectionError says why no mesh could be chosen. It carries the joined
// slugs so the CLI can list the choices; the message lists them too because
// --json errors carry no hint.
type SelectionError struct {
	// Code is CodeMeshNotFound, CodeMeshRequired or CodeNotJoined.
	Code string
	// Slug is the slug asked for (CodeMeshNotFound only).
	Slug string
	// Choices are the joined meshes' slugs.
	Choices []string
}

// Error names the problem and, where there are any, the joined meshes.
func (e *SelectionError) Error() string {
	switch e.Code {
	case CodeMeshNotFound:
		if len(e.Choices) == 0 {
			return fmt.Sprintf("mesh %q not found: not joined to any mesh", e.Slug)
		}
		return fmt.Sprintf("mesh %q not found; joined meshes: %s", e.Slug, strings.Join(e.Choices, ", "))
	case CodeMeshRequired:
		return "several meshes joined; choose one with --mesh: " + strings.Join(e.Choices, ", ")
	default:
		return "not joined to any mesh"
	}
}

// ErrorCode is the CLI error code.
func (e *SelectionError) ErrorCode() string { return e.Code }

// ErrorHint says what to run next.
func (e *SelectionError) ErrorHint() string {
	switch {
	case e.Code == CodeMeshRequired && len(e.Choices) > 0:
		return "rerun with --mesh SLUG, for example --mesh " + e.Choices[0]
	case e.Code == CodeMeshNotFound && len(e.Choices) > 0:
		return "run claudemesh mesh list to see the joined meshes"
	default:
		return "join a mesh with claudemesh join <invite link>"
	}
}

// URLs is every URL the mesh's broker is reached at, BrokerURL first, each
// once.
func (m *Mesh) URLs() []string {
	urls, err := wire.BrokerURLList(m.BrokerURL, m.BrokerURLs)
	if err != nil { // Validate refused such a file; keep the one URL
		return []string{m.BrokerURL}
	}
	return urls
}

// BrokerURLsFrom is what a mesh record stores as brokerUrls for a broker
// that announced urls (a response's or hello_ack's brokerUrls): nil when
// it announced none or only primary (a single broker: the record stays as
// it always was), else primary followed by the others. A list that fails
// wire.BrokerURLList is an error.
func BrokerURLsFrom(primary string, urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, nil
	}
	if err := wire.CheckBrokerURL(primary); err != nil {
		return nil, err
	}
	list, err := wire.BrokerURLList(primary, urls)
	if err != nil || len(list) < 2 {
		return nil, err
	}
	return list, nil
}

// RecordBrokerURLs stores urls (see BrokerURLsFrom) as the brokerUrls of
// the mesh meshID, when they differ from what is stored: a running client
// learns a cluster's new URLs from hello_ack.
func RecordBrokerURLs(home, meshID string, urls []string) error {
	c, err := Load(home)
	if err != nil {
		return err
	}
	changed := false
	for _, m := range c.Meshes {
		if m.MeshID == meshID && !slices.Equal(m.BrokerURLs, urls) {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return Update(home, func(c *Config) error {
		for i := range c.Meshes {
			if c.Meshes[i].MeshID == meshID {
				c.Meshes[i].BrokerURLs = urls
			}
		}
		return nil
	})
}

// RecordRole sets the role of the mesh meshID to role, as the broker
// stated it (hello_ack, or a member_changed event about this member): the
// role written at join goes stale when an owner changes it or hands the
// mesh over, and `mesh list` and `whoami` print it. It writes only when
// the role differs.
func RecordRole(home, meshID, role string) error {
	if role == "" {
		return nil
	}
	return Update(home, func(c *Config) error {
		for i := range c.Meshes {
			if c.Meshes[i].MeshID == meshID {
				c.Meshes[i].Role = role
			}
		}
		return nil
	})
}
