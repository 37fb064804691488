package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"

	json "github.com/go-json-experiment/json"
)

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// pk turns a validated 64-hex public key into its 32 raw bytes, so keys that
// sort and prefix-scan by recipient stay short.
func pk(hexKey string) []byte {
	b, err := hex.DecodeString(hexKey)
	if err != nil || len(b) != 32 {
		// Callers validate keys at the edge; reaching here is a bug that
		// must not silently write under a wrong key.
		panic(fmt.Sprintf("store: invalid pubkey %q", hexKey))
	}
	return b
}

func hexKey(raw []byte) string { return hex.EncodeToString(raw) }

func cat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func enc(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: encoding %T: %v", v, err))
	}
	return b
}

func dec(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("store: corrupt record %T: %w", v, err)
	}
	return nil
}
