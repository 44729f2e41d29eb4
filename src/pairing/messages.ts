/**
 * The pairing wire formats: the discovery beacon (one UDP datagram) and the lines of the pairing exchange
 * (one JSON object per `\n`-terminated line over TCP). See docs/pairing.md for the protocol.
 *
 *   beacon     {"v":1,"t":"lockstep-pair-beacon","pairId":"p1","host":"host2","pairingPort":7792}
 *   CA → J     {"v":1,"t":"hello","pairId":"p1","host":"host1","nonce":"<64 hex>"}
 *   J → CA     {"v":1,"t":"csr","host":"host2","nonce":"<64 hex>","csr":"<PEM>","proof":"<64 hex>"}
 *   CA → J     {"v":1,"t":"certs","ca":"<PEM>","cert":"<PEM>","proof":"<64 hex>"}
 *   J → CA     {"v":1,"t":"done","proof":"<64 hex>"}
 *   either     {"v":1,"t":"fail","reason":"…"}                         (then the sender closes)
 *
 * The parsers check every field and build a fresh value from the checked fields only (unknown fields are
 * ignored and not passed on, as in the other protocols); anything else throws `INVALID_MESSAGE` with
 * `fields.field` naming what is wrong. Nothing here is trusted for being well-formed: the proofs are.
 */
import { QUORUM_NAME_RE } from '../protocol/quorum.js';
import { LockstepError } from '../util/errors.js';
import { printableValue } from '../util/printable.js';

export const PAIRING_PROTOCOL_VERSION = 1;
export const BEACON_TYPE = 'lockstep-pair-beacon';

/** A beacon is ~100 bytes; a datagram longer than this is not one (and is not parsed). */
export const BEACON_BYTES_MAX = 1024;
/** Longest exchange line, newline excluded. The largest valid one (two certificates) is ~2 KiB. */
export const PAIRING_LINE_BYTES_MAX = 64 * 1024;
/** Longest PEM text in a message: a P-256 certificate or request is under 1 KiB. */
const PEM_CHARS_MAX = 16 * 1024;
const REASON_CHARS_MAX = 512;

/**
 * Pair ids and host ids: the quorum protocol's name rule, since the same ids go to the quorum servers (and
 * every such name is also a valid certificate CN).
 */
export const PAIRING_NAME_RE = QUORUM_NAME_RE;

export interface Beacon {
  v: 1;
  t: typeof BEACON_TYPE;
  pairId: string;
  host: string;
  /** The TCP port where this host accepts the exchange; 0 from the CA host, which dials instead. */
  pairingPort: number;
}

export interface HelloMessage {
  v: 1;
  t: 'hello';
  pairId: string;
  host: string;
  nonce: string;
}

export interface CsrMessage {
  v: 1;
  t: 'csr';
  host: string;
  nonce: string;
  csr: string;
  proof: string;
}

export interface CertsMessage {
  v: 1;
  t: 'certs';
  ca: string;
  cert: string;
  proof: string;
}

export interface DoneMessage {
  v: 1;
  t: 'done';
  proof: string;
}

export interface FailMessage {
  v: 1;
  t: 'fail';
  reason: string;
}

export type ExchangeMessage = HelloMessage | CsrMessage | CertsMessage | DoneMessage | FailMessage;

const EXCHANGE_TYPES = ['hello', 'csr', 'certs', 'done', 'fail'] as const;
const HEX64_RE = /^[0-9a-f]{64}$/;

export function formatBeacon(b: Omit<Beacon, 'v' | 't'>): Buffer {
  const beacon: Beacon = { v: 1, t: BEACON_TYPE, pairId: b.pairId, host: b.host, pairingPort: b.pairingPort };
  return Buffer.from(JSON.stringify(beacon));
}

/** Parses one datagram; throws `INVALID_MESSAGE`. */
export function parseBeacon(datagram: Buffer): Beacon {
  if (datagram.length > BEACON_BYTES_MAX) throw invalid('datagram', `is ${datagram.length} bytes; a beacon is at most ${BEACON_BYTES_MAX}`);
  const o = envelope(datagram, 'datagram');
  if (o['t'] !== BEACON_TYPE) throw invalid('t', `is ${printableValue(o['t'])}, not ${JSON.stringify(BEACON_TYPE)}`);
  const port = o['pairingPort'];
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid('pairingPort', `is ${printableValue(port)}: expected a port in 0..65535`);
  }
  return { v: 1, t: BEACON_TYPE, pairId: name(o['pairId'], 'pairId'), host: name(o['host'], 'host'), pairingPort: port };
}

