package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// API keys (01-protocol §6, 02-crypto "Other secrets"): a member creates a
// key that acts as itself on the REST routes of §7, limited to capabilities
// (read, send, admin) and optionally to some topics. The secret, `cm_` +
// base64url(32 random bytes), is shown once; the broker keeps its SHA-256
// and finds it by its first 11 characters.

const (
	apiKeyPrefixLen = 11
	maxAPIKeyLabel  = 64
	maxAPIKeyTopics = 64
	// maxAPIKeysPerMember counts a member's keys that are neither revoked
	// nor expired.
	maxAPIKeysPerMember = 100
)

func (c *conn) handleAPIKey(data []byte, env wire.Envelope) {
	switch env.Type {
	case wire.TypeAPIKeyCreate:
		var r wire.APIKeyCreate
		if err := wire.Decode(data, &r); err != nil {
			c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
			return
		}
		c.handleAPIKeyCreate(r)
	case wire.TypeAPIKeyList:
		c.handleAPIKeyList(env)
	case wire.TypeAPIKeyRevoke:
		var r wire.APIKeyRevoke
		if err := wire.Decode(data, &r); err != nil || r.ID == "" {
			c.sendError(env.ReqID, wire.CodeInvalidArgument, "apikey_revoke needs id")
			return
		}
		c.handleAPIKeyRevoke(r)
	}
}

func (c *conn) handleAPIKeyCreate(r wire.APIKeyCreate) {
	fail := func(code, msg string) { c.sendError(r.ReqID, code, msg) }
	label := strings.TrimSpace(r.Label)
	if label == "" || !wire.ValidText(label, maxAPIKeyLabel) {
		fail(wire.CodeInvalidArgument, fmt.Sprintf("label is 1 to %d bytes without control characters", maxAPIKeyLabel))
		return
	}
	caps := slices.Clone(r.Capabilities)
	slices.Sort(caps)
	caps = slices.Compact(caps)
	if len(caps) == 0 {
		fail(wire.CodeInvalidArgument, "capabilities: at least one of read, send, admin")
		return
	}
	for _, cp := range caps {
		switch cp {
		case wire.CapRead, wire.CapSend:
		case wire.CapAdmin:
			if !isManager(c.role()) {
				fail(wire.CodeForbidden, "only the mesh owner or an admin may grant the admin capability")
				return
			}
		default:
			fail(wire.CodeInvalidArgument, fmt.Sprintf("unknown capability %q (read, send or admin)", cp))
			return
		}
	}
	topics := slices.Clone(r.Topics)
	slices.Sort(topics)
	topics = slices.Compact(topics)
	if len(topics) > maxAPIKeyTopics {
		fail(wire.CodeInvalidArgument, fmt.Sprintf("at most %d topics", maxAPIKeyTopics))
		return
	}
	for _, t := range topics {
		if !wire.ValidTopicName(t) {
			fail(wire.CodeInvalidArgument, fmt.Sprintf("%q is not a topic name", t))
			return
		}
	}
	now := time.Now().UnixMilli()
	if r.ExpiresAt != 0 && r.ExpiresAt <= now {
		fail(wire.CodeInvalidArgument, "expiresAt is in the past")
		return
	}
	ms := c.ms
	var secret string
	var rec *store.APIKey
	for range 3 {
		secret = "cm_" + cmcrypto.RandomToken()
		sum := sha256.Sum256([]byte(secret))
		rec = &store.APIKey{ID: newID(), Prefix: secret[:apiKeyPrefixLen], Hash: hex.EncodeToString(sum[:]), Label: label,
			Capabilities: caps, Topics: topics, MemberID: c.mem.ID, MemberPubkey: c.mem.Pubkey, CreatedAt: now, ExpiresAt: r.ExpiresAt}
		var tooMany bool
		err := c.b.store.Update(func(tx *store.Tx) error {
			tooMany = false
			keys, err := store.ListAPIKeys(tx, ms.id)
			if err != nil {
				return err
			}
			live := 0
			for _, k := range keys {
				if k.MemberPubkey == rec.MemberPubkey && k.RevokedAt == 0 && (k.ExpiresAt == 0 || k.ExpiresAt > now) {
					live++
				}
			}
			if live >= maxAPIKeysPerMember {
				tooMany = true
				return nil
			}
			if err := store.PutAPIKey(tx, ms.id, rec); err != nil {
				return err
			}
			return c.b.auditTopic(tx, ms, wire.AuditAPIKeyCreated, c.mem.Pubkey, map[string]any{"keyId": rec.ID, "label": label,
				"capabilities": caps, "topics": topics, "prefix": rec.Prefix})
		})
		if errors.Is(err, store.ErrExists) {
			continue // a prefix collision: draw another secret
		}
		if err != nil {
			fail(wire.CodeInternal, "could not store the key")
			return
		}
		if tooMany {
			fail(wire.CodeTooManyAPIKeys, fmt.Sprintf("you already have %d live API keys; revoke one first", maxAPIKeysPerMember))
			return
		}
		c.reply(wire.APIKeyReply{Type: wire.TypeAPIKey, ReqID: r.ReqID, Secret: secret, APIKeyInfo: apiKeyInfo(rec)})
		return
	}
	fail(wire.CodeInternal, "could not draw a unique key prefix")
}

