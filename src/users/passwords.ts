/**
 * Password hashes: scrypt (node:crypto) with a random 16-byte salt per password, compared in constant time.
 * The stored form names its parameters, `scrypt$N$r$p$salt$hash` (base64url), so they can be raised later
 * without invalidating the hashes already stored.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * N = 2^14, r = 8, p = 1: 16 MiB and about 0.1–0.2 s per hash, the interactive-login parameters of
 * scrypt's paper and RFC 7914. Higher would make each login (and each guess the rate limit lets through)
 * seconds of CPU on a small host; the stored form lets a later version raise them.
 */
const PARAMS = { N: 16384, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** scrypt needs 128·N·r bytes (16 MiB here); a stored hash with larger parameters may need up to this. */
const MAXMEM = 64 * 1024 * 1024;

function derive(password: string, salt: Buffer, params: { N: number; r: number; p: number }): Promise<Buffer> {
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: MAXMEM };
  return new Promise((resolve, reject) => scrypt(password.normalize('NFC'), salt, KEY_BYTES, opts, (e, key) => (e ? reject(e) : resolve(key))));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, PARAMS);
  return ['scrypt', PARAMS.N, PARAMS.r, PARAMS.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

/**
 * Whether `password` is the one `stored` was made from. A stored value that is not a hash of ours verifies
 * nothing. The work is the same for a wrong password as for a right one.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![N, r, p].every((x) => Number.isSafeInteger(x) && x > 0) || 128 * N * r > MAXMEM || p > 16) return false;
  const salt = Buffer.from(parts[4]!, 'base64url');
  const want = Buffer.from(parts[5]!, 'base64url');
  if (want.length !== KEY_BYTES) return false;
  const got = await derive(password, salt, { N, r, p });
  return timingSafeEqual(got, want);
}

/**
 * A hash of a random password, to verify against when the user name is unknown: the answer then takes as
 * long as for a known user, so timing does not tell which names exist.
 */
let dummy: Promise<string> | null = null;
export function dummyHash(): Promise<string> {
  dummy ??= hashPassword(randomBytes(16).toString('hex'));
  return dummy;
}
