package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/fsutil"
	"claudemesh/internal/proc"
	"claudemesh/wire"
)

// Sessions: one presence per registered agent session (03-daemon
// "Sessions"). A session is registered by `claudemesh launch` or, in ambient
// mode, by `claudemesh mcp` itself; it is identified on the local API by a
// 64-hex token that only its registrant holds (the daemon keeps its hash),
// and on the mesh by its own key, kept per (mesh, session id) in
// sessions/<slug>/<sessionId>.json so a resumed session keeps its key and
// what is queued for it. The reaper deregisters a session whose process is
// gone; registrations survive a daemon restart when the process still runs.

// maxSessions bounds the registry: every session is a broker connection.
const maxSessions = 256

// sessionRecord is a registration as daemon.db keeps it: no token (only its
// hash) and no key.
type sessionRecord struct {
	TokenHash    string        `json:"tokenHash"`
	SessionID    string        `json:"sessionId"`
	MeshID       string        `json:"meshId"`
	DisplayName  string        `json:"displayName"`
	Process      proc.Identity `json:"process"`
	Cwd          string        `json:"cwd,omitempty"`
	Groups       []wire.Group  `json:"groups,omitempty"`
	PeerType     string        `json:"peerType"`
	Channel      string        `json:"channel,omitempty"`
	Pubkey       string        `json:"pubkey"`
	RegisteredAt int64         `json:"registeredAt"`

	// The session's profile as it last set it (Groups above too): the
	// broker keeps a session's status and summary only while its presence
	// lives, so the daemon sends them again after every session_hello
	// (groups go in the hello itself) and keeps them across its restarts.
	// Guarded by sessionRT.mu.
	Status   string `json:"status,omitempty"`
	StatusAt int64  `json:"statusAt,omitempty"` // ms
	Summary  string `json:"summary,omitempty"`
	Hidden   bool   `json:"hidden,omitempty"`

	// Departing: the session ended with rows still to send; the daemon
	// keeps (or, after a restart, reopens) its connection until they are
	// out (departing.go).
	Departing bool `json:"departing,omitempty"`
}

// workingDecay is how long the broker keeps a "working" status without a
// refresh (01-protocol §4); a restored status older than that is idle.
const workingDecay = 10 * time.Minute

// sessionRT is one registered session at run time: its key and presence.
type sessionRT struct {
	d   *Daemon
	rec sessionRecord
	key *cmcrypto.Identity
	// inboxFrom bounds the rows it shares with its member (sessionScope.from).
	inboxFrom uint64

	presence *client.Presence
	cancel   context.CancelFunc

	mu     sync.Mutex
	latest *client.Conn
	// retired: the session was replaced or deregistered for good; start
	// brings up no connection for it any more (a connection nobody
	// holds would be a ghost peer, online for everyone until the daemon
	// stops).
	retired bool
}

// profile returns a copy of the session's current profile fields.
func (s *sessionRT) profile() (groups []wire.Group, status string, statusAt int64, summary string, hidden bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rec.Groups), s.rec.Status, s.rec.StatusAt, s.rec.Summary, s.rec.Hidden
}

// recordProfile applies a profile change the broker accepted to the
// registration and saves it, so the next session_hello (after a broker
// outage or a daemon restart) carries it again. A session deregistered
// meanwhile is not written back.
func (s *sessionRT) recordProfile(change func(r *sessionRecord)) {
	s.mu.Lock()
	change(&s.rec)
	rec := s.rec
	rec.Groups = slices.Clone(rec.Groups)
	s.mu.Unlock()
	d := s.d
	// recMu, not sessMu, is held across the write: a drain holds a read
	// transaction while it looks up a session (sessMu), and a commit that
	// grows the file waits for that read to end, so a write waited for
	// under sessMu hung the whole daemon (a set_status beside sends).
	d.recMu.Lock()
	defer d.recMu.Unlock()
	d.sessMu.Lock()
	current := d.sessions[rec.TokenHash] == s
	d.sessMu.Unlock()
	if !current {
		return
	}
	if err := d.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bSessions), []byte(rec.TokenHash), &rec) }); err != nil {
		d.log.Error("session record", "session", rec.SessionID, "err", err)
	}
}