func apiKeyInfo(k *store.APIKey) wire.APIKeyInfo {
	topics := k.Topics
	if topics == nil {
		topics = []string{}
	}
	return wire.APIKeyInfo{ID: k.ID, Prefix: k.Prefix, Label: k.Label, Capabilities: k.Capabilities, Topics: topics,
		MemberPubkey: k.MemberPubkey, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt}
}

// handleAPIKeyList lists the caller's own keys; the owner and admins see
// every key of the mesh.
func (c *conn) handleAPIKeyList(env wire.Envelope) {
	all := isManager(c.role())
	var keys []store.APIKey
	err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		keys, err = store.ListAPIKeys(tx, c.ms.id)
		return err
	})
	if err != nil {
		c.sendError(env.ReqID, wire.CodeInternal, "could not list the keys")
		return
	}
	out := wire.APIKeys{Type: wire.TypeAPIKeys, ReqID: env.ReqID, Keys: []wire.APIKeyInfo{}}
	c.ms.mu.Lock()
	for i := range keys {
		if all || keys[i].MemberPubkey == c.mem.Pubkey {
			info := apiKeyInfo(&keys[i])
			// authAPIKey refuses the key of a member removed since: say so,
			// not "active".
			info.MemberRemoved = c.ms.activeMember(keys[i].MemberPubkey) == nil
			out.Keys = append(out.Keys, info)
		}
	}
	c.ms.mu.Unlock()
	c.reply(out)
}

// handleAPIKeyRevoke revokes a key of the caller's (any key, for the owner
// and admins). Revoking twice is fine.
func (c *conn) handleAPIKeyRevoke(r wire.APIKeyRevoke) {
	all := isManager(c.role())
	ms := c.ms
	err := c.b.store.Update(func(tx *store.Tx) error {
		k, err := store.GetAPIKey(tx, ms.id, r.ID)
		if err != nil {
			return err
		}
		if !all && k.MemberPubkey != c.mem.Pubkey {
			return store.ErrNotFound
		}
		if k.RevokedAt != 0 {
			return nil
		}
		k.RevokedAt = time.Now().UnixMilli()
		if err := store.UpdateAPIKey(tx, ms.id, k); err != nil {
			return err
		}
		return c.b.auditTopic(tx, ms, wire.AuditAPIKeyRevoked, c.mem.Pubkey, map[string]any{"keyId": k.ID, "label": k.Label})
	})
	if errors.Is(err, store.ErrNotFound) {
		c.sendError(r.ReqID, wire.CodeNotFound, "no API key with that id of yours")
		return
	}
	if err != nil {
		c.storeFailed(r.ReqID, err, "could not revoke the key", "the revocation")
		return
	}
	// The key's open streams end now, before the revoker is told.
	ms.mu.Lock()
	ms.credentialsChangedLocked()
	ms.mu.Unlock()
	c.sendOK(r.ReqID)
}

