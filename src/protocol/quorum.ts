/**
 * The quorum protocol: what a host and a `lockstep-quorum` server say to each other over mutual TLS.
 *
 * One JSON object per line (`\n`-terminated, UTF-8, at most `QUORUM_LINE_BYTES_MAX` bytes with the
 * newline). Every line a host sends gets exactly one reply line, in order. Each object carries the
 * protocol version `v`; a line of another version gets an `error` reply with code `UNSUPPORTED_VERSION`.
 *
 *   host → server   {"v":1,"type":"acquire","pair":"p1","host":"host1","knownEpoch":6,"id":7}
 *                   {"v":1,"type":"ping","id":8}
 *   server → host   {"v":1,"type":"granted","id":7,"epoch":7}
 *                   {"v":1,"type":"denied","id":7,"epoch":7,"holder":"host2"}
 *                   {"v":1,"type":"pong","id":8}
 *                   {"v":1,"type":"error","id":7,"code":"NOT_AUTHORIZED","message":"…"}   (id absent when unknown)
 *
 * The parsers check every field (types, ranges, the name rule) and build a fresh value from the checked
 * fields only; unknown fields are ignored and not passed on, as in the peer protocol (`peer.ts`). Anything
 * else throws `INVALID_MESSAGE` with `fields.field` naming what is wrong.
 */
import { LockstepError } from '../util/errors.js';
import { printableValue } from '../util/printable.js';

/** The version of the quorum protocol this build speaks. */
export const QUORUM_PROTOCOL_VERSION = 1;

/** Longest line either side accepts, newline included: far above the largest valid message (~300 bytes). */
export const QUORUM_LINE_BYTES_MAX = 16 * 1024;

/** Pair ids and host ids. */
export const QUORUM_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * The largest epoch a request may carry: the server grants at most one more, and every epoch must stay a
 * safe integer so that "one more" is exact.
 */
export const QUORUM_EPOCH_MAX = Number.MAX_SAFE_INTEGER - 1;

/** Codes of `error` replies, each with its meaning. A reply may carry a code this build does not know. */
export const QUORUM_ERROR_CODES = {
  INVALID_MESSAGE: 'the line is not a valid request (JSON, shape, types, ranges or names); nothing was decided',
  UNSUPPORTED_VERSION: 'the line is of a protocol version this server does not speak',
  LINE_TOO_LONG: 'the line exceeds the length limit; the server closes the connection after this reply',
  UNKNOWN_PAIR: 'the pair is not enrolled on this server',
  NOT_AUTHORIZED: "the connection's certificate is not signed by the pair's CA",
  HOST_MISMATCH: "the request's host is not the CN of the connection's certificate (a host asks only in its own name)",
  PAIR_UNAVAILABLE: "the pair's record cannot be read or written: the server grants nothing for it until repaired",
  EPOCH_EXHAUSTED: 'the next epoch would not be a safe integer',
} as const;
export type QuorumErrorCode = keyof typeof QUORUM_ERROR_CODES;

export interface AcquireRequest {
  v: 1;
  type: 'acquire';
  pair: string;
  host: string;
  /** The newest epoch the host knows of (its own durable epoch): a grant is always newer. */
  knownEpoch: number;
  id: number;
}

export interface PingRequest {
  v: 1;
  type: 'ping';
  id: number;
}

export type QuorumRequestMessage = AcquireRequest | PingRequest;

export type QuorumReplyMessage =
  | { v: 1; type: 'granted'; id: number; epoch: number }
  | { v: 1; type: 'denied'; id: number; epoch: number; holder: string }
  | { v: 1; type: 'pong'; id: number }
  | { v: 1; type: 'error'; id?: number; code: string; message: string };

const REQUEST_TYPES = ['acquire', 'ping'] as const;
const REPLY_TYPES = ['granted', 'denied', 'pong', 'error'] as const;
const ERROR_CODE_RE = /^[A-Z][A-Z0-9_]{0,63}$/;
const ERROR_MESSAGE_CHARS_MAX = 1024;

/** Parses one request line (without its newline); throws `INVALID_MESSAGE`. */
export function parseQuorumRequest(line: string | Buffer): QuorumRequestMessage {
  const o = envelope(line);
  const type = oneOf(o['type'], 'type', REQUEST_TYPES);
  const id = count(o['id'], 'id');
  switch (type) {
    case 'acquire':
      return {
        v: 1,
        type,
        pair: name(o['pair'], 'pair'),
        host: name(o['host'], 'host'),
        knownEpoch: count(o['knownEpoch'], 'knownEpoch', QUORUM_EPOCH_MAX),
        id,
      };
    case 'ping':
      return { v: 1, type, id };
  }
}

