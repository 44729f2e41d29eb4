/**
 * The proofs of the pairing exchange: HMAC-SHA256 over the transcript, keyed by the pairing secret, so
 * that each side shows it knows the secret without sending it.
 *
 * - **The transcript is named fields, not bytes on the wire**: the pair, both host ids, both nonces and
 *   SHA-256 of each PEM exchanged so far, as a JSON array of strings (unambiguous, and the same on both
 *   sides however each one formats its lines).
 * - **Each proof has its own label** (`joiner-csr`, `ca-certs`, `joiner-done`), so no proof can be sent
 *   back as another one, or in the other direction.
 * - **Both nonces are in every proof after the first**, and the first covers the CA host's nonce: a
 *   recorded exchange fails against either side, which picks a fresh nonce each time.
 * - **The key is scrypt(secret)**, not the secret itself: someone who records an exchange on the cable can
 *   test guesses of the secret offline against a proof, and scrypt makes each guess cost ~50 ms and 16 MiB
 *   instead of a microsecond.
 */
import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export type ProofLabel = 'joiner-csr' | 'ca-certs' | 'joiner-done';

/** What a proof covers: everything both sides have said so far. */
export interface Transcript {
  pairId: string;
  caHost: string;
  joiner: string;
  caNonce: string;
  joinerNonce: string;
  csr: string;
  /** The CA certificate and the joiner's certificate, once the CA host has sent them. */
  ca?: string;
  cert?: string;
}

const SCRYPT = { N: 1 << 14, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

/** The key the proofs are made with. */
export function derivePairingKey(secret: string, pairId: string): Promise<Buffer> {
  // The pair id salts it: the same secret on two pairs gives two keys.
  return new Promise((resolve, reject) =>
    scrypt(secret.normalize('NFC'), `lockstep-pairing-v1 ${pairId}`, 32, SCRYPT, (e, key) => (e ? reject(e) : resolve(key))),
  );
}

/** 32 random bytes, hex: one per side per exchange. */
export function newNonce(): string {
  return randomBytes(32).toString('hex');
}

export function prove(key: Buffer, label: ProofLabel, t: Transcript): string {
  return createHmac('sha256', key).update(encode(label, t)).digest('hex');
}

/** Whether `proof` (64 hex digits, as the parser checked) is the proof of `label` over `t`; constant time. */
export function proofMatches(key: Buffer, label: ProofLabel, t: Transcript, proof: string): boolean {
  const expected = Buffer.from(prove(key, label, t), 'hex');
  const got = Buffer.from(proof, 'hex');
  return got.length === expected.length && timingSafeEqual(got, expected);
}

function encode(label: ProofLabel, t: Transcript): string {
  const sha = (pem: string | undefined): string => (pem === undefined ? '' : createHash('sha256').update(pem).digest('hex'));
  return JSON.stringify(['lockstep-pairing-v1', label, t.pairId, t.caHost, t.joiner, t.caNonce, t.joinerNonce, sha(t.csr), sha(t.ca), sha(t.cert)]);
}
