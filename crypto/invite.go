package crypto

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// Invite is the signed content of an invite link. The JSON field order of
// the struct is the order Token writes, which is the order the reference
// vectors (JSON.stringify) use; readers accept any order.
type Invite struct {
	V            int    `json:"v"`
	MeshID       string `json:"meshId"`
	MeshSlug     string `json:"meshSlug"`
	MeshName     string `json:"meshName"`
	BrokerURL    string `json:"brokerUrl"`
	BrokerPubkey string `json:"brokerPubkey"`
	InviteID     string `json:"inviteId"`
	Role         string `json:"role"`
	ExpiresAt    int64  `json:"expiresAt"` // Unix ms
	MaxUses      int    `json:"maxUses"`
	IssuerPubkey string `json:"issuerPubkey"`
	Signature    string `json:"signature"`
	// BrokerURLs is optional and NOT signed (the v1 signed string covers
	// brokerUrl only): the other public URLs of a clustered broker, ws or
	// wss, at most wire.MaxBrokerURLs. Unsigned is safe because every
	// connection proves the pinned brokerPubkey by the challenge
	// signature: a tampered list can only make a connection fail. The
	// join itself goes to the signed brokerUrl.
	BrokerURLs []string `json:"brokerUrls,omitempty"`
}

const (
	inviteLinkPrefix = "ic://join/"
	// maxInviteToken bounds what ParseInvite decodes. A real token is under
	// 1 KiB; 8 KiB leaves room for long URLs and names.
	maxInviteToken = 8 << 10
	maxInviteUses  = 10000
)

// SignedString is the text the issuer signs:
// claudemesh/invite/v1|<meshId>|<meshSlug>|<meshName>|<brokerUrl>|<brokerPubkey>|<inviteId>|<role>|<expiresAtMs>|<maxUses>|<issuerPubkey>.
func (inv *Invite) SignedString() (string, error) {
	exp, err := itoa("expiresAt", inv.ExpiresAt)
	if err != nil {
		return "", err
	}
	uses, err := itoa("maxUses", int64(inv.MaxUses))
	if err != nil {
		return "", err
	}
	return join(prefixInvite,
		field{"meshId", inv.MeshID}, field{"meshSlug", inv.MeshSlug},
		field{"meshName", inv.MeshName}, field{"brokerUrl", inv.BrokerURL},
		field{"brokerPubkey", inv.BrokerPubkey}, field{"inviteId", inv.InviteID},
		field{"role", inv.Role}, exp, uses, field{"issuerPubkey", inv.IssuerPubkey})
}

func badInvite(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadInvite}, args...)...)
}

// validate checks every field but the signature, and returns the issuer
// key. Shared by Sign and Verify so nothing invalid is ever signed.
func (inv *Invite) validate() (PublicKey, error) {
	if inv.V != 1 {
		return PublicKey{}, badInvite("unsupported version %d", inv.V)
	}
	if inv.MeshID == "" {
		return PublicKey{}, badInvite("empty meshId")
	}
	if !ValidSlug(inv.MeshSlug) {
		return PublicKey{}, badInvite("meshSlug %q is not a valid slug", inv.MeshSlug)
	}
	if n, err := NormalizeName(inv.MeshName); err != nil || n != inv.MeshName {
		return PublicKey{}, badInvite("meshName %q is not a normalized name", inv.MeshName)
	}
	u, err := url.Parse(inv.BrokerURL)
	if err != nil || u.Host == "" || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") {
		return PublicKey{}, badInvite("brokerUrl %q is not a ws, wss, http or https URL", inv.BrokerURL)
	}
	if _, err := ParsePublicKey(inv.BrokerPubkey); err != nil {
		return PublicKey{}, fmt.Errorf("%w: brokerPubkey: %w", ErrBadInvite, err)
	}
	if id, err := ulid.ParseStrict(inv.InviteID); err != nil || id.String() != inv.InviteID {
		return PublicKey{}, badInvite("inviteId %q is not a canonical ULID", inv.InviteID)
	}
	if inv.Role != "member" && inv.Role != "admin" {
		return PublicKey{}, badInvite("role %q is not member or admin", inv.Role)
	}
	if inv.ExpiresAt <= 0 {
		return PublicKey{}, badInvite("expiresAt must be positive Unix ms")
	}
	if inv.MaxUses < 1 || inv.MaxUses > maxInviteUses {
		return PublicKey{}, badInvite("maxUses %d is outside 1..%d", inv.MaxUses, maxInviteUses)
	}
	issuer, err := ParsePublicKey(inv.IssuerPubkey)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: issuerPubkey: %w", ErrBadInvite, err)
	}
	if inv.BrokerURLs != nil {
		if err := wire.CheckBrokerURLs(inv.BrokerURLs); err != nil {
			return PublicKey{}, badInvite("brokerUrls: %v", err)
		}
	}
	return issuer, nil
}

