package crypto

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzDecodeB64 checks that the decoder accepts exactly one spelling per
// byte string: whatever it accepts must re-encode to the same text.
func FuzzDecodeB64(f *testing.F) {
	v := loadVectors(f)
	for _, s := range []string{v.Box.Nonce, v.Box.Ciphertext, v.Multi.Keys[0].Box, v.Signed.TopicSeal.Blob, "", "AA==", "AAA=", "AB==", "AAAA\r\n"} {
		f.Add(s)
	}
	for _, m := range v.MalformedInputs {
		f.Add(m.Value)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeB64(s)
		if err != nil {
			return
		}
		if got := EncodeB64(b); got != s {
			t.Fatalf("DecodeB64(%q) accepted a non-canonical spelling of %q", s, got)
		}
		if _, err := DecodeB64Len(s, len(b)); err != nil {
			t.Fatalf("DecodeB64Len(%q, %d): %v", s, len(b), err)
		}
	})
}

// FuzzParseInvite checks that ParseInvite never panics, that the token it
// returns was really in the input, and that an invite that verifies
// survives re-encoding.
func FuzzParseInvite(f *testing.F) {
	v := loadVectors(f)
	vi := v.Signed.Invite
	f.Add(vi.Link)
	f.Add(vi.Token)
	f.Add(" https://broker.example.com/join/" + vi.Token + "\n")
	f.Add(vi.Token + "==")
	f.Add(encodeB64URL([]byte(strings.Replace(vi.TokenJSON, `"v":1`, `"v":1,"v":1`, 1))))
	f.Add(encodeB64URL([]byte(strings.Replace(vi.TokenJSON, `"Team"`, `"Evil"`, 1))))
	f.Add("ic://join/")
	f.Fuzz(func(t *testing.T, s string) {
		inv, tok, err := ParseInvite(s)
		if err != nil {
			return
		}
		if tok == "" || !strings.Contains(s, tok) {
			t.Fatalf("returned token %q is not in the input", tok)
		}
		if inv.Verify() != nil {
			return
		}
		again, err := inv.Token()
		if err != nil {
			t.Fatal(err)
		}
		inv2, _, err := ParseInvite(again)
		if err != nil || !reflect.DeepEqual(inv2, inv) {
			t.Fatalf("re-encoded invite does not round-trip: %v", err)
		}
	})
}

// FuzzOpenMulti feeds mutated envelopes to bob. Without alice's or bob's
// secret nobody can make another envelope that opens, so anything that
// opens must be exactly the vector.
func FuzzOpenMulti(f *testing.F) {
	v := loadVectors(f)
	vm := v.Multi
	alice, bob := v.pub(f, "alice"), v.identity(f, "bob")
	k := vm.Keys[0]
	f.Add(vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, k.Nonce, k.Box)
	f.Add("@ops", vm.Nonce, vm.Ciphertext, vm.Signature, k.Nonce, k.Box)
	f.Add(vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, vm.Keys[1].Nonce, vm.Keys[1].Box)
	f.Add(vm.TargetSpec, vm.Nonce, vm.Ciphertext+"\n", vm.Signature, k.Nonce, k.Box)
	f.Add(vm.TargetSpec, "", "", "", "", "")
	f.Fuzz(func(t *testing.T, target, nonce, ct, sig, keyNonce, keyBox string) {
		key := MultiKey{To: k.To, Nonce: keyNonce, Box: keyBox}
		pt, err := OpenMulti(vm.MeshID, target, nonce, ct, sig, key, alice, bob)
		if err != nil {
			return
		}
		if target != vm.TargetSpec || nonce != vm.Nonce || ct != vm.Ciphertext || sig != vm.Signature ||
			keyNonce != k.Nonce || keyBox != k.Box || string(pt) != vm.Plaintext {
			t.Fatalf("opened a forged envelope: %q", pt)
		}
	})
}