// putSessionRecord saves a session's record (under recMu: see
// recordProfile).
func (d *Daemon) putSessionRecord(rec *sessionRecord) error {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	return d.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bSessions), []byte(rec.TokenHash), rec) })
}

// replayProfile sends what session_hello cannot carry (status, summary,
// visibility) on a new connection, before the session reports open.
func (s *sessionRT) replayProfile(ctx context.Context, c *client.Conn) {
	_, status, statusAt, summary, hidden := s.profile()
	if status == wire.StatusWorking && time.Since(time.UnixMilli(statusAt)) >= workingDecay {
		status = wire.StatusIdle
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	if status != "" && status != wire.StatusIdle {
		errs = append(errs, c.SetStatus(ctx, status))
	}
	if summary != "" {
		errs = append(errs, c.SetSummary(ctx, summary))
	}
	if hidden {
		errs = append(errs, c.SetVisible(ctx, false))
	}
	if err := errors.Join(errs...); err != nil {
		s.d.log.Warn("could not restore the session's status/summary", "session", s.rec.SessionID, "err", err)
	}
}

// joinedGroups is groups with g added (or its role updated), as the
// broker's join_group does.
func joinedGroups(groups []wire.Group, g wire.Group) []wire.Group {
	for i, have := range groups {
		if have.Name == g.Name {
			if g.Role != "" {
				groups[i].Role = g.Role
			}
			return groups
		}
	}
	return append(groups, g)
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// scope is what the session may see (the one scope rule, scope.go).
func (s *sessionRT) scope() *sessionScope {
	return &sessionScope{meshID: s.rec.MeshID, session: s.rec.Pubkey, member: s.memberPubkey(), from: s.inboxFrom}
}

func (s *sessionRT) memberPubkey() string {
	if m := s.d.meshByID(s.rec.MeshID); m != nil {
		return m.key.PublicHex()
	}
	return ""
}

func (s *sessionRT) api() localapi.Session {
	groups, status, _, summary, _ := s.profile()
	if status == "" {
		status = wire.StatusIdle
	}
	out := localapi.Session{SessionID: s.rec.SessionID, Pubkey: s.rec.Pubkey, MemberPubkey: s.memberPubkey(),
		DisplayName: s.rec.DisplayName, PID: s.rec.Process.PID, Cwd: s.rec.Cwd, Groups: groups,
		PeerType: s.rec.PeerType, Channel: s.rec.Channel, RegisteredAt: s.rec.RegisteredAt, State: string(client.StateConnecting),
		Status: status, Summary: summary}
	if out.Groups == nil {
		out.Groups = []wire.Group{}
	}
	if m := s.d.meshByID(s.rec.MeshID); m != nil {
		out.Mesh = m.cfg.Slug
	}
	if p := s.pres(); p != nil {
		st, err := p.State()
		out.State = string(st)
		if err != nil {
			out.Error = err.Error()
		}
	}
	return out
}

// conn is the session's open connection, or nil.
func (s *sessionRT) conn() *client.Conn {
	p := s.pres()
	if p == nil {
		return nil
	}
	return p.Conn()
}

// ackConn is the newest connection, open or in its hello_ack phase (see
// meshRT.ackConn).
func (s *sessionRT) ackConn() *client.Conn {
	s.mu.Lock()
	c := s.latest
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.Done():
		return nil
	default:
		return c
	}
}

// sessionKeyPath is sessions/<slug>/<sessionId>.json.
func sessionKeyPath(home, slug, sessionID string) string {
	return filepath.Join(home, "sessions", slug, sessionID+".json")
}

type sessionKeyFile struct {
	SessionID string `json:"sessionId"`
	MeshID    string `json:"meshId"`
	Pubkey    string `json:"pubkey"`
	SecretKey string `json:"secretKey"`
	CreatedAt int64  `json:"createdAt"`
	// InboxFrom is the daemon's last event id when the session first
	// registered: rows it shares with its member (member DMs, topic
	// posts) stored up to there predate it and are not its to see, so a
	// new session is not flooded with its member's history. 0 (key files
	// written before this field): no such bound.
	InboxFrom uint64 `json:"inboxFrom,omitempty"`
}

// loadOrCreateSessionKey returns the session's keypair and inbox bound
// (sessionKeyFile.InboxFrom), creating them (0600, in 0700 directories) the
// first time, with the bound horizon() gives.
func loadOrCreateSessionKey(home, slug, meshID, sessionID string, horizon func() uint64) (*cmcrypto.Identity, uint64, error) {
	path := sessionKeyPath(home, slug, sessionID)
	if data, err := fsutil.ReadPrivateFile(path); err == nil {
		var f sessionKeyFile
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		key, err := cmcrypto.ParseSecretKey(f.SecretKey)
		if err != nil || key.PublicHex() != f.Pubkey || f.MeshID != meshID {
			return nil, 0, fmt.Errorf("%s: not a session key of this mesh", path)
		}
		return key, f.InboxFrom, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, 0, err
	}
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, 0, err
	}
	if err := fsutil.EnsurePrivateDir(filepath.Dir(filepath.Dir(path))); err != nil {
		return nil, 0, err
	}
	if err := fsutil.EnsurePrivateDir(filepath.Dir(path)); err != nil {
		return nil, 0, err
	}
	from := horizon()
	data, err := json.Marshal(sessionKeyFile{SessionID: sessionID, MeshID: meshID, Pubkey: key.PublicHex(),
		SecretKey: key.SecretKeyHex(), CreatedAt: time.Now().UnixMilli(), InboxFrom: from})
	if err != nil {
		return nil, 0, err
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, 0, err
	}
	return key, from, nil
}

