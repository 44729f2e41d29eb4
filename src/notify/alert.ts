/**
 * The alert as notifications carry it: one `kind: 'alert'` row of the daemon's event log (the core's alert
 * effect, journalled by the driver) plus what a receiver needs to act on it without asking back — the pair,
 * an id that stays the same across retries, and where the fault is (host, component, VM when known).
 *
 * Pure: no I/O. Every sender formats from this one shape (docs/notifications.md).
 */
export type Severity = 'info' | 'warning' | 'critical';

export const SEVERITIES: readonly Severity[] = ['info', 'warning', 'critical'];

/** info < warning < critical: a receiver gets an alert at or above the configured minimum. */
export function severityAtLeast(s: Severity, min: Severity): boolean {
  return SEVERITIES.indexOf(s) >= SEVERITIES.indexOf(min);
}

/** Where the fault is: always a host; the component (a health component, an A-Link path) and the VM when the alert names them. */
export interface AlertLocation {
  host: string;
  component: string | null;
  vm: string | null;
}

export interface NotifyAlert {
  /**
   * Stable across retries and restarts: the host, the log row id and its wall time (a recreated log reuses
   * row ids, never with the same time). E-mail's Message-ID, the webhooks' Idempotency-Key, Call Home's
   * report id: a receiver that sees the same id twice is seeing a retry.
   */
  uid: string;
  /** The event log's row id (`GET /v1/events`), for finding the timeline around it. */
  logId: number;
  pair: string;
  host: string;
  severity: Severity;
  code: string;
  message: string;
  /** What caused the decision that raised it (the core's input). */
  cause: string;
  wallMs: number;
  location: AlertLocation;
  /** A "send test" notification, not a fault: receivers can file it apart. */
  test: boolean;
}

/**
 * One row of the daemon's event log as `StateDb.recentLog` returns it (src/daemon/state-db.ts `LogEntry`),
 * spelled out here so that notifications depend on the log's shape, not on the database module.
 */
export interface LogRow {
  id: number;
  wallMs: number;
  atMs: number;
  host: string;
  kind: 'event' | 'alert';
  severity: Severity | null;
  code: string | null;
  what: string;
  cause: string;
}

/** The health components the core names in its alert messages (src/core/types.ts `HEALTH_COMPONENTS`). */
const COMPONENT_WORDS = ['mgmt', 'business', 'disk', 'qemu', 'alink1', 'alink2'] as const;

/** The alert of a log row; `null` for rows that are not alerts (events). */
export function alertOfLogEntry(entry: LogRow, pair: string): NotifyAlert | null {
  if (entry.kind !== 'alert' || entry.severity === null || entry.code === null) return null;
  return {
    uid: `${entry.host}-${entry.id}-${entry.wallMs}`,
    logId: entry.id,
    pair,
    host: entry.host,
    severity: entry.severity,
    code: entry.code,
    message: entry.what,
    cause: entry.cause,
    wallMs: entry.wallMs,
    location: locate(entry.host, entry.code, entry.what),
    test: false,
  };
}

/** The notification "send test" sends: code `TEST`, severity info, marked `test`; it goes out whatever the minimum severity. */
export function testAlert(pair: string, host: string, wallMs: number): NotifyAlert {
  return {
    uid: `${host}-test-${wallMs}`,
    logId: 0,
    pair,
    host,
    severity: 'info',
    code: 'TEST',
    message: `test notification from ${host} of pair ${pair}: this receiver is configured correctly`,
    cause: 'operator: send test',
    wallMs,
    location: { host, component: null, vm: null },
    test: true,
  };
}

/**
 * The location an alert's message names. The core's alerts carry host, severity, code and a sentence; the
 * sentence names the VM ("VM web failed over …") and the components ("lost disk, business", "A-Link path
 * alink2 down") in fixed phrasings (src/core/host-core.ts), which this reads. Best effort by design: an
 * alert whose sentence names neither still goes out, located at its host.
 */
export function locate(host: string, code: string, message: string): AlertLocation {
  const vm = /\bVM ([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(message)?.[1] ?? null;
  let component: string | null = null;
  const path = /\bA-Link path (alink[12])\b/.exec(message);
  if (path) component = path[1]!;
  else if (/^(PRIMARY_FAULT|BACKUP_FAULT|CALL_HOME|HOST_DECLARED_DOWN)$/.test(code)) {
    const named = COMPONENT_WORDS.filter((c) => new RegExp(`(^|[\\s(,])${c}([\\s),:]|$)`).test(message.replace(/^\S+/, '')));
    if (named.length > 0) component = named.join(', ');
  } else if (vm !== null && /^(MIRROR_ENDED|COPY_EXPORT_FAILED)$/.test(code)) component = 'replication';
  return { host, component, vm };
}

/** A one-line summary: severity, code and host first, the way an inbox or a pager shows it. */
export function summaryLine(a: NotifyAlert): string {
  return `[Lockstep ${a.severity}] ${a.code} on ${a.host}: ${a.message}`;
}

/** RFC 3339 UTC, as the JSON payloads carry time. */
export function isoTime(wallMs: number): string {
  return new Date(wallMs).toISOString();
}

/** The alert as the webhooks and the outbox carry it (docs/notifications.md, "Webhook"). */
export function alertJson(a: NotifyAlert): Record<string, unknown> {
  return {
    type: 'lockstep.alert',
    version: 1,
    id: a.uid,
    test: a.test,
    pair: a.pair,
    host: a.host,
    severity: a.severity,
    code: a.code,
    message: a.message,
    cause: a.cause,
    time: isoTime(a.wallMs),
    location: a.location,
    logId: a.logId,
  };
}

/** The inverse of `alertJson`, for the outbox's stored copy; null when the text is not one. */
export function alertFromJson(v: unknown): NotifyAlert | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  const loc = o['location'] as Record<string, unknown> | null | undefined;
  const str = (x: unknown): x is string => typeof x === 'string';
  const strOrNull = (x: unknown): x is string | null => x === null || typeof x === 'string';
  if (o['type'] !== 'lockstep.alert' || !str(o['id']) || !str(o['pair']) || !str(o['host']) || !str(o['code']) || !str(o['message']) || !str(o['cause']) || !str(o['time'])) return null;
  if (!SEVERITIES.includes(o['severity'] as Severity) || typeof o['logId'] !== 'number' || typeof o['test'] !== 'boolean') return null;
  if (typeof loc !== 'object' || loc === null || !str(loc['host']) || !strOrNull(loc['component']) || !strOrNull(loc['vm'])) return null;
  const wallMs = Date.parse(o['time']);
  if (!Number.isFinite(wallMs)) return null;
  return {
    uid: o['id'],
    logId: o['logId'],
    pair: o['pair'],
    host: o['host'],
    severity: o['severity'] as Severity,
    code: o['code'],
    message: o['message'],
    cause: o['cause'],
    wallMs,
    location: { host: loc['host'], component: loc['component'], vm: loc['vm'] },
    test: o['test'],
  };
}
