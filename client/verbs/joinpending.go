package verbs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/fsutil"
	"claudemesh/wire"
)

// A join's key is saved in the home before the enrolment is asked for
// (join-pending/<digest of meshId>.json, 0600): a join stopped by what it cannot
// catch (SIGKILL, an OOM kill, a crash, a laptop's lid) after the broker
// enrolled the key left a member whose key existed nowhere, a spent
// invite use, and a retry told only "name is taken". A join of the same
// mesh finds the saved key and asks again with it; the broker's answer to
// a key it enrolled already is that member, so the retry completes the
// join. The file goes once the join is saved in config.json, or once the
// broker refused the key for good (it enrolled nothing).

type pendingJoin struct {
	MeshID      string `json:"meshId"`
	Pubkey      string `json:"pubkey"`
	SecretKey   string `json:"secretKey"`
	DisplayName string `json:"displayName"`
	CreatedAt   int64  `json:"createdAt"`
}

// pendingJoinPath names the file by a digest of meshID, never by meshID
// itself: the id comes from an invite link, which anyone can sign with a
// key of their own (only the broker knows whether the issuer may invite),
// so "../config" would otherwise name the home's config.json and
// "../../x" a file outside the home. The file holds meshID, compared on
// read.
func pendingJoinPath(home, meshID string) string {
	sum := sha256.Sum256([]byte(meshID))
	return filepath.Join(home, "join-pending", hex.EncodeToString(sum[:16])+".json")
}

// pendingJoinKey is the key a join of meshID asks with: the one a join
// before it saved, or a new one, saved now. resumed says which.
func pendingJoinKey(home, meshID, display string) (key *cmcrypto.Identity, resumed bool, err error) {
	path := pendingJoinPath(home, meshID)
	adoptLegacyPendingJoin(home, meshID, path)
	if data, err := fsutil.ReadPrivateFile(path); err == nil {
		var p pendingJoin
		if json.Unmarshal(data, &p) == nil && p.MeshID == meshID {
			if k, err := cmcrypto.ParseSecretKey(p.SecretKey); err == nil && k.PublicHex() == p.Pubkey {
				return k, true, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	key, err = cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, false, err
	}
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return nil, false, err
	}
	if err := fsutil.EnsurePrivateDir(filepath.Dir(path)); err != nil {
		return nil, false, err
	}
	data, err := json.Marshal(pendingJoin{MeshID: meshID, Pubkey: key.PublicHex(), SecretKey: key.SecretKeyHex(),
		DisplayName: display, CreatedAt: time.Now().UnixMilli()})
	if err != nil {
		return nil, false, err
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, false, err
	}
	return key, false, nil
}

// adoptLegacyPendingJoin moves a key saved under the earlier name
// (join-pending/<meshId>.json) to path, so a join killed before an
// upgrade still completes after it. Only an id that is a plain name is
// looked up: a broker's mesh ids are ULIDs.
func adoptLegacyPendingJoin(home, meshID, path string) {
	if len(meshID) == 0 || len(meshID) > 64 {
		return
	}
	for _, r := range meshID {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return
		}
	}
	legacy := filepath.Join(home, "join-pending", meshID+".json")
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		os.Rename(legacy, path) // absent is the common case
	}
}

// dropPendingJoin removes meshID's saved join key (and the directory, once
// empty).
func dropPendingJoin(home, meshID string) {
	path := pendingJoinPath(home, meshID)
	os.Remove(path)
	os.Remove(filepath.Dir(path)) // only if empty
}

// refusedForGood says whether a join refused with code enrolled nothing,
// so its saved key can go: the broker's own refusals. A transport error, a
// timeout or an interruption leaves it unknown, and the key stays for the
// next try.
func refusedForGood(code string) bool {
	switch code {
	case wire.CodeNameTaken, wire.CodeInviteExpired, wire.CodeInviteRevoked, wire.CodeInviteExhausted,
		wire.CodeInviteNotFound, wire.CodeRevoked, wire.CodeIssuerNotAdmin, wire.CodeBadSignature,
		wire.CodeMalformed, wire.CodeInvalidArgument, wire.CodeForbidden:
		return true
	}
	return false
}