// lastEventID is the newest event id handed out so far (the inbox bound of
// a session registering now).
func (d *Daemon) lastEventID() uint64 {
	var n uint64
	d.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bEvents).Sequence()
		return nil
	})
	return n
}

// start opens the session's presence. It waits for its mesh's own
// connection before every dial (client.PresenceOptions.BeforeDial), so
// after an outage the sessions follow the mesh's backoff.
func (s *sessionRT) start(m *meshRT) {
	s.mu.Lock()
	retired := s.retired
	s.mu.Unlock()
	if retired {
		return
	}
	ctx, cancel := context.WithCancel(m.d.ctx)
	host, _ := os.Hostname()
	id := m.ident
	id.Session = &client.SessionCreds{Key: s.key, SessionID: s.rec.SessionID, DisplayName: s.rec.DisplayName, PeerType: s.rec.PeerType}
	p := client.StartPresence(ctx, id, client.DialOptions{
		PID: s.rec.Process.PID, Cwd: s.rec.Cwd, Hostname: host, Channel: s.rec.Channel,
		Logger: m.d.log, CoalesceWrites: true,
		// The ack connection is known before the first push (see meshRT.start).
		OnReady: func(c *client.Conn) {
			s.mu.Lock()
			s.latest = c
			s.mu.Unlock()
		},
		OnPush:    func(raw []byte, p *wire.Push) { m.d.enqueueSessionInbox(m, s, p) },
		OnReceipt: func(r *wire.Receipt) { m.d.enqueueReceipt(m, r, s) },
	}, client.PresenceOptions{
		BeforeDial: func(ctx context.Context) error {
			for {
				// A mesh whose broker could not prove its key is tried
				// again (mismatchRecheck): its sessions wait for it.
				mp := m.presence.Load()
				ch := mp.Changed()
				st, err := mp.State()
				switch {
				case st == client.StateOpen:
					return nil
				case st.Final() && st != client.StateBrokerKeyMismatch:
					return fmt.Errorf("mesh %s is %s: %v", m.cfg.Slug, st, err)
				}
				select {
				case <-ch:
				case <-mp.Done():
					st, err := mp.State()
					return fmt.Errorf("mesh %s is %s: %v", m.cfg.Slug, st, err)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		},
		PrepareDial: func(o *client.DialOptions) { o.Groups, _, _, _, _ = s.profile() },
		OnConnected: func(ctx context.Context, c *client.Conn) {
			s.mu.Lock()
			s.latest = c
			s.mu.Unlock()
			s.replayProfile(ctx, c)
		},
		OnState: func(st client.State, err error) {
			m.kick()
			if r := s.refusal(m); r != nil {
				m.d.publishEventAsync(event{kind: localapi.EventSessionStatus, meshID: m.cfg.MeshID, session: s.rec.Pubkey,
					data: localapi.SessionStatusEvent{Mesh: m.cfg.Slug, SessionID: s.rec.SessionID, Pubkey: s.rec.Pubkey, State: string(st), Error: r.msg, Hint: r.hint}})
			}
		},
		MismatchRecheck: mismatchRecheck,
	})
	s.mu.Lock()
	s.presence, s.cancel = p, cancel
	retired = s.retired
	s.mu.Unlock()
	if retired { // retired while it started
		p.Close()
		cancel()
	}
}

// retire stops the session for good: a start after this (a registration
// that raced with its replacement, a config reload) brings up nothing.
func (s *sessionRT) retire() {
	s.mu.Lock()
	s.retired = true
	s.mu.Unlock()
	s.stop()
}

// isRetired reports whether retire was called.
func (s *sessionRT) isRetired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retired
}

// regLock serializes the registrations of one session id: n counts those
// holding or waiting for it.
type regLock struct {
	mu sync.Mutex
	n  int
}

// lockRegistration takes the lock of session id sessionID in mesh meshID
// and returns its release. Two registrations of one session at once (an
// MCP server's parallel first tool calls) each created a key and a
// connection, and one replaced the other before it was started: ghost
// presences nobody held.
func (d *Daemon) lockRegistration(meshID, sessionID string) func() {
	k := meshID + "/" + sessionID
	d.sessMu.Lock()
	if d.registering == nil {
		d.registering = map[string]*regLock{}
	}
	l := d.registering[k]
	if l == nil {
		l = &regLock{}
		d.registering[k] = l
	}
	l.n++
	d.sessMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		d.sessMu.Lock()
		if l.n--; l.n == 0 {
			delete(d.registering, k)
		}
		d.sessMu.Unlock()
	}
}

