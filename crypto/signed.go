package crypto

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Prefixes of the signed strings. The version in each makes a signature
// for one purpose useless for any other, and lets a format change without
// old signatures verifying under new rules.
const (
	prefixChallenge     = "claudemesh/challenge/v1"
	prefixHello         = "claudemesh/hello/v1"
	prefixSessionAttest = "claudemesh/session-attest/v1"
	prefixSessionHello  = "claudemesh/session-hello/v1"
	prefixInvite        = "claudemesh/invite/v1"
	prefixMulti         = "claudemesh/multi/v1"
	prefixEnroll        = "claudemesh/enroll/v1"
	prefixTopicPost     = "claudemesh/topic-post/v1"
	prefixTopicSeal     = "claudemesh/topic-seal/v1"
	prefixAuditHead     = "claudemesh/audit-head/v1"
)

// isControl reports C0 controls, DEL and C1 controls (U+0080–U+009F).
func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f)
}

// checkField refuses what would make a signed string ambiguous: '|' would
// let two different field lists join to the same bytes, and control
// characters (and invalid UTF-8) could hide or reorder text when a human
// compares what was signed.
func checkField(name, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadField, name)
	}
	for _, r := range v {
		if r == '|' {
			return fmt.Errorf("%w: %s contains '|'", ErrBadField, name)
		}
		if isControl(r) {
			return fmt.Errorf("%w: %s contains control character %U", ErrBadField, name, r)
		}
	}
	return nil
}

// field pairs a name (for error messages) with a value.
type field struct{ name, value string }

// join checks every field and joins prefix and fields with '|'.
func join(prefix string, fields ...field) (string, error) {
	var b strings.Builder
	b.WriteString(prefix)
	for _, f := range fields {
		if err := checkField(f.name, f.value); err != nil {
			return "", err
		}
		b.WriteByte('|')
		b.WriteString(f.value)
	}
	return b.String(), nil
}

// itoa writes a non-negative integer in base 10; a negative one has no
// place in a signed string ("no sign"), so it is an error.
func itoa(name string, v int64) (field, error) {
	if v < 0 {
		return field{}, fmt.Errorf("%w: %s is negative", ErrBadField, name)
	}
	return field{name, strconv.FormatInt(v, 10)}, nil
}

// keyGenField also refuses 0: topic key generations start at 1.
func keyGenField(keyGen int) (field, error) {
	if keyGen < 1 {
		return field{}, fmt.Errorf("%w: keyGen must be at least 1", ErrBadField)
	}
	return field{"keyGen", strconv.Itoa(keyGen)}, nil
}

// ChallengeString is what the broker signs in its first frame:
// claudemesh/challenge/v1|<nonce>|<serverTimeMs>.
func ChallengeString(nonceHex string, serverTimeMs int64) (string, error) {
	ts, err := itoa("serverTime", serverTimeMs)
	if err != nil {
		return "", err
	}
	return join(prefixChallenge, field{"nonce", nonceHex}, ts)
}

// HelloString is what a member key signs in hello:
// claudemesh/hello/v1|<meshId>|<memberId>|<memberPubkey>|<brokerPubkey>|<timestampMs>|<challenge>.
func HelloString(meshID, memberID, memberPubkey, brokerPubkey string, timestampMs int64, challenge string) (string, error) {
	ts, err := itoa("timestamp", timestampMs)
	if err != nil {
		return "", err
	}
	return join(prefixHello,
		field{"meshId", meshID}, field{"memberId", memberID},
		field{"memberPubkey", memberPubkey}, field{"brokerPubkey", brokerPubkey},
		ts, field{"challenge", challenge})
}

// SessionAttestString is what a member (parent) key signs to vouch for a
// session key:
// claudemesh/session-attest/v1|<meshId>|<parentPubkey>|<sessionPubkey>|<expiresAtMs>.
func SessionAttestString(meshID, parentPubkey, sessionPubkey string, expiresAtMs int64) (string, error) {
	exp, err := itoa("expiresAt", expiresAtMs)
	if err != nil {
		return "", err
	}
	return join(prefixSessionAttest,
		field{"meshId", meshID}, field{"parentPubkey", parentPubkey},
		field{"sessionPubkey", sessionPubkey}, exp)
}

