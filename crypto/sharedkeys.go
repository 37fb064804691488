package crypto

import "sync"

// sharedKeysMax bounds the process's cache of box keys: 16,384 pairs is
// about 2 MB, more than a daemon's peers times its identities, and enough
// for a bench of 100 peers DMing each other to hit it most of the time.
const sharedKeysMax = 16384

// sharedKeys caches Precompute's results per (self, peer): the peer key's
// point decoding and the X25519 multiplication cost ~50× sealing or opening
// a message with the precomputed key, and a client boxes to and opens from
// the same few peers over and over (a broadcast's recipients each open a key
// entry from the same sender). The key includes self's public key, which
// only its own secret key has (an Identity derives both from its seed), so
// one identity never gets another's key.
var sharedKeys = struct {
	sync.Mutex
	m map[[64]byte]*SharedKey
}{m: make(map[[64]byte]*SharedKey)}

func cachedSharedKey(id *[64]byte) *SharedKey {
	sharedKeys.Lock()
	defer sharedKeys.Unlock()
	return sharedKeys.m[*id]
}

func cacheSharedKey(id *[64]byte, k *SharedKey) {
	sharedKeys.Lock()
	defer sharedKeys.Unlock()
	if len(sharedKeys.m) >= sharedKeysMax {
		for old := range sharedKeys.m { // one arbitrary entry out: bounded, and no cliff
			delete(sharedKeys.m, old)
			break
		}
	}
	sharedKeys.m[*id] = k
}