// ---- REST authentication ----

// apiCaller is an authenticated API-key request: the key and the member it
// acts as.
type apiCaller struct {
	ms  *meshState
	key *store.APIKey
	mem *member
}

// can reports whether the key holds capability cp (admin holds them all).
func (a *apiCaller) can(cp string) bool {
	return slices.Contains(a.key.Capabilities, cp) || slices.Contains(a.key.Capabilities, wire.CapAdmin)
}

// inScope reports whether the key may touch the topic.
func (a *apiCaller) inScope(topicName string) bool {
	return len(a.key.Topics) == 0 || slices.Contains(a.key.Topics, topicName)
}

// apiLimiters rate-limit each key: a bot's loop cannot monopolise the broker.
type apiLimiters struct {
	mu   sync.Mutex
	keys map[string]*rate.Limiter
}

func (l *apiLimiters) allow(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*rate.Limiter{}
	}
	lim := l.keys[id]
	if lim == nil {
		if len(l.keys) > 10000 {
			clear(l.keys)
		}
		lim = rate.NewLimiter(frameRate, frameBurst)
		l.keys[id] = lim
	}
	return lim.Allow()
}

// authAPIKey checks the bearer key of a REST request: 401 api_key_invalid
// for a missing, unknown, revoked or expired key or one whose member is no
// longer active. Failed attempts count against the caller's address.
func (b *Broker) authAPIKey(w http.ResponseWriter, r *http.Request) (*apiCaller, bool) {
	deny := func() (*apiCaller, bool) {
		addr, _ := b.clientAddr(r)
		if ok, wait := b.restLimits.allow(hostKey(addr)); !ok {
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			restError(w, http.StatusTooManyRequests, wire.CodeRateLimited, "too many failed attempts from this address; retry later")
			return nil, false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="claudemesh"`)
		restError(w, http.StatusUnauthorized, wire.CodeAPIKeyInvalid, "a valid API key is required (Authorization: Bearer cm_…); it may have been revoked or have expired")
		return nil, false
	}
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !strings.HasPrefix(secret, "cm_") || len(secret) < apiKeyPrefixLen || len(secret) > 128 {
		return deny()
	}
	var meshID string
	var key *store.APIKey
	err := b.store.View(func(tx *store.Tx) error {
		var err error
		meshID, key, err = store.APIKeyByPrefix(tx, secret[:apiKeyPrefixLen])
		return err
	})
	if err != nil {
		return deny()
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(key.Hash)) != 1 {
		return deny()
	}
	now := time.Now().UnixMilli()
	if key.RevokedAt != 0 || (key.ExpiresAt != 0 && key.ExpiresAt <= now) {
		return deny()
	}
	ms := b.hub.mesh(meshID)
	if ms == nil {
		return deny()
	}
	ms.mu.Lock()
	mem := ms.activeMember(key.MemberPubkey)
	ms.mu.Unlock()
	if mem == nil {
		return deny()
	}
	if !b.apiLimits.allow(key.ID) {
		w.Header().Set("Retry-After", "1")
		restError(w, http.StatusTooManyRequests, wire.CodeRateLimited, "this API key is making requests too fast; slow down")
		return nil, false
	}
	return &apiCaller{ms: ms, key: key, mem: mem}, true
}

// stillValid re-reads the key (a long SSE stream must end when it is
// revoked or expires, or its member leaves).
func (b *Broker) stillValid(a *apiCaller) bool {
	var k *store.APIKey
	if b.store.View(func(tx *store.Tx) error {
		var err error
		k, err = store.GetAPIKey(tx, a.ms.id, a.key.ID)
		return err
	}) != nil {
		return false
	}
	if k.RevokedAt != 0 || (k.ExpiresAt != 0 && k.ExpiresAt <= time.Now().UnixMilli()) {
		return false
	}
	a.ms.mu.Lock()
	defer a.ms.mu.Unlock()
	return a.ms.activeMember(k.MemberPubkey) != nil
}
