package broker

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	json "github.com/go-json-experiment/json"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/time/rate"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

func (b *Broker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", b.handleWS)
	mux.HandleFunc("GET /health", b.handleHealth)
	mux.HandleFunc("GET /health/ready", b.handleReady)
	mux.HandleFunc("POST /v1/admin/meshes", b.limited(b.handleCreateMesh))
	mux.HandleFunc("GET /v1/admin/meshes", b.limited(b.handleListMeshes))
	mux.HandleFunc("GET /v1/admin/meshes/{mesh}/members", b.limited(b.handleOperatorMembers))
	mux.HandleFunc("DELETE /v1/admin/meshes/{mesh}/members/{target}", b.limited(b.handleRemoveMember))
	mux.HandleFunc("POST /v1/join", b.limited(b.handleJoin))
	b.apiKeyRoutes(mux)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		restError(w, http.StatusNotFound, wire.CodeNotFound, "no such route")
	})
	return mux
}

// restError writes the REST error shape {"error":{"code","message"}}.
func restError(w http.ResponseWriter, status int, code, msg string) {
	if n, ok := w.(codeNoter); ok {
		n.noteCode(code) // the debug line's (debuglog.go)
	}
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// restUnavailable is 503 `unavailable` with retryAfterMs (and Retry-After):
// a cluster without quorum refused the write.
func restUnavailable(w http.ResponseWriter, what string) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]any{
		"code": wire.CodeUnavailable, "message": unavailableChangeText(what), "retryAfterMs": unavailableRetryMs}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.MarshalWrite(w, v)
}

// readBody decodes a JSON body strictly, answering 413 past 1 MiB and 400
// `malformed` for anything ill-shaped.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, restBodyLimit+1))
	if err != nil {
		restError(w, http.StatusBadRequest, wire.CodeMalformed, "could not read the body")
		return false
	}
	if len(data) > restBodyLimit {
		restError(w, http.StatusRequestEntityTooLarge, wire.CodePayloadTooLarge, "bodies are limited to 1 MiB")
		return false
	}
	if err := wire.Decode(data, v); err != nil {
		restError(w, http.StatusBadRequest, wire.CodeMalformed, wire.DescribeDecodeError(err, "the request body"))
		return false
	}
	return true
}

// ipLimiter rate-limits unauthenticated routes per client IP.
type ipLimiter struct {
	mu     sync.Mutex
	perSec rate.Limit
	burst  int
	ips    map[string]*rate.Limiter
	swept  time.Time
}

func newIPLimiter(perSec float64, burst int) *ipLimiter {
	return &ipLimiter{perSec: rate.Limit(perSec), burst: burst, ips: map[string]*rate.Limiter{}}
}

func (l *ipLimiter) allow(ip string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.swept) > time.Minute {
		// Forget full buckets so the map does not grow with every address
		// ever seen.
		for k, lim := range l.ips {
			if lim.Tokens() >= float64(l.burst) {
				delete(l.ips, k)
			}
		}
		l.swept = time.Now()
	}
	lim := l.ips[ip]
	if lim == nil {
		lim = rate.NewLimiter(l.perSec, l.burst)
		l.ips[ip] = lim
	}
	r := lim.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return false, d
	}
	return true, 0
}

func (b *Broker) limited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		addr, _ := b.clientAddr(r)
		if b.admit.isExempt(addr) {
			h(w, r)
			return
		}
		if ok, wait := b.restLimits.allow(hostKey(addr)); !ok {
			b.metrics.limitTripped.WithLabelValues("rest_per_ip").Inc()
			w.Header().Set("Retry-After", retryAfter(wait))
			restError(w, http.StatusTooManyRequests, wire.CodeRateLimited, "too many requests from this address; retry later")
			return
		}
		h(w, r)
	}
}

// healthBody is /health's and /health/ready's answer: a struct, so its keys
// come in one order on every node (encoding/json/v2 does not sort a map's).
type healthBody struct {
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Version string `json:"version,omitempty"`
}

func (b *Broker) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, healthBody{Status: "ok", Version: b.cfg.Version})
}

// handleReady is 200 only when the store accepts writes and the broker is
// not shutting down. The write probe is cached for a second so a busy load
// balancer does not become a write load.
func (b *Broker) handleReady(w http.ResponseWriter, r *http.Request) {
	if b.shuttingDown.Load() {
		writeJSON(w, http.StatusServiceUnavailable, healthBody{Status: "not_ready", Reason: "shutting_down"})
		return
	}
	b.readyMu.Lock()
	if time.Since(b.readyAt) > time.Second {
		b.readyErr = b.store.Ping()
		b.readyAt = time.Now()
	}
	err := b.readyErr
	b.readyMu.Unlock()
	if err != nil {
		reason := "store: " + err.Error()
		if errors.Is(err, store.ErrUnavailable) {
			reason = "cluster: " + err.Error() // no quorum (cluster.Engine.Ping)
		}
		writeJSON(w, http.StatusServiceUnavailable, healthBody{Status: "not_ready", Reason: reason})
		return
	}
	writeJSON(w, http.StatusOK, healthBody{Status: "ready", Version: b.cfg.Version})
}

