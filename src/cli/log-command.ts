/**
 * `lockstep alert list` and `lockstep audit list`: what a console shows of a host's history, over its local
 * socket (docs/cli.md). Alerts are the core's, from the host's event log (`GET /v1/events?kind=alert`);
 * the audit log is users' actions (through the management API or the socket, as `root@<host>`) merged with
 * what the platform did by itself (`GET /v1/audit`). Both are one host's: `--host` or `--socket` picks it.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import type { LogEntry } from '../daemon/state-db.js';
import type { AuditEntry } from '../audit/audit-log.js';
import { AUDIT_PAGE_MAX } from '../audit/audit-log.js';
import { AUDIT_USER_PATTERN } from '../api/account-routes.js';
import { resolveTarget } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { shortTime } from './user-command.js';
import { EXIT, table } from './output.js';

export const LOG_USAGE = `lockstep alert — the core's alerts on a host, newest first

  lockstep alert list [--severity info|warning|critical] [--limit N]   (at least that severity; default 50)

lockstep audit — users' actions and the platform's own events and alerts on a host, newest first

  lockstep audit list [--limit N] [--user NAME]      (--user: that user's actions only, e.g. root@host1)

Every verb takes --json (the API's JSON) and --socket PATH or --host host1|host2 as \`lockstep vm\` does.`;

export const SEVERITIES = ['info', 'warning', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

const LIMIT_DEFAULT = 50;
const ALERT_LIMIT_MAX = 1000;
/** `GET /v1/events` pages at most this many; a severity filter pages on, at most `ALERT_PAGES_MAX` times. */
const EVENTS_PAGE = 1000;
const ALERT_PAGES_MAX = 10;
/** The audit's user filter takes user names and the socket's `root@<host>`. */
const AUDIT_USER = new RegExp(AUDIT_USER_PATTERN);

export type LogRequest =
  | { verb: 'help'; exit: number }
  | (Common & { noun: 'alert'; verb: 'list'; severity: Severity; limit: number })
  | (Common & { noun: 'audit'; verb: 'list'; limit: number; user?: string });

export function parseLogCommand(noun: 'alert' | 'audit', argv: readonly string[]): LogRequest {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === 'help' || verb === '--help') return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
  if (verb !== 'list') throw new LockstepError('INVALID_ARGUMENT', `unknown ${noun} command '${verb}'\n\n${LOG_USAGE}`);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { ...WHERE_OPTIONS, limit: { type: 'string' }, severity: { type: 'string' }, user: { type: 'string' } }, strict: true, allowPositionals: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${LOG_USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${noun} list …\n\n${LOG_USAGE}`);
  const optionOf = (k: 'severity' | 'user'): void => {
    if (values[k] !== undefined) throw new LockstepError('INVALID_ARGUMENT', `--${k} is not an option of ${noun} list\n\n${LOG_USAGE}`);
  };
  if (noun === 'alert') {
    optionOf('user');
    const severity = values.severity ?? 'info';
    if (!(SEVERITIES as readonly string[]).includes(severity)) throw new LockstepError('INVALID_ARGUMENT', `--severity must be one of ${SEVERITIES.join(', ')} (got '${severity}')`);
    return { noun, verb, severity: severity as Severity, limit: limitOf(values.limit, ALERT_LIMIT_MAX), ...commonOptions(values) };
  }
  optionOf('severity');
  if (values.user !== undefined && !AUDIT_USER.test(values.user)) throw new LockstepError('INVALID_ARGUMENT', `--user must be a user name or root@HOST (got '${values.user}')`);
  return { noun, verb, limit: limitOf(values.limit, AUDIT_PAGE_MAX), ...(values.user !== undefined ? { user: values.user } : {}), ...commonOptions(values) };
}

export async function logCommand(noun: 'alert' | 'audit', argv: string[]): Promise<number> {
  const req = parseLogCommand(noun, argv);
  if (req.verb === 'help') {
    console.log(LOG_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  const socket = target.daemon.socket;
  if (req.noun === 'alert') {
    const alerts = await alertsOf((before) => daemonRequest<(LogEntry & { id: number })[]>(socket, 'GET', `/v1/events?kind=alert&limit=${EVENTS_PAGE}${before === null ? '' : `&before=${before}`}`), req.severity, req.limit);
    console.log(req.json ? JSON.stringify(alerts, null, 2) : renderAlerts(target.daemon.host, alerts));
    return EXIT.ok;
  }
  const page = await daemonRequest<{ entries: AuditEntry[]; next: string | null }>(socket, 'GET', `/v1/audit?limit=${req.limit}${req.user !== undefined ? `&user=${encodeURIComponent(req.user)}` : ''}`);
  console.log(req.json ? JSON.stringify(page, null, 2) : renderAudit(target.daemon.host, page.entries));
  return EXIT.ok;
}

/**
 * The newest `limit` alerts of at least `severity`, paging the event log newest first: the log has no
 * severity filter, so pages are read until enough match, the log ends, or `ALERT_PAGES_MAX` pages were read.
 */
export async function alertsOf(page: (before: number | null) => Promise<(LogEntry & { id: number })[]>, severity: Severity, limit: number): Promise<(LogEntry & { id: number })[]> {
  const floor = SEVERITIES.indexOf(severity);
  const out: (LogEntry & { id: number })[] = [];
  let before: number | null = null;
  for (let i = 0; i < ALERT_PAGES_MAX && out.length < limit; i++) {
    const entries = await page(before);
    for (const e of entries) if (e.severity !== null && SEVERITIES.indexOf(e.severity) >= floor && out.length < limit) out.push(e);
    if (entries.length < EVENTS_PAGE) break;
    before = entries[entries.length - 1]!.id;
  }
  return out;
}

export function renderAlerts(host: string, alerts: readonly LogEntry[]): string {
  if (alerts.length === 0) return `no alerts on ${host}`;
  return table(['at', 'severity', 'code', 'host', 'what'], alerts.map((a) => [shortTime(new Date(a.wallMs).toISOString()), a.severity ?? '-', a.code ?? '-', a.host, a.what]));
}

export function renderAudit(host: string, entries: readonly AuditEntry[]): string {
  if (entries.length === 0) return `the audit log of ${host} is empty`;
  return table(
    ['at', 'kind', 'user', 'client', 'what', 'target', 'result'],
    entries.map((e) => [
      shortTime(e.at),
      e.kind,
      e.user ?? '-',
      e.client ?? '-',
      e.kind === 'user' ? `${e.operation ?? '?'} (${e.method ?? '?'} ${e.path ?? '?'})` : `${e.code !== null ? `${e.code}: ` : ''}${e.message ?? ''}`,
      e.target ?? '-',
      e.kind === 'user' ? `${e.result ?? '?'}${e.result === 'ok' ? '' : ` ${e.status ?? ''} ${e.code ?? ''}`.trimEnd()}` : (e.severity ?? '-'),
    ]),
  );
}

function limitOf(v: string | undefined, max: number): number {
  if (v === undefined) return LIMIT_DEFAULT;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > max) throw new LockstepError('INVALID_ARGUMENT', `--limit must be a whole number from 1 to ${max} (got '${v}')`);
  return n;
}