// endedByBroker says whether a presence state is the broker's end of the
// connection for good: kicked, removed or banned.
func endedByBroker(st client.State) bool {
	return st == client.StateKicked || st == client.StateRemoved || st == client.StateBanned
}

// refusal is the error for a send of this session once the broker ended
// its connection for good (endedByBroker), nil before. Its rows would
// never go out: its connection does not come back by itself.
func (s *sessionRT) refusal(m *meshRT) *apiError {
	p := s.pres()
	if p == nil {
		return nil
	}
	st, err := p.State()
	if !endedByBroker(st) {
		return nil
	}
	code := map[client.State]string{client.StateKicked: wire.ReasonKicked, client.StateRemoved: wire.ReasonRemoved, client.StateBanned: wire.CodeBanned}[st]
	cm := config.InvocationWithHome(s.d.home)
	why := client.MessageOf(err, string(st))
	return &apiError{status: http.StatusForbidden, code: code,
		msg: fmt.Sprintf("this agent session (%s) was %s from mesh %s by the broker (%s): its connection does not come back by itself, and nothing more is sent as it or pushed to it",
			s.rec.SessionID, st, m.cfg.Slug, why),
		hint: "a restart of the daemon (" + cm + " daemon down && " + cm + " daemon up) connects it again, unless the broker refuses it (a removed or banned member's sessions stay refused); ask the mesh's owner or admins why it was " + string(st)}
}

// pres is the current presence (start replaces it).
func (s *sessionRT) pres() *client.Presence {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.presence
}

// stop closes the session's connection cleanly (the broker ends the
// presence at once) and waits for it.
func (s *sessionRT) stop() {
	s.mu.Lock()
	p, cancel := s.presence, s.cancel
	s.mu.Unlock()
	if p != nil {
		p.Close()
	}
	if cancel != nil {
		cancel()
	}
}

