/**
 * Notifications as the API, the console and the CLI show them: each configured receiver with where it
 * sends, its deliveries waiting, its latest outcome from the outbox and its latest "send test" — and never a
 * secret. Users with the least role read this view, while the config holds what only root on the host
 * should see, so what is left out is decided here, once:
 *   - the SMTP password (only the file's path is in the config anyway, and shown);
 *   - the SNMP community (in v2c it is the shared secret that lets anyone send or read as the agent);
 *   - a webhook's or Call Home's URL beyond its origin: a chat service's incoming webhook carries its token
 *     in the path, others in the query or as user:password@. Receivers' error texts quote the URL they
 *     posted to, so those are cleaned too.
 *
 * Pure: the notifier's state comes in, plain JSON goes out.
 */
import { isoTime } from './alert.js';
import { redacted } from './http-post.js';
import type { DeliveryOutcome } from './outcome.js';
import type { Delivery } from './outbox.js';
import { receiversOf, type NotificationsConfig, type Receiver, type ReceiverKind } from './receivers.js';

/** What lockstepd has of notifications: none configured, configured but not running (why), or running. */
export type NotificationsState<N extends NotifierReadout = NotifierReadout> =
  | { state: 'off' }
  | { state: 'failed'; config: NotificationsConfig; error: string }
  | { state: 'on'; config: NotificationsConfig; notifier: N };

/** What the view reads of a running notifier (`Notifier` has it). */
export interface NotifierReadout {
  receivers(): readonly Receiver[];
  summary(receiver: Receiver): { pending: number; last: Delivery | null };
  lastTest(receiver: Receiver): TestRun | null;
}

/** One "send test" to one receiver: its outcome as the receiver gave it, when, and how long it took. */
export interface TestRun {
  receiver: string;
  outcome: DeliveryOutcome;
  atMs: number;
  durationMs: number;
}

export interface ReceiverView {
  /** The receiver's name: what `POST /v1/notifications/{name}/test` and `lockstep notification test` take. */
  name: string;
  kind: ReceiverKind;
  /** Where it sends, in one line, without secrets. */
  target: string;
  settings: Record<string, unknown>;
  /** Deliveries waiting for it in the outbox; null when the notifier does not run. */
  pending: number | null;
  lastDelivery: LastDeliveryView | null;
  lastTest: { at: string; durationMs: number; outcome: DeliveryOutcome } | null;
}

export interface LastDeliveryView {
  /** The alert's id (the same in every notification of it) and code. */
  alert: string;
  code: string;
  /** delivered; retrying: its last attempt failed and the next is due at `nextAttemptAt`; abandoned (`detail` says why). */
  state: 'delivered' | 'retrying' | 'abandoned';
  attempts: number;
  /** The latest attempt, or when it was abandoned. */
  at: string;
  /** The receiver's acceptance, or why it was abandoned. */
  detail: string | null;
  /** The last failed attempt's step, error and reply; kept once delivered (what it took). */
  lastError: string | null;
  nextAttemptAt: string | null;
}

export interface NotificationsView {
  state: NotificationsState['state'];
  /** Why notifications do not run although configured (the outbox could not be opened). */
  error: string | null;
  minSeverity: NotificationsConfig['minSeverity'] | null;
  retry: NotificationsConfig['retry'] | null;
  receivers: ReceiverView[];
}

export function notificationsView(n: NotificationsState): NotificationsView {
  if (n.state === 'off') return { state: 'off', error: null, minSeverity: null, retry: null, receivers: [] };
  const receivers = n.state === 'on' ? n.notifier.receivers() : receiversOf(n.config);
  return {
    state: n.state,
    error: n.state === 'failed' ? n.error : null,
    minSeverity: n.config.minSeverity,
    retry: n.config.retry,
    receivers: receivers.map((r) => receiverView(r, n.state === 'on' ? n.notifier : null)),
  };
}

