/**
 * The A-Link's own frames, which carry the peer messages and keep each path measured and alive:
 *
 * - `hello`: the first frame each side sends on a new connection: protocol versions spoken, host, path
 *   name, and the sender's session (a random id per Alink instance, which scopes message ids);
 * - `msg`: one peer message (`src/protocol/peer.ts` envelope) with its id, the same on every path, so the
 *   receiver can drop the copy that arrives second;
 * - `ping` / `pong`: RTT probes, answered at once; any frame received proves the path alive;
 * - `bye`: the reason the sender is closing the connection, so both sides log the same cause.
 *
 * A frame that does not fit this schema means the peer's stream is broken: the connection closes. A `msg`
 * whose envelope is invalid is only dropped (the stream is still in step); see `docs/alink.md`.
 */
import { LockstepError } from '../util/errors.js';
import { NAME_RE } from '../protocol/peer.js';

/** The A-Link frame versions this build speaks (it announces the range in its hello). */
export const ALINK_PROTOCOL = { min: 1, max: 1 } as const;
const SESSION_RE = /^[0-9a-f]{16}$/;
const REASON_CHARS_MAX = 200;

export type LinkFrame =
  | { t: 'hello'; proto: { min: number; max: number }; host: string; path: string; session: string }
  | { t: 'msg'; id: number; env: unknown }
  | { t: 'ping'; n: number }
  | { t: 'pong'; n: number }
  | { t: 'bye'; reason: string };

export function parseLinkFrame(raw: unknown): LinkFrame {
  const o = object(raw, 'frame');
  switch (o['t']) {
    case 'hello': {
      const proto = object(o['proto'], 'proto');
      const min = count(proto['min'], 'proto.min');
      const max = count(proto['max'], 'proto.max');
      if (min > max) throw invalid('proto', `min ${min} is above max ${max}`);
      const host = o['host'];
      const path = o['path'];
      const session = o['session'];
      if (typeof host !== 'string' || !NAME_RE.test(host)) throw invalid('host', 'must be a host name');
      if (typeof path !== 'string' || !NAME_RE.test(path)) throw invalid('path', 'must be a path name');
      if (typeof session !== 'string' || !SESSION_RE.test(session)) throw invalid('session', 'must be 16 hex digits');
      return { t: 'hello', proto: { min, max }, host, path, session };
    }
    case 'msg':
      if (!('env' in o)) throw invalid('env', 'is missing');
      return { t: 'msg', id: count(o['id'], 'id'), env: o['env'] };
    case 'ping':
    case 'pong':
      return { t: o['t'], n: count(o['n'], 'n') };
    case 'bye': {
      const reason = o['reason'];
      if (typeof reason !== 'string') throw invalid('reason', 'must be a string');
      return { t: 'bye', reason: reason.slice(0, REASON_CHARS_MAX) };
    }
    default:
      throw invalid('t', 'must be hello, msg, ping, pong or bye');
  }
}

function invalid(field: string, why: string): LockstepError {
  return new LockstepError('INVALID_MESSAGE', `A-Link frame: '${field}' ${why}`, { field });
}

function object(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(field, 'must be an object');
  return v as Record<string, unknown>;
}

function count(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid(field, 'must be a safe integer ≥ 0');
  return v;
}
