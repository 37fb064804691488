package verbs

import (
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
// (join-pending/<meshId>.json, 0600): a join stopped by what it cannot
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

func pendingJoinPath(home, meshID string) string {
	return filepath.Join(home, "join-pending", meshID+".json")
}

// pendingJoinKey is the key a join of meshID asks with: the one a join
// before it saved, or a new one, saved now. resumed says which.
func pendingJoinKey(home, meshID, display string) (key *cmcrypto.Identity, resumed bool, err error) {
	path := pendingJoinPath(home, meshID)
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