// waitSettled waits up to d for the first connection attempt to end: open,
// or refused for good (a name or key the broker will never accept).
func (s *sessionRT) waitSettled(d time.Duration) (client.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	p := s.pres()
	st, err := p.WaitState(ctx, client.StateOpen, client.StateReconnecting)
	if ctx.Err() != nil {
		return p.State()
	}
	return st, err
}

func (d *Daemon) meshByID(id string) *meshRT {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meshes[id]
}

// sessionByToken finds a registered session by its token.
func (d *Daemon) sessionByToken(tok string) *sessionRT {
	h := hashToken(tok)
	d.sessMu.Lock()
	defer d.sessMu.Unlock()
	for k, s := range d.sessions {
		if subtle.ConstantTimeCompare([]byte(k), []byte(h)) == 1 {
			return s
		}
	}
	return nil
}

// sessionBySender finds the running session that sends as pubkey: a
// registered one, else one departing with rows still to send.
func (d *Daemon) sessionBySender(pubkey string) *sessionRT {
	d.sessMu.Lock()
	defer d.sessMu.Unlock()
	for _, s := range d.sessions {
		if s.rec.Pubkey == pubkey {
			return s
		}
	}
	return d.departing[pubkey]
}

func (d *Daemon) sessionList() []*sessionRT {
	d.sessMu.Lock()
	out := make([]*sessionRT, 0, len(d.sessions))
	for _, s := range d.sessions {
		out = append(out, s)
	}
	d.sessMu.Unlock()
	slices.SortFunc(out, func(a, b *sessionRT) int { return int(a.rec.RegisteredAt - b.rec.RegisteredAt) })
	return out
}

// sessionToken reads the calling session's token from the request:
// `Authorization: ClaudeMesh-Session <token>` on the socket, or
// `X-ClaudeMesh-Session` on the TCP listener (whose Authorization carries
// the bearer token).
func sessionToken(r *http.Request) string {
	if v := r.Header.Get("X-ClaudeMesh-Session"); v != "" {
		return strings.TrimSpace(v)
	}
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "ClaudeMesh-Session "); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// caller returns the calling session (nil when the caller is not one: the
// human's CLI, the web page). A token that names no session is refused, so
// a session whose registration was lost learns it and registers again.
func (d *Daemon) caller(w http.ResponseWriter, r *http.Request) (*sessionRT, bool) {
	tok := sessionToken(r)
	if tok == "" {
		return nil, true
	}
	s := d.sessionByToken(tok)
	if s == nil {
		writeError(w, &apiError{status: 401, code: "unknown_session", msg: "no registered session has this token: the session ended or was deregistered"})
		return nil, false
	}
	return s, true
}

func validToken(tok string) bool { return wire.IsHex(tok, 64) }

