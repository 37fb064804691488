package verbs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	json "github.com/go-json-experiment/json"
	"golang.org/x/sys/unix"

	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
)

// The cold inbox's memory of what it printed (04-cli "Cold inbox"): a
// message whose client_ack was lost comes again, and a broker could replay
// old ciphertext under a new id; neither may be printed twice.
const (
	seenFileName = "inbox-seen.json"
	seenLockName = "inbox-seen.lock"
	// maxSeen is how many message ids (and as many sender/nonce keys) are
	// kept per mesh, newest last.
	maxSeen = 10000
)

type seenFile struct {
	Version int                  `json:"version"`
	Meshes  map[string]*seenMesh `json:"meshes"` // by meshId
}

type seenMesh struct {
	IDs []string `json:"ids"`
	// Nonces are sha256(senderPubkey|nonce) truncated to 16 bytes, hex:
	// enough to recognise a replay, and a third of the raw size.
	Nonces []string `json:"nonces"`
}

// seenStore is inbox-seen.json held under an exclusive lock, so two inbox
// runs in the same home (a cold inbox beside an inbox --follow) cannot both
// print a message. Hold it only across check, print and save.
type seenStore struct {
	path   string
	lock   *os.File
	data   seenFile
	ids    map[string]map[string]bool
	nonces map[string]map[string]bool
}

func lockSeen(home string) (*seenStore, error) {
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(home, seenLockName), os.O_RDWR|os.O_CREATE, 0o600)
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
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	s := &seenStore{path: filepath.Join(home, seenFileName), lock: f,
		ids: map[string]map[string]bool{}, nonces: map[string]map[string]bool{}}
	if err := s.load(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (s *seenStore) load() error {
	s.data = seenFile{Version: 1, Meshes: map[string]*seenMesh{}}
	raw, err := fsutil.ReadPrivateFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &s.data); err != nil || s.data.Version != 1 {
		return cliui.Errorf("bad_state", "%s is unreadable: %v", s.path, err).
			WithHint("remove it (it only remembers which messages inbox already showed)")
	}
	if s.data.Meshes == nil {
		s.data.Meshes = map[string]*seenMesh{}
	}
	for mesh, sm := range s.data.Meshes {
		s.ids[mesh] = setOf(sm.IDs)
		s.nonces[mesh] = setOf(sm.Nonces)
	}
	return nil
}

func setOf(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[v] = true
	}
	return m
}

func nonceKey(sender, nonce string) string {
	h := sha256.Sum256([]byte(sender + "|" + nonce))
	return hex.EncodeToString(h[:16])
}

// has reports whether the message was printed before, by id or by
// (sender, nonce).
func (s *seenStore) has(meshID, id, sender, nonce string) bool {
	if s.ids[meshID][id] {
		return true
	}
	return nonce != "" && s.nonces[meshID][nonceKey(sender, nonce)]
}

func (s *seenStore) add(meshID, id, sender, nonce string) {
	sm := s.data.Meshes[meshID]
	if sm == nil {
		sm = &seenMesh{}
		s.data.Meshes[meshID] = sm
		s.ids[meshID] = map[string]bool{}
		s.nonces[meshID] = map[string]bool{}
	}
	if id != "" && !s.ids[meshID][id] {
		s.ids[meshID][id] = true
		sm.IDs = append(sm.IDs, id)
	}
	if nonce != "" {
		if k := nonceKey(sender, nonce); !s.nonces[meshID][k] {
			s.nonces[meshID][k] = true
			sm.Nonces = append(sm.Nonces, k)
		}
	}
}

// save writes the file atomically (0600), keeping the newest maxSeen
// entries of each list.
func (s *seenStore) save() error {
	for _, sm := range s.data.Meshes {
		if n := len(sm.IDs); n > maxSeen {
			sm.IDs = append([]string(nil), sm.IDs[n-maxSeen:]...)
		}
		if n := len(sm.Nonces); n > maxSeen {
			sm.Nonces = append([]string(nil), sm.Nonces[n-maxSeen:]...)
		}
	}
	data, err := json.Marshal(&s.data, json.Deterministic(true))
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(s.path, append(data, '\n'), 0o600)
}

// close releases the lock (closing the descriptor drops the flock).
func (s *seenStore) close() { s.lock.Close() }
