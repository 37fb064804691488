// gen-vectors.mjs regenerates crypto-vectors.json with libsodium, from the
// fixed seeds, nonces, ids and timestamps below, so that the Go package
// claudemesh/crypto is tested against an independent implementation.
//
//   npm install            # libsodium-wrappers 0.8.4, pinned in package.json
//   node gen-vectors.mjs > crypto-vectors.json
//   node gen-vectors.mjs --check crypto-vectors.json   # exit 1 if it differs
//
// Everything cryptographic comes from libsodium except SHA-256 (used in the
// signed strings and the safety number), which the standard libsodium.js
// build does not export; node:crypto supplies it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import sodiumModule from 'libsodium-wrappers';

await sodiumModule.ready;
const sodium = sodiumModule;
const LIBSODIUM_WRAPPERS_VERSION = '0.8.4';

// ---- helpers -------------------------------------------------------------

const fill = (byte, n) => new Uint8Array(n).fill(byte);
const hex = (b) => sodium.to_hex(b);
const b64 = (b) => sodium.to_base64(b, sodium.base64_variants.ORIGINAL);
const b64url = (b) => sodium.to_base64(b, sodium.base64_variants.URLSAFE_NO_PADDING);
const utf8 = (s) => sodium.from_string(s);
const sha256hex = (b) => createHash('sha256').update(b).digest('hex');
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

// Signed strings: fields joined by '|' (02-crypto "Signed strings").
const joinFields = (...fields) => {
  for (const f of fields.slice(1)) {
    if (/[|\u0000-\u001f\u007f-\u009f]/.test(String(f))) throw new Error(`bad field ${JSON.stringify(f)}`);
  }
  return fields.join('|');
};

// ---- fixed inputs ----------------------------------------------------------

const seeds = { alice: 0x01, bob: 0x02, carol: 0x03, broker: 0x09, aliceSession: 0x04 };
const meshId = '01JDQM9S346Q3D25VT4F5V37E3';
const memberId = '01JDQS3E28JT97KB6CQ643DZVM';
const timestampMs = 1764093600000; // 2025-11-25T18:00:00Z
const challengeNonce = 'ab'.repeat(32);
const attestationExpiresAt = timestampMs + 12 * 3600 * 1000;
const topicId = '01JDQ24MNPZX45HY43KWJRP1XP';
const inviteId = '01JDQXXQKFBF5KZNWJ47TAN9ZT';

// ---- identities ----------------------------------------------------------

const keys = {};
const identities = {};
for (const [name, byte] of Object.entries(seeds)) {
  const seed = fill(byte, 32);
  const kp = sodium.crypto_sign_seed_keypair(seed);
  const xpk = sodium.crypto_sign_ed25519_pk_to_curve25519(kp.publicKey);
  const xsk = sodium.crypto_sign_ed25519_sk_to_curve25519(kp.privateKey);
  keys[name] = { seed, pk: kp.publicKey, sk: kp.privateKey, xpk, xsk };
  identities[name] = {
    seed: hex(seed),
    pubkey: hex(kp.publicKey),
    secretKey: hex(kp.privateKey), // libsodium's layout: seed ‖ pubkey
    x25519Pubkey: hex(xpk),
    x25519Secret: hex(xsk),
  };
}
const sign = (who, s) => hex(sodium.crypto_sign_detached(utf8(s), keys[who].sk));
const signed = (who, s) => {
  const signature = sign(who, s);
  if (!sodium.crypto_sign_verify_detached(sodium.from_hex(signature), utf8(s), keys[who].pk)) {
    throw new Error('signature does not verify');
  }
  return { signer: who, string: s, signature };
};

// ---- box (direct message) ------------------------------------------------

const boxPlain = 'hello bob, this is alice';
const boxNonce = fill(0x07, 24);
const box = {
  sender: 'alice',
  recipient: 'bob',
  plaintext: boxPlain,
  nonce: b64(boxNonce),
  ciphertext: b64(sodium.crypto_box_easy(utf8(boxPlain), boxNonce, keys.bob.xpk, keys.alice.xsk)),
};

// ---- secretbox -----------------------------------------------------------