// register adds (or replaces) a session and opens its presence.
func (d *Daemon) register(req localapi.SessionRegister) (*sessionRT, *apiError) {
	if !validToken(req.Token) {
		return nil, badRequest(wire.CodeInvalidArgument, "token must be 64 lowercase hex characters")
	}
	if !wire.ValidSessionID(req.SessionID) {
		return nil, badRequest(wire.CodeInvalidArgument, "sessionId must match ^[A-Za-z0-9._-]{1,64}$")
	}
	name, err := cmcrypto.NormalizeName(req.DisplayName)
	if err != nil {
		return nil, badRequest(wire.CodeInvalidArgument, "displayName: "+err.Error())
	}
	switch req.PeerType {
	case "":
		req.PeerType = wire.PeerAI
	case wire.PeerAI, wire.PeerHuman, wire.PeerConnector:
	default:
		return nil, badRequest(wire.CodeInvalidArgument, "peerType must be ai, human or connector")
	}
	if !wire.ValidText(req.Cwd, 1024) || !wire.ValidText(req.Channel, 32) || len(req.Groups) > 32 {
		return nil, badRequest(wire.CodeInvalidArgument, "cwd, channel or groups are too long or have control characters")
	}
	for _, g := range req.Groups {
		if !wire.ValidGroup(g.Name) {
			return nil, badRequest(wire.CodeInvalidArgument, "invalid group "+g.Name)
		}
	}
	who, err := proc.Of(req.PID)
	if err != nil {
		return nil, badRequest("process_not_found", fmt.Sprintf("no running process %d: a session lives as long as its process", req.PID))
	}
	m, aerr := d.chooseMesh(req.Mesh)
	if aerr != nil {
		return nil, aerr
	}
	// One registration of a session id at a time: the key is created
	// once, and each replaces a registration that has fully started.
	defer d.lockRegistration(m.cfg.MeshID, req.SessionID)()
	key, inboxFrom, err := loadOrCreateSessionKey(d.home, m.cfg.Slug, m.cfg.MeshID, req.SessionID, d.lastEventID)
	if err != nil {
		return nil, internalError(err)
	}
	rec := sessionRecord{TokenHash: hashToken(req.Token), SessionID: req.SessionID, MeshID: m.cfg.MeshID, DisplayName: name,
		Process: who, Cwd: req.Cwd, Groups: req.Groups, PeerType: req.PeerType, Channel: req.Channel,
		Pubkey: key.PublicHex(), RegisteredAt: time.Now().UnixMilli()}

	// Re-registering a session id (or a token) replaces the registration
	// and its connection: same key, so no ghost peer and no lost DMs.
	d.sessMu.Lock()
	var old []*sessionRT
	for h, s := range d.sessions {
		if h == rec.TokenHash || (s.rec.MeshID == rec.MeshID && s.rec.SessionID == rec.SessionID) {
			old = append(old, s)
			delete(d.sessions, h)
		}
	}
	// A departing session with this key (departing.go): the new one sends
	// its rows on its own connection.
	if dp := d.departing[rec.Pubkey]; dp != nil {
		old = append(old, dp)
		delete(d.departing, rec.Pubkey)
	}
	rec.DisplayName = d.freeSessionName(rec.MeshID, rec.DisplayName)
	if len(d.sessions) >= maxSessions {
		d.sessMu.Unlock()
		return nil, &apiError{status: 429, code: "too_many_sessions", msg: fmt.Sprintf("this daemon already has %d sessions", maxSessions)}
	}
	s := &sessionRT{d: d, rec: rec, key: key, inboxFrom: inboxFrom}
	d.sessions[rec.TokenHash] = s
	d.sessMu.Unlock()
	for _, o := range old {
		o.retire()
		if o.rec.TokenHash != rec.TokenHash {
			d.deleteSessionRecord(o.rec.TokenHash)
		}
	}
	if err := d.putSessionRecord(&rec); err != nil {
		d.forgetSession(s)
		return nil, internalError(err)
	}
	s.start(m)
	if s.isRetired() {
		// Deregistered (its process ended) or replaced while it started.
		return nil, &apiError{status: 409, code: "session_gone", msg: "the session was deregistered or registered again while this registration ran"}
	}
	// Wait for the broker's verdict while it is reachable: a name or key
	// it refuses is the registrant's error; an unreachable broker is not
	// (the session connects when the broker is back).
	if m.getState() == localapi.MeshOpen {
		st, err := s.waitSettled(5 * time.Second)
		if finalForGood(s.pres(), st) {
			d.forgetSession(s)
			code := client.CodeOf(err)
			if code == "" {
				code = "session_refused"
			}
			status := 403
			if code == wire.CodeNameTaken || code == wire.CodeSessionKeyConflict {
				status = 409
			}
			msg := "the broker refused the session"
			var ce *client.Error
			if errors.As(err, &ce) && ce.Message != "" {
				msg = ce.Message // the code travels in its own field
			} else if err != nil {
				msg = err.Error()
			}
			return nil, &apiError{status: status, code: code, msg: msg}
		}
	}
	d.log.Info("session registered", "session", rec.SessionID, "mesh", m.cfg.Slug, "pid", rec.Process.PID)
	return s, nil
}