/** One message as a line, newline included. */
export function formatLine(m: ExchangeMessage): string {
  return `${JSON.stringify(m)}\n`;
}

/** Parses one exchange line (without its newline); throws `INVALID_MESSAGE`. */
export function parseExchangeLine(line: Buffer): ExchangeMessage {
  if (line.length > PAIRING_LINE_BYTES_MAX) throw invalid('line', `is ${line.length} bytes; at most ${PAIRING_LINE_BYTES_MAX}`);
  const o = envelope(line, 'line');
  const t = o['t'];
  if (typeof t !== 'string' || !(EXCHANGE_TYPES as readonly string[]).includes(t)) {
    throw invalid('t', `is ${printableValue(t)}: expected one of ${EXCHANGE_TYPES.join(', ')}`);
  }
  switch (t as (typeof EXCHANGE_TYPES)[number]) {
    case 'hello':
      return { v: 1, t: 'hello', pairId: name(o['pairId'], 'pairId'), host: name(o['host'], 'host'), nonce: hex64(o['nonce'], 'nonce') };
    case 'csr':
      return {
        v: 1,
        t: 'csr',
        host: name(o['host'], 'host'),
        nonce: hex64(o['nonce'], 'nonce'),
        csr: pem(o['csr'], 'csr', 'CERTIFICATE REQUEST'),
        proof: hex64(o['proof'], 'proof'),
      };
    case 'certs':
      return { v: 1, t: 'certs', ca: pem(o['ca'], 'ca', 'CERTIFICATE'), cert: pem(o['cert'], 'cert', 'CERTIFICATE'), proof: hex64(o['proof'], 'proof') };
    case 'done':
      return { v: 1, t: 'done', proof: hex64(o['proof'], 'proof') };
    case 'fail': {
      const reason = o['reason'];
      if (typeof reason !== 'string' || reason.length > REASON_CHARS_MAX) throw invalid('reason', `is not a string of at most ${REASON_CHARS_MAX} characters`);
      return { v: 1, t: 'fail', reason };
    }
  }
}

/** A `fail` line whose reason fits what a parser accepts. */
export function failMessage(reason: string): FailMessage {
  return { v: 1, t: 'fail', reason: reason.length > REASON_CHARS_MAX ? `${reason.slice(0, REASON_CHARS_MAX - 1)}…` : reason };
}

// ── field checks ──────────────────────────────────────────────────────────────────────────────────────

const utf8 = new TextDecoder('utf-8', { fatal: true });

function envelope(bytes: Buffer, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (e) {
    throw invalid(what, 'is not UTF-8', e);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw invalid(what, 'is not JSON', e);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(what, 'is not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o['v'] !== PAIRING_PROTOCOL_VERSION) {
    throw invalid('v', `is ${printableValue(o['v'])}: unsupported pairing protocol version (this side speaks ${PAIRING_PROTOCOL_VERSION})`);
  }
  return o;
}

function name(v: unknown, field: string): string {
  if (typeof v === 'string' && PAIRING_NAME_RE.test(v)) return v;
  throw invalid(field, `is ${printableValue(v)}: expected a name ([a-z0-9][a-z0-9-]{0,62})`);
}

function hex64(v: unknown, field: string): string {
  if (typeof v === 'string' && HEX64_RE.test(v)) return v;
  throw invalid(field, `is ${printableValue(v)}: expected 64 lowercase hex digits`);
}

/** PEM text of one block of `label`: the shape only; what it holds is for the PKI to judge. */
function pem(v: unknown, field: string, label: string): string {
  if (typeof v !== 'string' || v.length > PEM_CHARS_MAX) throw invalid(field, `is not a string of at most ${PEM_CHARS_MAX} characters`);
  const re = new RegExp(`^-----BEGIN ${label}-----\\n[A-Za-z0-9+/=\\n]+-----END ${label}-----\\n?$`);
  if (!re.test(v)) throw invalid(field, `is not one PEM ${label.toLowerCase()}`);
  return v;
}

function invalid(field: string, why: string, cause?: unknown): LockstepError {
  return new LockstepError('INVALID_MESSAGE', `pairing message: ${field} ${why}`, { field }, cause === undefined ? {} : { cause });
}