export function receiverView(r: Receiver, notifier: NotifierReadout | null): ReceiverView {
  const summary = notifier?.summary(r) ?? null;
  const test = notifier?.lastTest(r) ?? null;
  return {
    name: r.name,
    kind: r.kind,
    target: targetOf(r),
    settings: settingsOf(r),
    pending: summary?.pending ?? null,
    lastDelivery: summary?.last ? lastDeliveryView(r, summary.last) : null,
    lastTest: test === null ? null : { at: isoTime(test.atMs), durationMs: test.durationMs, outcome: publicOutcome(r, test.outcome) },
  };
}

/** A "send test" result as the API answers it. */
export interface TestResultView {
  receiver: string;
  kind: ReceiverKind;
  target: string;
  at: string;
  durationMs: number;
  outcome: DeliveryOutcome;
}

export function testResultView(r: Receiver, run: TestRun): TestResultView {
  return { receiver: r.name, kind: r.kind, target: targetOf(r), at: isoTime(run.atMs), durationMs: run.durationMs, outcome: publicOutcome(r, run.outcome) };
}

/** An outcome with the receiver's secrets taken out of its texts. */
export function publicOutcome(r: Receiver, o: DeliveryOutcome): DeliveryOutcome {
  if (o.ok) return { ok: true, detail: scrub(r, o.detail) };
  return { ok: false, step: o.step, error: scrub(r, o.error), reply: o.reply === null ? null : scrub(r, o.reply) };
}

/** An outbox key as it may be shown: a webhook's (`webhook:URL`) with its URL cut to what `shownUrl` shows. */
export function shownReceiverId(id: string): string {
  return id.startsWith('webhook:') ? `webhook:${shownUrl(id.slice('webhook:'.length))}` : id;
}

/** An http(s) URL as far as it may be shown: scheme, host and port; `/…` where a path or query was left out. */
export function shownUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return '(not a URL)';
  }
  return `${u.origin}${u.pathname === '/' && u.search === '' ? '/' : '/…'}`;
}

function targetOf(r: Receiver): string {
  switch (r.kind) {
    case 'smtp':
      return `${r.config.host}:${r.config.port} → ${r.config.to.join(', ')}`;
    case 'snmp':
      return `${r.config.host}:${r.config.port} (SNMPv2c trap)`;
    case 'call-home':
    case 'webhook':
      return shownUrl(r.config.url);
  }
}

function settingsOf(r: Receiver): Record<string, unknown> {
  switch (r.kind) {
    case 'smtp': {
      const c = r.config;
      return { host: c.host, port: c.port, from: c.from, to: c.to, starttls: c.starttls, user: c.user, passwordFile: c.passwordFile, caFile: c.caFile };
    }
    case 'snmp':
      // No community: in SNMPv2c it is the password.
      return { host: r.config.host, port: r.config.port, version: 'v2c' };
    case 'call-home':
    case 'webhook':
      return { url: shownUrl(r.config.url), caFile: r.config.caFile };
  }
}

function lastDeliveryView(r: Receiver, d: Delivery): LastDeliveryView {
  return {
    alert: d.alertUid,
    code: d.alert.code,
    state: d.state === 'pending' ? 'retrying' : d.state,
    attempts: d.attempts,
    at: isoTime(d.lastAttemptMs ?? d.doneMs ?? d.createdMs),
    detail: d.detail === null ? null : scrub(r, d.detail),
    lastError: d.lastError === null ? null : scrub(r, d.lastError),
    nextAttemptAt: d.state === 'pending' ? isoTime(d.nextAttemptMs) : null,
  };
}

/** The text with every spelling of the receiver's URL that a sender may quote replaced by what may be shown. */
function scrub(r: Receiver, text: string): string {
  if (r.kind !== 'call-home' && r.kind !== 'webhook') return text;
  const spellings = new Set([r.config.url]);
  try {
    const u = new URL(r.config.url);
    spellings.add(u.href);
    spellings.add(redacted(u));
  } catch {
    /* the config checked it is a URL */
  }
  let out = text;
  // Longest first: one spelling may contain another.
  for (const s of [...spellings].sort((a, b) => b.length - a.length)) out = out.split(s).join(shownUrl(r.config.url));
  return out;
}
