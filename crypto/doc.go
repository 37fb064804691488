// Package crypto holds every cryptographic primitive, encoding and signed
// string that claudemesh puts on the wire or on disk (spec 02-crypto.md).
//
// It exists so that the broker, the daemon and the CLI cannot drift apart
// from each other or from libsodium: one small, misuse-resistant API in the
// spirit of filippo.io/age, where the caller hands over keys and plaintext
// and gets back exactly the strings the protocol carries. Decoders are
// strict (a value has one accepted spelling), public keys are validated
// before every use, signatures are checked before anything is decrypted,
// and signed strings refuse fields that could make two different messages
// sign the same bytes. Every format is byte-compatible with libsodium
// (crypto_sign, crypto_box_easy, crypto_secretbox_easy), which the test
// vectors in testdata/crypto-vectors.json prove.
//
// Errors wrap the package's sentinel errors (ErrBadKey, ErrBadSignature,
// ErrDecrypt, …) so callers can map them to wire error codes with
// errors.Is. Identities and shared keys are immutable once made and safe
// for concurrent use; the package has no mutable global state.
package crypto