/** Parses one reply line (without its newline); throws `INVALID_MESSAGE`. */
export function parseQuorumReply(line: string | Buffer): QuorumReplyMessage {
  const o = envelope(line);
  const type = oneOf(o['type'], 'type', REPLY_TYPES);
  switch (type) {
    case 'granted':
      return { v: 1, type, id: count(o['id'], 'id'), epoch: count(o['epoch'], 'epoch') };
    case 'denied':
      return { v: 1, type, id: count(o['id'], 'id'), epoch: count(o['epoch'], 'epoch'), holder: name(o['holder'], 'holder') };
    case 'pong':
      return { v: 1, type, id: count(o['id'], 'id') };
    case 'error': {
      const code = o['code'];
      if (typeof code !== 'string' || !ERROR_CODE_RE.test(code)) throw invalid('code', 'is not an error code ([A-Z][A-Z0-9_]{0,63})');
      const message = o['message'];
      if (typeof message !== 'string' || message.length > ERROR_MESSAGE_CHARS_MAX) {
        throw invalid('message', `is not a string of at most ${ERROR_MESSAGE_CHARS_MAX} characters`);
      }
      return o['id'] === undefined ? { v: 1, type, code, message } : { v: 1, type, id: count(o['id'], 'id'), code, message };
    }
  }
}

/** One message as a line, newline included. */
export function formatQuorumLine(msg: QuorumRequestMessage | QuorumReplyMessage): string {
  return `${JSON.stringify(msg)}\n`;
}

/** An `error` reply; the message is cut to what a parser accepts. */
export function quorumError(code: QuorumErrorCode, message: string, id?: number): QuorumReplyMessage {
  const text = message.length > ERROR_MESSAGE_CHARS_MAX ? `${message.slice(0, ERROR_MESSAGE_CHARS_MAX - 1)}…` : message;
  return id === undefined ? { v: 1, type: 'error', code, message: text } : { v: 1, type: 'error', id, code, message: text };
}

/**
 * The `id` of a line that failed to parse, when it can still be read, so the error reply can name the
 * request it answers. Never throws.
 */
export function salvageId(line: string | Buffer): number | undefined {
  try {
    const o: unknown = JSON.parse(typeof line === 'string' ? line : line.toString('utf8'));
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return undefined;
    const id = (o as Record<string, unknown>)['id'];
    return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : undefined;
  } catch {
    return undefined;
  }
}

// ── field checks ──────────────────────────────────────────────────────────────────────────────────────

const utf8 = new TextDecoder('utf-8', { fatal: true });

function envelope(line: string | Buffer): Record<string, unknown> {
  const bytes = typeof line === 'string' ? Buffer.byteLength(line) : line.length;
  if (bytes >= QUORUM_LINE_BYTES_MAX) throw invalid('line', `is ${bytes} bytes; at most ${QUORUM_LINE_BYTES_MAX - 1} before the newline`);
  let text: string;
  try {
    text = typeof line === 'string' ? line : utf8.decode(line);
  } catch (e) {
    throw invalid('line', 'is not UTF-8', {}, e);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw invalid('line', 'is not JSON', {}, e);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid('line', 'is not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o['v'] !== QUORUM_PROTOCOL_VERSION) {
    throw invalid('v', `is ${printableValue(o['v'])}: unsupported protocol version (this side speaks version ${QUORUM_PROTOCOL_VERSION})`, {
      version: o['v'] === undefined ? null : o['v'],
      unsupportedVersion: true,
    });
  }
  return o;
}

/** Whether a parse error was about the protocol version (the server answers `UNSUPPORTED_VERSION`). */
export function isVersionError(e: unknown): boolean {
  return e instanceof LockstepError && e.code === 'INVALID_MESSAGE' && e.fields['unsupportedVersion'] === true;
}

function oneOf<T extends string>(v: unknown, field: string, values: readonly T[]): T {
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  throw invalid(field, `is ${printableValue(v)}: expected one of ${values.join(', ')}`);
}

function count(v: unknown, field: string, max: number = Number.MAX_SAFE_INTEGER): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max) return v;
  throw invalid(field, `is ${printableValue(v)}: expected an integer in 0..${max}`);
}

function name(v: unknown, field: string): string {
  if (typeof v === 'string' && QUORUM_NAME_RE.test(v)) return v;
  throw invalid(field, `is ${printableValue(v)}: expected a name ([a-z0-9][a-z0-9-]{0,62})`);
}

function invalid(field: string, why: string, fields: Record<string, unknown> = {}, cause?: unknown): LockstepError {
  return new LockstepError('INVALID_MESSAGE', `quorum message: ${field} ${why}`, { field, ...fields }, cause === undefined ? {} : { cause });
}