const sbKey = fill(0x42, 32);
const sbNonce = fill(0x08, 24);
const sbPlain = 'topic secret';
const secretbox = {
  key: hex(sbKey),
  nonce: b64(sbNonce),
  plaintext: sbPlain,
  ciphertext: b64(sodium.crypto_secretbox_easy(utf8(sbPlain), sbNonce, sbKey)),
};

// ---- multi envelope ------------------------------------------------------

const contentKey = fill(0x55, 32);
const multiNonce = fill(0x09, 24);
const multiPlain = 'broadcast to everyone';
const multiCt = sodium.crypto_secretbox_easy(utf8(multiPlain), multiNonce, contentKey);
const multiKeys = [
  ['bob', fill(0x0a, 24)],
  ['carol', fill(0x0b, 24)],
].map(([who, n]) => ({
  to: hex(keys[who].pk),
  nonce: b64(n),
  box: b64(sodium.crypto_box_easy(contentKey, n, keys[who].xpk, keys.alice.xsk)),
}));
const multiString = joinFields('claudemesh/multi/v1', meshId, '*', b64(multiNonce), sha256hex(multiCt));
const multi = {
  sender: 'alice',
  meshId,
  targetSpec: '*',
  contentKey: hex(contentKey),
  plaintext: multiPlain,
  nonce: b64(multiNonce),
  ciphertext: b64(multiCt),
  keys: multiKeys,
  signedString: multiString,
  signature: sign('alice', multiString),
};

// ---- invite --------------------------------------------------------------

const invite = {
  v: 1,
  meshId,
  meshSlug: 'team',
  meshName: 'Team',
  brokerUrl: 'ws://127.0.0.1:7900/ws',
  brokerPubkey: identities.broker.pubkey,
  inviteId,
  role: 'member',
  expiresAt: timestampMs + 7 * 24 * 3600 * 1000,
  maxUses: 5,
  issuerPubkey: identities.alice.pubkey,
};
const inviteSigned = signed('alice', joinFields('claudemesh/invite/v1',
  invite.meshId, invite.meshSlug, invite.meshName, invite.brokerUrl, invite.brokerPubkey,
  invite.inviteId, invite.role, invite.expiresAt, invite.maxUses, invite.issuerPubkey));
const tokenJson = JSON.stringify({ ...invite, signature: inviteSigned.signature });
const token = b64url(utf8(tokenJson));

// ---- topic post and seal -------------------------------------------------

const topicKey = fill(0x77, 32);
const keyGen = 1;
const postNonce = fill(0x0b, 24);
const postPlain = 'deploy at 5pm';
const postCt = sodium.crypto_secretbox_easy(utf8(postPlain), postNonce, topicKey);

// The ephemeral keypair of a seal is crypto_box_seed_keypair(seed):
// secret = SHA-512(seed)[:32], public = X25519 base multiple of it.
const ephemeralSeed = fill(0x33, 32);
const eph = sodium.crypto_box_seed_keypair(ephemeralSeed);
const sealNonce = fill(0x0c, 24);
const blob = concat(eph.publicKey, sodium.crypto_box_easy(topicKey, sealNonce, keys.bob.xpk, eph.privateKey));

// ---- safety number -------------------------------------------------------

const safetyNumber = (a, b) => {
  // Bytewise order, as the spec says (sodium.compare would compare the
  // bytes as little-endian numbers instead).
  const bytewise = Buffer.compare(Buffer.from(a), Buffer.from(b)) <= 0 ? [a, b] : [b, a];
  const h = createHash('sha256').update(bytewise[0]).update(bytewise[1]).digest();
  let bits = 0n;
  for (let i = 0; i < 15; i++) bits = (bits << 8n) | BigInt(h[i]);
  const groups = [];
  for (let i = 0; i < 6; i++) {
    const v = Number((bits >> BigInt(20 * (5 - i))) & 0xfffffn);
    groups.push(String(v % 100000).padStart(5, '0'));
  }
  return groups.join(' ');
};

// ---- reject vectors ------------------------------------------------------

const libsodiumAccepts = (pkHex) => {
  try {
    sodium.crypto_sign_ed25519_pk_to_curve25519(sodium.from_hex(pkHex));
    return true;
  } catch {
    return false;
  }
};
const rejectPubkeys = [
  ['all-zero point encoding', '00'.repeat(32)],
  ['identity point (small order)', '01' + '00'.repeat(31)],
  ['order-2 point', 'ec' + 'ff'.repeat(30) + '7f'],
  ['non-canonical y (p + 1)', 'ee' + 'ff'.repeat(30) + '7f'],
].map(([label, pubkey]) => ({ label, pubkey, libsodiumAccepts: libsodiumAccepts(pubkey) }));