// freeSessionName is name, or name-2, name-3, … when another live session
// of this daemon in the mesh already has it (two `claude` in one
// directory, or `launch --name api` twice), so `send NAME` keeps naming
// one session. Caller holds sessMu.
func (d *Daemon) freeSessionName(meshID, name string) string {
	taken := func(n string) bool {
		for _, s := range d.sessions {
			if s.rec.MeshID == meshID && strings.EqualFold(s.rec.DisplayName, n) {
				return true
			}
		}
		return false
	}
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		suffix := "-" + strconv.Itoa(i)
		base := []rune(name)
		if len(base)+len(suffix) > cmcrypto.MaxNameLen {
			base = base[:cmcrypto.MaxNameLen-len(suffix)]
		}
		if n := string(base) + suffix; !taken(n) {
			return n
		}
	}
}

// dropSession deregisters a session: its connection closes (peer_left at
// once) and its record goes, unless it has rows still to send: then it
// departs (departing.go), and closes once they are out. A launched
// session's key file stays, so the same session id registering again gets
// its key and its queued messages back; an ambient one's goes
// (removeAmbientKey).
func (d *Daemon) dropSession(s *sessionRT) {
	d.sessMu.Lock()
	if d.sessions[s.rec.TokenHash] == s {
		delete(d.sessions, s.rec.TokenHash)
	}
	d.sessMu.Unlock()
	if d.depart(s) {
		return
	}
	s.retire()
	d.deleteSessionRecord(s.rec.TokenHash)
	d.removeAmbientKey(s.rec.MeshID, s.rec.SessionID)
}

// removeAmbientKey removes the key file (and the MCP server's lock file)
// of an ambient session that is gone, unless a session of that id is
// registered or departing again. An ambient session's id is that of one
// claude process (mcp/ambient.go): nothing registers it again once the
// session ended, and its key files piled up in the home, one per start.
// A launched session's key stays, so `launch` registering the same id
// again gets its key and its queued messages back.
func (d *Daemon) removeAmbientKey(meshID, sessionID string) {
	if !strings.HasPrefix(sessionID, "ambient-") {
		return
	}
	m := d.meshByID(meshID)
	if m == nil {
		return
	}
	defer d.lockRegistration(meshID, sessionID)()
	d.sessMu.Lock()
	live := false
	for _, o := range d.sessions {
		live = live || (o.rec.MeshID == meshID && o.rec.SessionID == sessionID)
	}
	for _, o := range d.departing {
		live = live || (o.rec.MeshID == meshID && o.rec.SessionID == sessionID)
	}
	d.sessMu.Unlock()
	if live {
		return
	}
	key := sessionKeyPath(d.home, m.cfg.Slug, sessionID)
	for _, p := range []string{key, strings.TrimSuffix(key, ".json") + ".lock"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("removing an ended ambient session's key file", "path", p, "err", err)
		}
	}
}

// forgetSession deregisters a session the broker refused, at once.
func (d *Daemon) forgetSession(s *sessionRT) {
	d.sessMu.Lock()
	if d.sessions[s.rec.TokenHash] == s {
		delete(d.sessions, s.rec.TokenHash)
	}
	d.sessMu.Unlock()
	s.retire()
	d.deleteSessionRecord(s.rec.TokenHash)
}

func (d *Daemon) deleteSessionRecord(tokenHash string) {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if err := d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bSessions).Delete([]byte(tokenHash)) }); err != nil {
		d.log.Error("session record", "err", err)
	}
}

// removeTokenFile removes the token file `claudemesh launch` keeps beside
// the session's key (sessions/<slug>/<sessionId>.token) when launch could
// not (it was killed): a bearer token of a session that is gone is no use
// to anyone and should not lie around.
func (d *Daemon) removeTokenFile(s *sessionRT) {
	m := d.meshByID(s.rec.MeshID)
	if m == nil {
		return
	}
	p := filepath.Join(d.home, "sessions", m.cfg.Slug, s.rec.SessionID+".token")
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("removing a dead session's token file", "path", p, "err", err)
	}
}

