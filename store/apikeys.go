package store

import (
	"bytes"
)

// API keys (01-protocol §6, 02-crypto "Other secrets"): a mesh's keys live in
// its "apikeys" bucket by id; the top-level "apikey_prefixes" bucket maps
// each key's 11-character prefix to its mesh and id, because a REST request
// presents only the secret. The secret itself is never stored, only its
// SHA-256.
var (
	bAPIKeys          = []byte("apikeys")         // per mesh: keyId → APIKey (JSON)
	bucketKeyPrefixes = []byte("apikey_prefixes") // top level: prefix → meshId ‖ 0 ‖ keyId
)

// APIKey is a stored API key.
type APIKey struct {
	ID           string   `json:"id"`
	Prefix       string   `json:"prefix"`
	Hash         string   `json:"hash"` // sha256 hex of the secret
	Label        string   `json:"label"`
	Capabilities []string `json:"capabilities"`
	Topics       []string `json:"topics,omitempty"`
	MemberID     string   `json:"memberId"`
	MemberPubkey string   `json:"memberPubkey"`
	CreatedAt    int64    `json:"createdAt"`
	ExpiresAt    int64    `json:"expiresAt,omitzero"`
	RevokedAt    int64    `json:"revokedAt,omitzero"`
}

func initAPIKeys(tx *Tx, mb *Bucket) error {
	if _, err := tx.CreateBucketIfNotExists(bucketKeyPrefixes); err != nil {
		return err
	}
	_, err := mb.CreateBucketIfNotExists(bAPIKeys)
	return err
}

// PutAPIKey stores a new key. A prefix already in use is ErrExists (the
// caller draws another secret).
func PutAPIKey(tx *Tx, meshID string, k *APIKey) error {
	b, err := topicSub(tx, meshID, bAPIKeys)
	if err != nil {
		return err
	}
	prefixes := tx.Bucket(bucketKeyPrefixes)
	if prefixes.Get([]byte(k.Prefix)) != nil {
		return ErrExists
	}
	if err := prefixes.Put([]byte(k.Prefix), cat([]byte(meshID), []byte{0}, []byte(k.ID))); err != nil {
		return err
	}
	return b.Put([]byte(k.ID), enc(k))
}

// UpdateAPIKey rewrites an existing key's record (revocation).
func UpdateAPIKey(tx *Tx, meshID string, k *APIKey) error {
	b, err := topicSub(tx, meshID, bAPIKeys)
	if err != nil {
		return err
	}
	if b.Get([]byte(k.ID)) == nil {
		return ErrNotFound
	}
	return b.Put([]byte(k.ID), enc(k))
}

// GetAPIKey loads a key by id.
func GetAPIKey(tx *Tx, meshID, id string) (*APIKey, error) {
	b, err := topicSub(tx, meshID, bAPIKeys)
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var k APIKey
	return &k, dec(v, &k)
}

// APIKeyByPrefix finds the mesh and key a secret's prefix names.
func APIKeyByPrefix(tx *Tx, prefix string) (meshID string, k *APIKey, err error) {
	pb := tx.Bucket(bucketKeyPrefixes)
	if pb == nil {
		return "", nil, ErrNotFound
	}
	v := pb.Get([]byte(prefix))
	i := bytes.IndexByte(v, 0)
	if i < 0 {
		return "", nil, ErrNotFound
	}
	meshID = string(v[:i])
	k, err = GetAPIKey(tx, meshID, string(v[i+1:]))
	return meshID, k, err
}

// ListAPIKeys returns a mesh's keys in id (creation) order.
func ListAPIKeys(tx *Tx, meshID string) ([]APIKey, error) {
	b, err := topicSub(tx, meshID, bAPIKeys)
	if err != nil {
		return nil, err
	}
	var out []APIKey
	err = b.ForEach(func(_, v []byte) error {
		var k APIKey
		if err := dec(v, &k); err != nil {
			return err
		}
		out = append(out, k)
		return nil
	})
	return out, err
}