const malformedInputs = [
  { label: 'uppercase hex pubkey', value: identities.alice.pubkey.toUpperCase(), field: 'pubkey' },
  { label: 'base64 with CRLF', value: box.nonce.slice(0, 8) + '\r\n' + box.nonce.slice(8), field: 'nonce' },
  { label: 'base64 with non-zero padding bits', value: 'AB==', field: 'nonce' },
  {
    label: 'secretKey whose pubkey half does not match its seed',
    value: identities.alice.seed + identities.bob.pubkey,
    field: 'secretKey',
  },
];
// libsodium's own decoder refuses the base64 ones; uppercase hex is a rule
// of ours (sodium_hex2bin accepts it), kept so a key has one spelling.
for (const m of malformedInputs.filter((m) => m.field === 'nonce')) {
  let ok = true;
  try {
    sodium.from_base64(m.value, sodium.base64_variants.ORIGINAL);
  } catch {
    ok = false;
  }
  if (ok) throw new Error(`libsodium accepts malformed base64 ${JSON.stringify(m.value)}`);
}

// ---- assemble, in the committed file's key order -------------------------

const vectors = {
  about: `Generated with libsodium-wrappers ${LIBSODIUM_WRAPPERS_VERSION} from fixed inputs. Formats: docs/crypto.md. Every implementation must reproduce every value here and refuse every reject vector.`,
  identities,
  meshId,
  memberId,
  timestampMs,
  challengeNonce,
  attestationExpiresAt,
  box,
  secretbox,
  multi,
  signed: {
    challenge: signed('broker', joinFields('claudemesh/challenge/v1', challengeNonce, timestampMs)),
    hello: signed('alice', joinFields('claudemesh/hello/v1', meshId, memberId, identities.alice.pubkey,
      identities.broker.pubkey, timestampMs, challengeNonce)),
    sessionAttest: signed('alice', joinFields('claudemesh/session-attest/v1', meshId, identities.alice.pubkey,
      identities.aliceSession.pubkey, attestationExpiresAt)),
    sessionHello: signed('aliceSession', joinFields('claudemesh/session-hello/v1', meshId, identities.alice.pubkey,
      identities.aliceSession.pubkey, identities.broker.pubkey, timestampMs, challengeNonce)),
    invite: { ...inviteSigned, tokenJson, token, link: `ic://join/${token}` },
    enroll: signed('bob', joinFields('claudemesh/enroll/v1', meshId, inviteId, identities.bob.pubkey, 'bob', timestampMs)),
    topicPost: {
      ...signed('alice', joinFields('claudemesh/topic-post/v1', meshId, topicId, keyGen, b64(postNonce), sha256hex(postCt))),
      topicKey: hex(topicKey),
      keyGen,
      plaintext: postPlain,
      nonce: b64(postNonce),
      ciphertext: b64(postCt),
    },
    topicSeal: {
      ...signed('alice', joinFields('claudemesh/topic-seal/v1', meshId, topicId, keyGen, identities.bob.pubkey,
        b64(sealNonce), sha256hex(blob))),
      recipient: 'bob',
      ephemeralSeed: hex(ephemeralSeed),
      ephemeralPubkey: hex(eph.publicKey),
      nonce: b64(sealNonce),
      blob: b64(blob),
    },
    auditHead: signed('broker', joinFields('claudemesh/audit-head/v1', meshId, 42, 'cd'.repeat(32))),
  },
  safety: { a: 'alice', b: 'bob', number: safetyNumber(keys.alice.pk, keys.bob.pk) },
  rejectPubkeys,
  malformedInputs,
};

const out = JSON.stringify(vectors, null, 2) + '\n';
if (process.argv[2] === '--check') {
  const path = process.argv[3] ?? 'crypto-vectors.json';
  if (readFileSync(path, 'utf8') !== out) {
    console.error(`${path} differs from what libsodium produces now`);
    process.exit(1);
  }
  console.error(`${path} matches`);
} else {
  process.stdout.write(out);
}