// Sign validates the invite and signs it with issuer, setting Signature.
// IssuerPubkey is filled in when empty; a different one is an error,
// since the result could never verify.
func (inv *Invite) Sign(issuer *Identity) error {
	switch inv.IssuerPubkey {
	case "":
		inv.IssuerPubkey = issuer.PublicHex()
	case issuer.PublicHex():
	default:
		return badInvite("issuerPubkey is not the signing identity's key")
	}
	if _, err := inv.validate(); err != nil {
		return err
	}
	s, err := inv.SignedString()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInvite, err)
	}
	inv.Signature = issuer.Sign(s)
	return nil
}

// Verify checks every field's shape (v 1, role member or admin, maxUses
// 1..10000, strict hex keys that are valid points, a canonical ULID
// inviteId, a valid slug, name and broker URL) and the issuer's signature.
// It does not check expiry (CheckExpiry) nor that the issuer may invite:
// only the broker knows that.
func (inv *Invite) Verify() error {
	issuer, err := inv.validate()
	if err != nil {
		return err
	}
	s, err := inv.SignedString()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInvite, err)
	}
	if err := Verify(issuer, s, inv.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrBadInvite, err)
	}
	return nil
}

// CheckExpiry returns ErrExpired once now has reached ExpiresAt.
func (inv *Invite) CheckExpiry(now time.Time) error {
	if now.UnixMilli() >= inv.ExpiresAt {
		return fmt.Errorf("%w: invite expired at %s", ErrExpired, time.UnixMilli(inv.ExpiresAt).UTC().Format(time.RFC3339))
	}
	return nil
}

// Token is base64url without padding of the invite's JSON, keys in struct
// order, byte-identical to the reference generator's JSON.stringify output.
// The invite must be signed.
func (inv *Invite) Token() (string, error) {
	if inv.Signature == "" {
		return "", badInvite("not signed")
	}
	// Default v2 options match JSON.stringify for the strings an invite can
	// hold: no HTML escaping, raw non-ASCII, and invalid UTF-8 refused.
	b, err := json.Marshal(inv)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadInvite, err)
	}
	return encodeB64URL(b), nil
}

// Link is the invite as "ic://join/<token>".
func (inv *Invite) Link() (string, error) {
	t, err := inv.Token()
	if err != nil {
		return "", err
	}
	return inviteLinkPrefix + t, nil
}

// inviteToken extracts the bare token from the forms users paste.
func inviteToken(s string) (string, error) {
	if t, ok := strings.CutPrefix(s, inviteLinkPrefix); ok {
		return t, nil
	}
	lower := strings.ToLower(s)
	if !strings.HasPrefix(lower, "https://") && !strings.HasPrefix(lower, "http://") {
		return s, nil // a bare token; its alphabet is checked by the decoder
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", badInvite("unparsable link: %v", err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", badInvite("link must be https://<host>/join/<token>")
	}
	// The escaped path, so percent-encoding cannot smuggle other bytes
	// into the token; a base64url token never needs escaping.
	p := u.EscapedPath()
	i := strings.LastIndex(p, "/join/")
	if i < 0 || strings.Contains(p[i+len("/join/"):], "/") {
		return "", badInvite("link must be https://<host>/join/<token>")
	}
	return p[i+len("/join/"):], nil
}

// ParseInvite accepts an invite as ic://join/<token>,
// https://<host>/join/<token> (or http), or a bare token, with surrounding
// white space. The token must be strict base64url without padding of one
// JSON object with no duplicate or unknown keys (in any order) and valid
// UTF-8. The token is returned exactly as presented, for the broker's
// byte-for-byte comparison with the registered one.
//
// ParseInvite does not verify: call Verify (and CheckExpiry) before acting
// on the invite. They are separate so callers can tell a malformed token
// from a bad signature (different wire error codes).
func ParseInvite(s string) (inv *Invite, token string, err error) {
	token, err = inviteToken(strings.TrimSpace(s))
	if err != nil {
		return nil, "", err
	}
	if token == "" || len(token) > maxInviteToken {
		return nil, "", badInvite("token must be 1 to %d characters", maxInviteToken)
	}
	raw, err := decodeB64URL(token)
	if err != nil {
		return nil, "", fmt.Errorf("%w: token: %w", ErrBadInvite, err)
	}
	inv = new(Invite)
	// go-json-experiment rejects duplicate names and invalid UTF-8 by
	// default; a duplicate key would let two readers see two invites.
	if err := json.Unmarshal(raw, inv, json.RejectUnknownMembers(true)); err != nil {
		return nil, "", fmt.Errorf("%w: token JSON: %v", ErrBadInvite, err)
	}
	return inv, token, nil
}
