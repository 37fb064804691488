package config

import (
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"claudemesh/internal/fsutil"
)

// AuditHeadsName is the file, in the home directory, that remembers the
// last audit-chain head verified per mesh (`audit verify` and the daemon's
// daily check). It is what turns a later rollback or rewrite of a mesh's
// history by its broker into a finding: a broker can always present a
// self-consistent chain, but not one that agrees with a head a member
// already verified unless it kept that history.
const AuditHeadsName = "audit-heads.json"

// AuditHead is a verified chain head.
type AuditHead struct {
	Seq        uint64 `json:"seq"`
	Hash       string `json:"hash"`
	VerifiedAt string `json:"verifiedAt"` // RFC 3339 UTC
}

type auditHeadsFile struct {
	Version int                  `json:"version"`
	Meshes  map[string]AuditHead `json:"meshes"` // by meshId
}

func auditHeadsPath(home string) string { return filepath.Join(home, AuditHeadsName) }

// AuditHeads returns the last verified head of every mesh (by mesh id); an
// absent file is an empty map. A file readable by others is refused like
// config.json.
func AuditHeads(home string) (map[string]AuditHead, error) {
	data, err := fsutil.ReadPrivateFile(auditHeadsPath(home))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]AuditHead{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f auditHeadsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Meshes == nil {
		f.Meshes = map[string]AuditHead{}
	}
	return f.Meshes, nil
}

// RecordAuditHead remembers h as mesh's last verified head, unless a newer
// one (higher seq) was recorded meanwhile by another process — the CLI and
// the daemon verify independently. The file is written 0600, atomically,
// under the home's lock.
func RecordAuditHead(home, meshID string, h AuditHead) error {
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return err
	}
	unlock, err := lock(filepath.Join(home, LockName))
	if err != nil {
		return err
	}
	defer unlock()
	heads, err := AuditHeads(home)
	if err != nil {
		return err
	}
	if cur, ok := heads[meshID]; ok && cur.Seq > h.Seq {
		return nil
	}
	heads[meshID] = h
	data, err := json.Marshal(auditHeadsFile{Version: 1, Meshes: heads}, jsontext.WithIndent("  "), json.Deterministic(true))
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(auditHeadsPath(home), append(data, '\n'), 0o600)
}

// AuditHashesDir holds, per mesh, the hash of every audit entry verified on
// this machine (`<meshId>.hashes`: entry n's 32 raw bytes at offset
// 32·(n−1)). The head alone proves that a broker rewrote history at or
// before it; the hashes name the first entry it changed, since in a hash
// chain every entry from the first changed one on hashes differently and
// every entry before it the same.
const AuditHashesDir = "audit-hashes"

func auditHashesPath(home, meshID string) string {
	return filepath.Join(home, AuditHashesDir, meshID+".hashes")
}

// AuditHashes returns the hashes (lowercase hex) of the entries verified
// here for meshID, oldest first; none when nothing was recorded.
func AuditHashes(home, meshID string) ([]string, error) {
	if !safeFileName(meshID) {
		return nil, errors.New("audit hashes: bad mesh id")
	}
	data, err := fsutil.ReadPrivateFile(auditHashesPath(home, meshID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(data)%32 != 0 {
		return nil, errors.New("audit hashes: " + auditHashesPath(home, meshID) + " is truncated")
	}
	out := make([]string, len(data)/32)
	for i := range out {
		out[i] = hex.EncodeToString(data[32*i : 32*i+32])
	}
	return out, nil
}

// RecordAuditHashes remembers the hashes of a verified chain (entries 1 to
// len(hashes)), unless a longer one was recorded meanwhile. Written 0600,
// atomically, under the home's lock.
func RecordAuditHashes(home, meshID string, hashes []string) error {
	if !safeFileName(meshID) {
		return errors.New("audit hashes: bad mesh id")
	}
	data := make([]byte, 0, 32*len(hashes))
	for _, h := range hashes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			return errors.New("audit hashes: not a 32-byte hex hash: " + h)
		}
		data = append(data, b...)
	}
	dir := filepath.Join(home, AuditHashesDir)
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return err
	}
	unlock, err := lock(filepath.Join(home, LockName))
	if err != nil {
		return err
	}
	defer unlock()
	if cur, err := os.Stat(auditHashesPath(home, meshID)); err == nil && cur.Size() > int64(len(data)) {
		return nil
	}
	return fsutil.WriteFileAtomic(auditHashesPath(home, meshID), data, 0o600)
}

// safeFileName: a mesh id (a ULID) names a file; nothing else may.
func safeFileName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return true
}

// ReplaceAuditHistory makes h and hashes (entries 1 to h.Seq) mesh's
// verified history, in place of the one recorded, even if that one was
// longer: what `audit verify --accept` does once the member has checked out
// of band that the broker's history changed for a good reason (a restored
// backup). The hashes it replaces are kept beside it, as
// `<meshId>.<time>.replaced.hashes`, whose path it returns ("" when none
// was recorded): the evidence of what was verified here before.
func ReplaceAuditHistory(home, meshID string, h AuditHead, hashes []string, now string) (string, error) {
	if !safeFileName(meshID) {
		return "", errors.New("audit hashes: bad mesh id")
	}
	data := make([]byte, 0, 32*len(hashes))
	for _, x := range hashes {
		b, err := hex.DecodeString(x)
		if err != nil || len(b) != 32 {
			return "", errors.New("audit hashes: not a 32-byte hex hash: " + x)
		}
		data = append(data, b...)
	}
	dir := filepath.Join(home, AuditHashesDir)
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return "", err
	}
	unlock, err := lock(filepath.Join(home, LockName))
	if err != nil {
		return "", err
	}
	defer unlock()
	// The evidence first, as a copy: a failure before the new hashes are
	// in place leaves the recorded history as it was.
	kept := ""
	cur := auditHashesPath(home, meshID)
	if old, err := fsutil.ReadPrivateFile(cur); err == nil {
		kept = filepath.Join(dir, meshID+"."+now+".replaced.hashes")
		if err := fsutil.WriteFileAtomic(kept, old, 0o600); err != nil {
			return "", err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := fsutil.WriteFileAtomic(cur, data, 0o600); err != nil {
		return kept, err
	}
	heads, err := AuditHeads(home)
	if err != nil {
		return kept, err
	}
	heads[meshID] = h
	out, err := json.Marshal(auditHeadsFile{Version: 1, Meshes: heads}, jsontext.WithIndent("  "), json.Deterministic(true))
	if err != nil {
		return kept, err
	}
	return kept, fsutil.WriteFileAtomic(auditHeadsPath(home), append(out, '\n'), 0o600)
}