type createMeshRequest struct {
	Name             string `json:"name"`
	Slug             string `json:"slug,omitempty"`
	OwnerPubkey      string `json:"ownerPubkey"`
	OwnerDisplayName string `json:"ownerDisplayName"`
}

// slugify derives a slug from a mesh name: lowercase ASCII letters and
// digits, other runs become one dash. Letters with accents keep their base
// letter ("Ünïcode" → "unicode"; dropping them made "n-code").
func slugify(name string) string {
	var sb strings.Builder
	dash := false
	for _, r := range strings.ToLower(norm.NFKD.String(name)) {
		if unicode.Is(unicode.Mn, r) {
			continue // an accent of the letter before
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
			dash = false
		} else if !dash && sb.Len() > 0 {
			sb.WriteByte('-')
			dash = true
		}
		if sb.Len() >= 32 {
			break
		}
	}
	return strings.Trim(sb.String(), "-")
}

func (b *Broker) handleCreateMesh(w http.ResponseWriter, r *http.Request) {
	if !b.operatorAuthorized(r) {
		restError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "operator token required (Authorization: Bearer <operator.token>)")
		return
	}
	var req createMeshRequest
	if !readBody(w, r, &req) {
		return
	}
	name, err := cmcrypto.NormalizeName(req.Name)
	if err != nil {
		restError(w, http.StatusBadRequest, wire.CodeMalformed, "name: "+err.Error())
		return
	}
	owner, err := cmcrypto.NormalizeName(req.OwnerDisplayName)
	if err != nil {
		restError(w, http.StatusBadRequest, wire.CodeMalformed, "ownerDisplayName: "+err.Error())
		return
	}
	if cmcrypto.IsReservedName(owner) {
		restError(w, http.StatusConflict, wire.CodeNameTaken, reservedNameMessage(owner))
		return
	}
	if _, err := cmcrypto.ParsePublicKey(req.OwnerPubkey); err != nil {
		restError(w, http.StatusBadRequest, wire.CodeMalformed, "ownerPubkey must be a valid 64-hex ed25519 key")
		return
	}
	slug := req.Slug
	if slug == "" {
		slug = slugify(name)
	}
	if !cmcrypto.ValidSlug(slug) {
		msg := "slug " + strconv.Quote(slug) + " is not valid: a slug is 1 to 32 of a-z, 0-9 and -, starting with a letter or digit"
		if req.Slug == "" {
			msg = "no slug can be made from the name " + strconv.Quote(name) + " (it has no letter a-z or digit): give one (slug; claudemesh mesh create --slug SLUG), 1 to 32 of a-z, 0-9 and -"
		}
		restError(w, http.StatusBadRequest, wire.CodeMalformed, msg)
		return
	}
	now := time.Now().UnixMilli()
	mesh := store.Mesh{ID: newID(), Slug: slug, Name: name, CreatedAt: now}
	mem := store.Member{ID: newID(), Pubkey: req.OwnerPubkey, DisplayName: owner, NameKey: cmcrypto.NameKey(owner), Role: wire.MemberOwner, JoinedAt: now}
	err = b.audited(mesh.ID, func() store.AuditEvent {
		return store.AuditEvent{Type: wire.AuditMeshCreated, Actor: b.keyHex, Payload: map[string]any{
			"by": "operator", "name": name, "slug": slug, "owner": memberJSON(&mem)}}
	}, func(tx *store.Tx) error { return store.CreateMesh(tx, mesh, &mem) })
	if errors.Is(err, store.ErrSlugTaken) {
		restError(w, http.StatusConflict, wire.CodeSlugTaken, "a mesh with slug "+slug+" already exists")
		return
	}
	if errors.Is(err, store.ErrUnavailable) {
		restUnavailable(w, "the new mesh")
		return
	}
	if err != nil {
		restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not create the mesh")
		return
	}
	b.hub.addMesh(mesh, mem)
	b.log.Info("mesh created", "meshId", mesh.ID, "slug", slug)
	writeJSON(w, http.StatusCreated, map[string]any{
		"meshId": mesh.ID, "slug": slug, "name": name, "memberId": mem.ID,
		"brokerUrl": b.publicURL, "brokerUrls": b.publicURLs, "brokerPubkey": b.keyHex,
	})
}

type meshSummary struct {
	MeshID      string `json:"meshId"`
	Slug        string `json:"slug"`
	Name        string `json:"name"`
	Members     int    `json:"members"`
	Connections int    `json:"connections"`
	CreatedAt   int64  `json:"createdAt"`
}

