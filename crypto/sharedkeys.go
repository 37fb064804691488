package crypto

import (
	"sync"

	"filippo.io/edwards25519"
)

// Two process-wide caches of pure functions of public keys, each bounded:
// a client checks and boxes to the same few keys over and over (every DM
// it opens names its sender's key, a broadcast's recipients each open a key
// entry from the same sender), and both computations cost ~100× what the
// message itself does.
const (
	// sharedKeysMax: 16,384 box keys is about 2 MB, more than a daemon's
	// peers times its identities, and enough for a bench of 100 peers
	// DMing each other to hit it most of the time.
	sharedKeysMax = 16384
	// validKeysMax: 16,384 keys known valid with their points, about
	// 4 MB.
	validKeysMax = 16384
)

// sharedKeys caches Precompute's results per (self, peer). The key
// includes self's public key, which only its own secret key has (an
// Identity derives both from its seed), so one identity never gets
// another's key.
var sharedKeys = newBoundedCache[[64]byte, *SharedKey](sharedKeysMax)

// validKeys holds the public keys ValidatePublicKey accepted, each with
// its negated point (what Verify adds): its subgroup check is a full
// scalar multiplication, the point's decompression a field square root,
// and they ran for every key parsed and every signature verified. Only
// accepted keys are kept; a refused one is checked again each time.
var validKeys = newBoundedCache[PublicKey, *edwards25519.Point](validKeysMax)

// boundedCache is a map of at most max entries; past it one arbitrary entry
// makes room for each new one (bounded, and no cliff of a full clear).
type boundedCache[K comparable, V any] struct {
	mu  sync.Mutex
	max int
	m   map[K]V
}

func newBoundedCache[K comparable, V any](max int) *boundedCache[K, V] {
	return &boundedCache[K, V]{max: max, m: make(map[K]V)}
}

func (c *boundedCache[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *boundedCache[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = v
}

func (c *boundedCache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
