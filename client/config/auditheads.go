package config

import (
	"errors"
	"io/fs"
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