// reviveSessions restarts the registrations daemon.db holds whose process
// still runs (the same process: pid and start time), departs those that
// ended with rows still to send (departing.go), and forgets the rest; then
// it fails the pending rows of session keys nothing can send as any more.
func (d *Daemon) reviveSessions() {
	defer d.failOrphans()
	var recs []sessionRecord
	d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bSessions).ForEach(func(k, v []byte) error {
			var r sessionRecord
			if json.Unmarshal(v, &r) == nil {
				recs = append(recs, r)
			}
			return nil
		})
	})
	for _, rec := range recs {
		m := d.meshByID(rec.MeshID)
		if m != nil && (rec.Departing || !rec.Process.Alive()) && d.reviveDeparting(m, rec) {
			continue
		}
		if m == nil || rec.Departing || !rec.Process.Alive() {
			d.deleteSessionRecord(rec.TokenHash)
			d.removeAmbientKey(rec.MeshID, rec.SessionID)
			continue
		}
		key, inboxFrom, err := loadOrCreateSessionKey(d.home, m.cfg.Slug, m.cfg.MeshID, rec.SessionID, d.lastEventID)
		if err != nil || key.PublicHex() != rec.Pubkey {
			d.log.Warn("session key lost; forgetting the session", "session", rec.SessionID, "err", err)
			d.deleteSessionRecord(rec.TokenHash)
			continue
		}
		s := &sessionRT{d: d, rec: rec, key: key, inboxFrom: inboxFrom}
		d.sessMu.Lock()
		d.sessions[rec.TokenHash] = s
		d.sessMu.Unlock()
		s.start(m)
		d.log.Info("session revived", "session", rec.SessionID, "pid", rec.Process.PID)
	}
}

// restartSessions moves the sessions of a mesh whose runtime was replaced
// (config reload) onto the new one, and drops those of a mesh that left.
func (d *Daemon) restartSessions(meshID string) {
	m := d.meshByID(meshID)
	for _, s := range d.departedList() {
		if s.rec.MeshID != meshID {
			continue
		}
		s.stop()
		if m == nil {
			d.endDeparted(s)
			continue
		}
		s.start(m)
	}
	for _, s := range d.sessionList() {
		if s.rec.MeshID != meshID {
			continue
		}
		s.stop()
		if m == nil {
			d.dropSession(s)
			continue
		}
		s.start(m)
	}
}

// reapLoop deregisters sessions whose process is gone, every interval.
func (d *Daemon) reapLoop() {
	t := time.NewTicker(d.opts.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.departWake:
			d.settleDeparted()
		case <-t.C:
			for _, s := range d.sessionList() {
				if !s.rec.Process.Alive() {
					d.log.Info("session process gone; deregistering", "session", s.rec.SessionID, "pid", s.rec.Process.PID)
					d.dropSession(s)
					d.removeTokenFile(s)
				}
			}
			d.settleDeparted()
		}
	}
}

// stopSessions closes every session connection (daemon shutdown); their
// records stay for the next start.
func (d *Daemon) stopSessions() {
	for _, s := range d.sessionList() {
		s.stop()
	}
	for _, s := range d.departedList() {
		s.stop()
	}
}

// ---- routes ----

func (d *Daemon) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req localapi.SessionRegister
	if !readJSON(w, r, &req) {
		return
	}
	s, aerr := d.register(req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, 200, s.api())
}

func (d *Daemon) handleDeregister(w http.ResponseWriter, r *http.Request) {
	s := d.sessionByToken(r.PathValue("token"))
	if s == nil {
		writeError(w, &apiError{status: 404, code: wire.CodeNotFound, msg: "no registered session has this token"})
		return
	}
	d.dropSession(s)
	d.log.Info("session deregistered", "session", s.rec.SessionID)
	writeJSON(w, 200, localapi.OK{OK: true})
}

func (d *Daemon) handleSessionMe(w http.ResponseWriter, r *http.Request) {
	s, ok := d.caller(w, r)
	if !ok {
		return
	}
	if s == nil {
		writeError(w, &apiError{status: 401, code: "not_a_session", msg: "this request carries no session token"})
		return
	}
	writeJSON(w, 200, s.api())
}

func (d *Daemon) handleSessions(w http.ResponseWriter, r *http.Request) {
	out := []localapi.Session{}
	for _, s := range d.sessionList() {
		out = append(out, s.api())
	}
	writeJSON(w, 200, out)
}
