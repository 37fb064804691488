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

// The cache stays within its bound however many pairs go through it.
func TestSharedKeysBounded(t *testing.T) {
	var k SharedKey
	for i := range sharedKeysMax + 100 {
		var id [64]byte
		id[0], id[1], id[2], id[63] = byte(i), byte(i>>8), byte(i>>16), 0xee
		cacheSharedKey(&id, &k)
	}
	sharedKeys.Lock()
	n := len(sharedKeys.m)
	sharedKeys.Unlock()
	if n > sharedKeysMax {
		t.Fatalf("%d cached keys, bound %d", n, sharedKeysMax)
	}
}