func (b *Broker) handleListMeshes(w http.ResponseWriter, r *http.Request) {
	if !b.operatorAuthorized(r) {
		restError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "operator token required")
		return
	}
	var meshes []store.Mesh
	if err := b.store.View(func(tx *store.Tx) error {
		var err error
		meshes, err = store.ListMeshes(tx)
		return err
	}); err != nil {
		restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not list meshes")
		return
	}
	out := make([]meshSummary, 0, len(meshes))
	for _, m := range meshes {
		s := meshSummary{MeshID: m.ID, Slug: m.Slug, Name: m.Name, CreatedAt: m.CreatedAt}
		if ms := b.hub.mesh(m.ID); ms != nil {
			ms.mu.Lock()
			for _, mem := range ms.members {
				if mem.RevokedAt == 0 {
					s.Members++
				}
			}
			s.Connections = ms.connCount
			ms.mu.Unlock()
		}
		out = append(out, s)
	}
	writeJSON(w, http.StatusOK, map[string]any{"meshes": out})
}

type joinRequest struct {
	Token       string `json:"token"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	Timestamp   int64  `json:"timestamp"`
	Signature   string `json:"signature"`
}

// joinError is a refusal from the join transaction.
type joinError struct {
	status    int
	code, msg string
}

func (e *joinError) Error() string { return e.msg }

// handleJoin enrolls a new member with a signed, registered invite. The
// checks run in the order of 01-protocol §7; the first failure wins.
func (b *Broker) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if !readBody(w, r, &req) {
		return
	}
	fail := func(status int, code, msg string) {
		restError(w, status, code, msg)
		if b.dbg.on {
			addr, _ := b.clientAddr(r)
			b.debug(hostKey(addr), "join refused", "code", code, "message", msg, "ip", addr.String())
		}
	}
	inv, token, err := cmcrypto.ParseInvite(req.Token)
	if err != nil || token != req.Token {
		fail(http.StatusBadRequest, wire.CodeMalformed, "token is not a valid invite token")
		return
	}
	joiner, err := cmcrypto.ParsePublicKey(req.Pubkey)
	if err != nil {
		fail(http.StatusBadRequest, wire.CodeMalformed, "pubkey must be a valid 64-hex ed25519 key")
		return
	}
	name, err := cmcrypto.NormalizeName(req.DisplayName)
	if err != nil || name != req.DisplayName {
		// The enrollment signature covers the name as sent, so it must
		// already be in normal form.
		fail(http.StatusBadRequest, wire.CodeMalformed, "displayName must be 1-64 characters, NFC, trimmed, without control characters or '|'")
		return
	}
	if req.Timestamp <= 0 || !wire.IsHex(req.Signature, 128) {
		fail(http.StatusBadRequest, wire.CodeMalformed, "timestamp and signature (128 hex) are required")
		return
	}
	if err := inv.Verify(); err != nil {
		if errors.Is(err, cmcrypto.ErrBadSignature) {
			fail(http.StatusBadRequest, wire.CodeBadSignature, "the invite's signature does not verify")
		} else {
			fail(http.StatusBadRequest, wire.CodeMalformed, "invite: "+err.Error())
		}
		return
	}
	enroll, err := cmcrypto.EnrollString(inv.MeshID, inv.InviteID, req.Pubkey, name, req.Timestamp)
	if err != nil {
		fail(http.StatusBadRequest, wire.CodeMalformed, err.Error())
		return
	}
	if cmcrypto.Verify(joiner, enroll, req.Signature) != nil {
		fail(http.StatusBadRequest, wire.CodeBadSignature, "the enrollment signature does not verify")
		return
	}
	if skew := time.Since(time.UnixMilli(req.Timestamp)); skew > timestampSkew || skew < -timestampSkew {
		fail(http.StatusBadRequest, wire.CodeTimestampSkew, "the join timestamp is too far from the broker's clock")
		return
	}
	ms := b.hub.mesh(inv.MeshID)
	if ms == nil {
		fail(http.StatusNotFound, wire.CodeMeshNotFound, "this broker has no such mesh")
		return
	}
	// A name another member's can be taken for (case, Unicode confusables,
	// invisible code points: crypto.NamesConfusable), revoked members
	// included, is taken too: "аlice" (Cyrillic а) or "a1ice" would read as
	// alice in every agent's context (docs/protocol.md "Readings"). It is
	// read from the members in memory (not under the store's transaction),
	// and refused where name_taken falls in the order of the checks; the
	// store's case-folded check still decides a race of two joins.
	lookalike := ms.confusableMember(name, req.Pubkey)
	sessionName, sessionOf := ms.confusableSession(name, req.Pubkey)
	now := time.Now().UnixMilli()
	var joined store.Member
	var fresh bool
	err = b.store.Update(func(tx *store.Tx) error {
		fresh = false
		rec, err := store.GetInvite(tx, ms.id, inv.InviteID)
		if err != nil || rec.Token != req.Token {
			return &joinError{http.StatusNotFound, wire.CodeInviteNotFound, "this invite was never registered with the broker"}
		}
		if rec.RevokedAt != 0 {
			return &joinError{http.StatusGone, wire.CodeInviteRevoked, "this invite was revoked"}
		}
		if rec.ExpiresAt <= now {
			return &joinError{http.StatusGone, wire.CodeInviteExpired, "this invite has expired; ask for a new one"}
		}
		issuer, err := store.MemberByPubkey(tx, ms.id, rec.IssuerPubkey)
		if err != nil || issuer.RevokedAt != 0 || (issuer.Role != wire.MemberOwner && issuer.Role != wire.MemberAdmin) ||
			(rec.Role == wire.MemberAdmin && issuer.Role != wire.MemberOwner) {
			return &joinError{http.StatusForbidden, wire.CodeIssuerNotAdmin, "the invite's issuer can no longer invite"}
		}
		if existing, err := store.MemberByPubkey(tx, ms.id, req.Pubkey); err == nil {
			if existing.RevokedAt != 0 {
				return &joinError{http.StatusForbidden, wire.CodeRevoked, "this key was removed from the mesh"}
			}
			joined = *existing // idempotent re-join: no use consumed
			return nil
		}
		key := cmcrypto.NameKey(name)
		if store.NameTaken(tx, ms.id, key) {
			return &joinError{http.StatusConflict, wire.CodeNameTaken, "display name " + name + " is taken in this mesh"}
		}
		if lookalike != "" {
			return &joinError{http.StatusConflict, wire.CodeNameTaken, "display name " + name + " looks like the name of member " + lookalike + " in this mesh; choose another"}
		}
		if sessionName != "" {
			return &joinError{http.StatusConflict, wire.CodeNameTaken, "display name " + name + " is (or looks like) the name of " + sessionOf + "'s agent session " + sessionName + " in this mesh; choose another"}
		}
		if cmcrypto.IsReservedName(name) {
			return &joinError{http.StatusConflict, wire.CodeNameTaken, reservedNameMessage(name)}
		}
		if rec.Uses >= rec.MaxUses {
			return &joinError{http.StatusGone, wire.CodeInviteExhausted, "this invite has been used up"}
		}
		rec.Uses++
		if err := store.PutInvite(tx, ms.id, rec); err != nil {
			return err
		}
		joined = store.Member{ID: newID(), Pubkey: req.Pubkey, DisplayName: name, NameKey: key, Role: rec.Role, JoinedAt: now, InviteID: rec.ID}
		if err := store.PutMember(tx, ms.id, &joined); err != nil {
			return err
		}
		fresh = true
		_, err = store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditMemberJoined, Actor: joined.Pubkey, Payload: map[string]any{
			"member": memberJSON(&joined), "role": joined.Role, "inviteId": rec.ID, "issuerPubkey": rec.IssuerPubkey}})
		return err
	})
	var je *joinError
	if errors.As(err, &je) {
		fail(je.status, je.code, je.msg)
		return
	}
	if errors.Is(err, store.ErrUnavailable) {
		restUnavailable(w, "the enrollment")
		return
	}
	if err != nil {
		fail(http.StatusInternalServerError, wire.CodeInternal, "could not enroll")
		return
	}
	if fresh {
		// An idempotent re-join changes nothing: the member's record in
		// memory is the live one (its profile may be newer than the
		// store's) and must not be replaced.
		ms.mu.Lock()
		mem := ms.addMember(joined, b.cfg)
		ms.memberChanged(wire.MemberJoined, mem, nil)
		ms.mu.Unlock()
		b.topicsMemberEnrolled(ms, joined.Pubkey)
	}
	if b.dbg.on {
		addr, _ := b.clientAddr(r)
		b.debug(hostKey(addr), "member joined", "mesh", ms.id, "memberId", joined.ID, "member", shortHex(joined.Pubkey),
			"name", joined.DisplayName, "inviteId", inv.InviteID, "again", !fresh, "ip", addr.String())
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"meshId": ms.id, "slug": ms.slug, "name": ms.name, "memberId": joined.ID, "memberRole": joined.Role,
		"brokerUrl": b.publicURL, "brokerUrls": b.publicURLs, "brokerPubkey": b.keyHex, "displayName": joined.DisplayName,
	})
}

// reservedNameMessage refuses name, which is or looks like
// cmcrypto.ReservedName.
func reservedNameMessage(name string) string {
	return "display name " + name + " is reserved: it is, or can be taken for, \"" + cmcrypto.ReservedName + "\", the name of claudemesh's own notices to agents; choose another"
}
