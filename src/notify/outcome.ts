/**
 * What one delivery attempt came to, as a value: a receiver that is down or says no is an expected outcome
 * of notifications, not an exception. A failure names the step that failed (`connect`, `STARTTLS`,
 * `RCPT TO <ops@example.com>`, `HTTP status` …), what went wrong, and the receiver's own reply when it
 * gave one, so that the log, the console and "send test" can show the operator exactly where it broke.
 */
export type DeliveryOutcome =
  | { ok: true; /** The receiver's acceptance, e.g. `250 2.0.0 queued as 4F2A`, `HTTP 202`. */ detail: string }
  | { ok: false; step: string; error: string; /** The receiver's reply, verbatim and bounded; null when it gave none. */ reply: string | null };

/** Replies are quoted in logs and the outbox: at most this many characters of them. */
export const REPLY_CHARS_MAX = 500;

export function delivered(detail: string): DeliveryOutcome {
  return { ok: true, detail: bounded(detail) };
}

export function failed(step: string, error: string, reply: string | null = null): DeliveryOutcome {
  return { ok: false, step, error, reply: reply === null ? null : bounded(reply) };
}

/** One line for the log: `delivered (250 ok)` or `failed at RCPT TO <x>: rejected (550 no such user)`. */
export function describeOutcome(o: DeliveryOutcome): string {
  if (o.ok) return `delivered (${o.detail})`;
  return `failed at ${o.step}: ${o.error}${o.reply === null ? '' : ` (reply: ${o.reply})`}`;
}

function bounded(text: string): string {
  const flat = text.replace(/\s*[\r\n]+\s*/g, ' | ').trim();
  return flat.length <= REPLY_CHARS_MAX ? flat : `${flat.slice(0, REPLY_CHARS_MAX - 1)}…`;
}
