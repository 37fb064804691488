// gen-audit-vectors.mjs regenerates audit-vectors.json: the audit chain of
// 02-crypto ("Audit chain") computed by an implementation independent of
// the Go one — canonical JSON from JSON.stringify with keys sorted bytewise,
// SHA-256 and Ed25519 from node:crypto — so `go test ./crypto/` proves the
// Go code hashes, canonicalises and signs checkpoints the way any other
// client would.
//
//   node gen-audit-vectors.mjs > audit-vectors.json
//   node gen-audit-vectors.mjs --check audit-vectors.json   # exit 1 if it differs
//
// No npm package is needed. The broker identity is the same as in
// crypto-vectors.json (seed 32 × 0x09).
import { createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

// Canonical JSON: object names sorted by their UTF-8 bytes, no whitespace,
// strings and numbers exactly as JSON.stringify writes them (no HTML
// escaping; numbers as ECMAScript's Number.toString).
const canon = (v) => {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(canon).join(',') + ']';
  const names = Object.keys(v).sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
  return '{' + names.map((k) => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
};

// Ed25519 from a 32-byte seed, through PKCS#8 (RFC 8410).
const keyFromSeed = (seed) =>
  createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
const rawPublic = (priv) => createPublicKey(priv).export({ format: 'der', type: 'spki' }).subarray(12).toString('hex');

const meshId = '01JDQM9S346Q3D25VT4F5V37E3';
const alice = '8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c';
const bob = '8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394';
const broker = keyFromSeed(Buffer.alloc(32, 0x09));
const brokerPubkey = rawPublic(broker);

// The events are shaped like the broker's own (see docs/protocol.md) but
// chosen to exercise canonicalisation: unsorted names, '|', quotes, HTML
// characters, control characters, non-ASCII, nested objects, numbers
// written several ways.
const events = [
  { eventType: 'mesh_created', actorPubkey: brokerPubkey, createdAt: '2025-11-25T18:00:00.000000000Z',
    payload: { slug: 'acme', name: 'Acme', ownerPubkey: alice, ownerDisplayName: 'alice', by: 'operator' } },
  { eventType: 'member_joined', actorPubkey: bob, createdAt: '2025-11-25T18:00:01.123456789Z',
    payload: { role: 'member', displayName: 'bob <&> Ünïcødé 😀', pubkey: bob, inviteId: '01JDQXXQKFBF5KZNWJ47TAN9ZT', memberId: '01JDQS3E28JT97KB6CQ643DZVM' } },
  { eventType: 'member_banned', actorPubkey: alice, createdAt: '2025-11-25T18:00:02.000000001Z',
    payload: { target: { pubkey: bob, displayName: 'bob <&> Ünïcødé 😀' }, reason: 'spam | "quoted"\n\ttab \u0001 \u007f \u2028',
      dropped: 3, numbers: [1.0, 1e2, -0.5, 0, 1764093600000], flags: [true, false, null], Zeta: {}, alpha: [] } },
  { eventType: 'grants_changed', actorPubkey: alice, createdAt: '2025-11-25T18:00:03.5Z',
    payload: { grantsHash: sha256hex('example'), senders: 1 } },
];

let prevHash = '0'.repeat(64);
const entries = events.map((e, i) => {
  const seq = i + 1;
  const canonicalPayload = canon(e.payload);
  const hash = sha256hex([prevHash, meshId, String(seq), e.eventType, e.actorPubkey, canonicalPayload, e.createdAt].join('|'));
  const entry = { seq, eventType: e.eventType, actorPubkey: e.actorPubkey, payload: e.payload, canonicalPayload, prevHash, hash, createdAt: e.createdAt };
  prevHash = hash;
  return entry;
});

const head = entries[entries.length - 1];
const checkpointString = ['claudemesh/audit-head/v1', meshId, String(head.seq), head.hash].join('|');
const signature = sign(null, Buffer.from(checkpointString, 'utf8'), broker).toString('hex');
if (!verify(null, Buffer.from(checkpointString, 'utf8'), createPublicKey(broker), Buffer.from(signature, 'hex'))) {
  throw new Error('checkpoint signature does not verify');
}

// Raw JSON texts and their canonical forms, for implementations that
// canonicalise what they received rather than a parsed object.
const canonicalInputs = [
  ' { "b" : 1 , "a" : [ 1.50 , 2E1 , -0 ] , "c" : { "y" : null , "x" : true } } ',
  '{"\\u0041":"\\u00e9\\/\\u2028","a":"\\u003c\\u003e\\u0026","é":1,"z":2,"Z":3}',
  '{"s":"\\ud83d\\ude00 \\u001f \\u007f","n":1e-7,"m":123456789,"big":1.5e300}',
  '[]',
  '"just a string"',
].map((input) => ({ input, canonical: canon(JSON.parse(input)) }));

const vectors = {
  about: 'Audit chain vectors (02-crypto "Audit chain"), from testdata/gen-audit-vectors.mjs with node:crypto. ' +
    'hash = sha256hex(prevHash|meshId|seq|eventType|actorPubkey|canonicalJSON(payload)|createdAt); ' +
    'the checkpoint is the broker key over claudemesh/audit-head/v1|<meshId>|<seq>|<headHash>.',
  meshId,
  brokerPubkey,
  entries,
  checkpoint: { meshId, seq: head.seq, hash: head.hash, string: checkpointString, signature, brokerPubkey },
  canonical: canonicalInputs,
};

const out = JSON.stringify(vectors, null, 2) + '\n';
if (process.argv[2] === '--check') {
  const path = process.argv[3] ?? 'audit-vectors.json';
  if (readFileSync(path, 'utf8') !== out) {
    console.error(`${path} differs from what this script produces now`);
    process.exit(1);
  }
  console.error(`${path} matches`);
} else {
  process.stdout.write(out);
}
