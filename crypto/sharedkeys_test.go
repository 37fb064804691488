package crypto

import (
	"bytes"
	"testing"
)

// Precompute computes a pair's key once and keeps it per (self, peer): the
// same key object again for the same pair, the same value from the other
// side, and never another identity's key.
func TestPrecomputeCachesPerPair(t *testing.T) {
	ids := make([]*Identity, 3)
	for i := range ids {
		var err error
		if ids[i], err = IdentityFromSeed(bytes.Repeat([]byte{byte(0x70 + i)}, 32)); err != nil {
			t.Fatal(err)
		}
	}
	alice, bob, carol := ids[0], ids[1], ids[2]
	k1, err := Precompute(bob.Public(), alice)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := Precompute(bob.Public(), alice)
	if k1 != k2 {
		t.Fatal("the same pair's key was computed again")
	}
	px, _ := bob.Public().X25519()
	fresh, _ := boxKey(&alice.xsec, px[:])
	if *fresh != *k1 {
		t.Fatal("the cached key is not the pair's key")
	}
	kb, _ := Precompute(alice.Public(), bob)
	if *kb != *k1 || kb == k1 {
		t.Fatal("the other side's key must be equal, and its own entry")
	}
	kc, _ := Precompute(bob.Public(), carol)
	if *kc == *k1 {
		t.Fatal("carol got alice's key for bob")
	}
	// A bad peer key is refused every time, and never cached.
	var bad PublicKey // the identity point: refused by validation
	for range 2 {
		if _, err := Precompute(bad, alice); err == nil {
			t.Fatal("a bad peer key was accepted")
		}
	}
}

// The cache stays within its bound however many pairs go through it. (A
// cache of its own: made-up entries never reach the process's.)
func TestSharedKeysBounded(t *testing.T) {
	c := newBoundedCache[[64]byte, *SharedKey](sharedKeysMax)
	var k SharedKey
	for i := range sharedKeysMax + 100 {
		var id [64]byte
		id[0], id[1], id[2], id[63] = byte(i), byte(i>>8), byte(i>>16), 0xee
		c.put(id, &k)
	}
	if n := c.len(); n > sharedKeysMax {
		t.Fatalf("%d cached keys, bound %d", n, sharedKeysMax)
	}
}

// ValidatePublicKey remembers the keys it accepted, never one it refused,
// and stays within its bound.
func TestValidKeysCached(t *testing.T) {
	id, err := IdentityFromSeed(bytes.Repeat([]byte{0x7a}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidatePublicKey(id.Public()); err != nil {
		t.Fatal(err)
	}
	if _, ok := validKeys.get(id.Public()); !ok {
		t.Fatal("an accepted key was not remembered")
	}
	var bad PublicKey // the identity point: of small order
	for range 2 {
		if ValidatePublicKey(bad) == nil {
			t.Fatal("a key of small order was accepted")
		}
	}
	if _, ok := validKeys.get(bad); ok {
		t.Fatal("a refused key was remembered")
	}
	c := newBoundedCache[PublicKey, struct{}](validKeysMax) // made-up keys stay out of the process's
	for i := range validKeysMax + 100 {
		var p PublicKey
		p[0], p[1], p[2], p[31] = byte(i), byte(i>>8), byte(i>>16), 0xee
		c.put(p, struct{}{})
	}
	if n := c.len(); n > validKeysMax {
		t.Fatalf("%d remembered keys, bound %d", n, validKeysMax)
	}
}