// SessionHelloString is what a session key signs in session_hello:
// claudemesh/session-hello/v1|<meshId>|<parentPubkey>|<sessionPubkey>|<brokerPubkey>|<timestampMs>|<challenge>.
func SessionHelloString(meshID, parentPubkey, sessionPubkey, brokerPubkey string, timestampMs int64, challenge string) (string, error) {
	ts, err := itoa("timestamp", timestampMs)
	if err != nil {
		return "", err
	}
	return join(prefixSessionHello,
		field{"meshId", meshID}, field{"parentPubkey", parentPubkey},
		field{"sessionPubkey", sessionPubkey}, field{"brokerPubkey", brokerPubkey},
		ts, field{"challenge", challenge})
}

// EnrollString is what a joiner's new member key signs at POST /v1/join:
// claudemesh/enroll/v1|<meshId>|<inviteId>|<newPubkey>|<displayName>|<timestampMs>.
func EnrollString(meshID, inviteID, newPubkey, displayName string, timestampMs int64) (string, error) {
	ts, err := itoa("timestamp", timestampMs)
	if err != nil {
		return "", err
	}
	return join(prefixEnroll,
		field{"meshId", meshID}, field{"inviteId", inviteID},
		field{"newPubkey", newPubkey}, field{"displayName", displayName}, ts)
}

// MultiString is what the sender signs for a multi-recipient message:
// claudemesh/multi/v1|<meshId>|<targetSpec>|<nonce_b64>|<sha256hex(ciphertext)>.
// It binds the ciphertext to the sender, so a recipient who learns the
// content key cannot pair other ciphertext with the sender's key boxes.
func MultiString(meshID, targetSpec, nonceB64 string, ciphertext []byte) (string, error) {
	return join(prefixMulti,
		field{"meshId", meshID}, field{"targetSpec", targetSpec},
		field{"nonce", nonceB64}, field{"ciphertextHash", SHA256Hex(ciphertext)})
}

// TopicPostString is what the sender signs for a topic message:
// claudemesh/topic-post/v1|<meshId>|<topicId>|<g>|<nonce_b64>|<sha256hex(ciphertext)>.
func TopicPostString(meshID, topicID string, keyGen int, nonceB64 string, ciphertext []byte) (string, error) {
	g, err := keyGenField(keyGen)
	if err != nil {
		return "", err
	}
	return join(prefixTopicPost,
		field{"meshId", meshID}, field{"topicId", topicID}, g,
		field{"nonce", nonceB64}, field{"ciphertextHash", SHA256Hex(ciphertext)})
}

// TopicSealString is what the sealer's member key signs for a sealed topic
// key:
// claudemesh/topic-seal/v1|<meshId>|<topicId>|<g>|<recipientPubkey>|<nonce_b64>|<sha256hex(blob)>.
func TopicSealString(meshID, topicID string, keyGen int, recipientPubkey, nonceB64 string, blob []byte) (string, error) {
	g, err := keyGenField(keyGen)
	if err != nil {
		return "", err
	}
	return join(prefixTopicSeal,
		field{"meshId", meshID}, field{"topicId", topicID}, g,
		field{"recipientPubkey", recipientPubkey}, field{"nonce", nonceB64},
		field{"blobHash", SHA256Hex(blob)})
}

// AuditHeadString is what the broker signs for an audit checkpoint:
// claudemesh/audit-head/v1|<meshId>|<seq>|<headHash>.
func AuditHeadString(meshID string, seq uint64, headHash string) (string, error) {
	return join(prefixAuditHead,
		field{"meshId", meshID}, field{"seq", strconv.FormatUint(seq, 10)},
		field{"headHash", headHash})
}
