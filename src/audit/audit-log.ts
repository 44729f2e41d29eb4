/**
 * The audit log: what users did through the management API (who, when, what, target, result, from where),
 * kept in a SQLite file of its own (`<dataDir>/state/audit.db`), and read together with what the platform
 * did by itself — the core's events and alerts, journaled in the state database (`StateDb.recentLog`).
 *
 * The user actions are append-only: the table refuses UPDATE by a trigger and nothing but the retention
 * below deletes. The API has no route that changes or removes an entry. The newest `AUDIT_MAX_ROWS` are kept,
 * so a flood of refused requests cannot fill the disk the core's state needs.
 *
 * Reading is newest first, both sources merged by wall-clock time, with a cursor (`next`) that continues
 * exactly where a page ended. The core's log is read through the daemon's own reader (it has no text
 * search), a bounded number of rows per page (`CORE_SCAN_MAX`): a page may then hold fewer entries than asked,
 * with a cursor to go on.
 */
import Database from 'better-sqlite3';
import { LockstepError } from '../util/errors.js';
import { openSqlite } from '../util/sqlite.js';
import type { LogEntry } from '../daemon/state-db.js';

export const AUDIT_MAX_ROWS = 200_000;
export const AUDIT_PAGE_MAX = 500;
/** Core log rows examined per page at most (the text filter runs in memory on them). */
export const CORE_SCAN_MAX = 5000;
const CORE_BATCH = 500;
/** What an entry keeps of a request: bounded, so one entry stays small whatever a client sends. */
const TEXT_MAX = 500;

export const AUDIT_KINDS = ['user', 'event', 'alert'] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];
export const AUDIT_RESULTS = ['ok', 'denied', 'failed'] as const;
export type AuditResult = (typeof AUDIT_RESULTS)[number];

/** A user action as the management API records it. */
export interface UserAction {
  wallMs: number;
  /** The user who acted; null when the request carried no valid session (then `denied`) or for a login attempt. */
  user: string | null;
  client: string;
  /** The API operation (`defineVm`, `login` …), the request's method and path. */
  operation: string;
  method: string;
  path: string;
  /** What it acted on: a VM, user or group name; null when the operation has none. */
  target: string | null;
  result: AuditResult;
  status: number;
  /** The error code when it did not succeed, and its message. */
  code: string | null;
  message: string | null;
}

/** One entry of the audit log as the API shows it: a user action, or a core event or alert. */
export interface AuditEntry {
  /** `u<n>` for user actions, `c<n>` for the core's log. */
  id: string;
  kind: AuditKind;
  at: string;
  wallMs: number;
  host: string;
  user: string | null;
  client: string | null;
  operation: string | null;
  method: string | null;
  path: string | null;
  target: string | null;
  result: AuditResult | null;
  status: number | null;
  severity: LogEntry['severity'];
  code: string | null;
  message: string | null;
  cause: string | null;
}

export interface AuditQuery {
  limit: number;
  /** The `next` of the previous page. */
  cursor?: string;
  kind?: AuditKind;
  user?: string;
  /** Case-insensitive substring of the entry's text (operation, path, target, user, message, code, cause). */
  text?: string;
}

export type CoreLogReader = (opts: { limit: number; beforeId?: number; kind?: 'event' | 'alert' }) => (LogEntry & { id: number })[];

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE actions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_ms   INTEGER NOT NULL,
    host      TEXT NOT NULL,
    user      TEXT,
    client    TEXT NOT NULL,
    operation TEXT NOT NULL,
    method    TEXT NOT NULL,
    path      TEXT NOT NULL,
    target    TEXT,
    result    TEXT NOT NULL CHECK (result IN ('ok', 'denied', 'failed')),
    status    INTEGER NOT NULL,
    code      TEXT,
    message   TEXT
  ) STRICT;
  CREATE INDEX actions_user ON actions (user, id);
  CREATE TRIGGER actions_append_only BEFORE UPDATE ON actions
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
  `,
];

type Row = Record<string, unknown>;

export class AuditLog {
  private readonly listeners = new Set<(entry: AuditEntry) => void>();

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
    private readonly host: string,
    private readonly coreLog: CoreLogReader,
  ) {}

  static open(file: string, host: string, coreLog: CoreLogReader): AuditLog {
    return new AuditLog(openSqlite(file, { what: 'audit log', code: 'AUDIT_DB', migrations: MIGRATIONS, synchronous: 'FULL' }), file, host, coreLog);
  }

  close(): void {
    this.db.close();
  }

  /** Calls `listener` with each entry appended (the live event stream sends them on); the result unsubscribes. */
  onAppended(listener: (entry: AuditEntry) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Appends a user action; the entry as the log shows it. */
  append(a: UserAction): AuditEntry {
    const entry = this.insert(a);
    for (const listener of this.listeners) listener(entry);
    return entry;
  }

  private insert(a: UserAction): AuditEntry {
    try {
      const cut = (s: string | null): string | null => (s === null ? null : s.length > TEXT_MAX ? `${s.slice(0, TEXT_MAX - 1)}…` : s);
      return this.db.transaction(() => {
        const { lastInsertRowid } = this.db
          .prepare(`INSERT INTO actions (wall_ms, host, user, client, operation, method, path, target, result, status, code, message)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
          .run(a.wallMs, this.host, cut(a.user), cut(a.client), a.operation, cut(a.method), cut(a.path), cut(a.target), a.result, a.status, cut(a.code), cut(a.message));
        const last = Number(lastInsertRowid);
        if (last > AUDIT_MAX_ROWS && last % 1000 === 0) this.db.prepare('DELETE FROM actions WHERE id <= ?').run(last - AUDIT_MAX_ROWS);
        return userEntry(this.db.prepare('SELECT * FROM actions WHERE id = ?').get(last) as Row);
      })();
    } catch (e) {
      throw new LockstepError('AUDIT_DB', `cannot append to the audit log ${this.file}: ${(e as Error).message}`, { file: this.file }, { cause: e });
    }
  }

  /** A page of the merged log, newest first, and the cursor of the next page (null: nothing older). */
  query(q: AuditQuery): { entries: AuditEntry[]; next: string | null } {
    const cursor = parseCursor(q.cursor);
    const wantUsers = q.kind === undefined || q.kind === 'user';
    // Core entries have no user: a user filter leaves only user actions.
    const wantCore = (q.kind === undefined || q.kind !== 'user') && q.user === undefined;
    const text = q.text?.toLowerCase();
    const users = new Source<AuditEntry>(cursor.users, wantUsers, (before, n) => this.userRows(before, n, q), () => false);
    const core = new Source<AuditEntry>(
      cursor.core,
      wantCore,
      (before, n) => this.coreLog({ limit: n, ...(before !== null ? { beforeId: before } : {}), ...(q.kind === 'event' || q.kind === 'alert' ? { kind: q.kind } : {}) }).map((e) => coreEntry(e)),
      (e) => text !== undefined && !coreText(e).includes(text),
      CORE_SCAN_MAX,
    );
    const entries: AuditEntry[] = [];
    let exhausted = false;
    while (entries.length < q.limit) {
      const u = users.peek();
      const c = core.peek();
      if (c === 'budget' || u === 'budget') break;
      if (u === null && c === null) {
        exhausted = true;
        break;
      }
      const fromUsers = c === null || (u !== null && u.wallMs >= c.wallMs);
      entries.push(fromUsers ? users.take() : core.take());
    }
    if (!exhausted && entries.length === q.limit && users.peek() === null && core.peek() === null) exhausted = true;
    return { entries, next: exhausted ? null : `${users.cursor()}.${core.cursor()}` };
  }

  private userRows(before: number | null, n: number, q: AuditQuery): AuditEntry[] {
    const where = ['id < ?'];
    const args: unknown[] = [before ?? Number.MAX_SAFE_INTEGER];
    if (q.user !== undefined) {
      where.push('user = ?');
      args.push(q.user);
    }
    if (q.text !== undefined) {
      where.push(`(instr(lower(operation || ' ' || method || ' ' || path || ' ' || coalesce(target, '') || ' ' || coalesce(user, '') || ' ' || coalesce(code, '') || ' ' || coalesce(message, '') || ' ' || client), ?) > 0)`);
      args.push(q.text.toLowerCase());
    }
    const rows = this.db.prepare(`SELECT * FROM actions WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT ?`).all(...args, n) as Row[];
    return rows.map(userEntry);
  }
}

/**
 * One source of the merge: entries newest first (by the source's own id), fetched in batches before a
 * cursor id, the ones `skip` rejects passed over (at most `scanMax` examined per page).
 */
class Source<E extends { id: string }> {
  private buffer: E[] = [];
  private lastSeen: number | null;
  private done: boolean;
  private scanned = 0;

  constructor(
    private readonly before: number | null,
    enabled: boolean,
    private readonly fetch: (before: number | null, n: number) => E[],
    private readonly skip: (e: E) => boolean,
    private readonly scanMax = Number.POSITIVE_INFINITY,
  ) {
    this.lastSeen = before;
    this.done = !enabled;
  }

  peek(): E | null | 'budget' {
    while (this.buffer.length === 0 && !this.done) {
      if (this.scanned >= this.scanMax) return 'budget';
      const batch = this.fetch(this.lastSeen, CORE_BATCH);
      if (batch.length < CORE_BATCH) this.done = true;
      for (const e of batch) {
        this.scanned++;
        this.lastSeen = idNumber(e.id);
        if (!this.skip(e)) this.buffer.push(e);
      }
    }
    return this.buffer[0] ?? null;
  }

  take(): E {
    return this.buffer.shift()!;
  }

  /** Where the next page starts: just above the first entry not yet returned, or past all examined. */
  cursor(): string {
    const head = this.buffer[0];
    if (head !== undefined) return String(idNumber(head.id) + 1);
    if (this.done && this.buffer.length === 0) return '0';
    return this.lastSeen === null ? '' : String(this.lastSeen);
  }
}

function idNumber(id: string): number {
  return Number(id.slice(1));
}

/** `<users>.<core>`: each side the id the next page reads below ('' = from the newest, 0 = nothing left). */
function parseCursor(raw: string | undefined): { users: number | null; core: number | null } {
  if (raw === undefined) return { users: null, core: null };
  const m = /^(\d{0,16})\.(\d{0,16})$/.exec(raw);
  if (!m) throw new LockstepError('INVALID_ARGUMENT', `'before' is not a cursor this API gave out`, { field: 'before' });
  return { users: m[1] === '' ? null : Number(m[1]), core: m[2] === '' ? null : Number(m[2]) };
}

function userEntry(r: Row): AuditEntry {
  const wallMs = Number(r['wall_ms']);
  const str = (k: string): string | null => (r[k] === null || r[k] === undefined ? null : String(r[k]));
  return {
    id: `u${r['id']}`,
    kind: 'user',
    at: new Date(wallMs).toISOString(),
    wallMs,
    host: String(r['host']),
    user: str('user'),
    client: str('client'),
    operation: str('operation'),
    method: str('method'),
    path: str('path'),
    target: str('target'),
    result: str('result') as AuditResult,
    status: Number(r['status']),
    severity: null,
    code: str('code'),
    message: str('message'),
    cause: null,
  };
}

function coreEntry(e: LogEntry & { id: number }): AuditEntry {
  return {
    id: `c${e.id}`,
    kind: e.kind,
    at: new Date(e.wallMs).toISOString(),
    wallMs: e.wallMs,
    host: e.host,
    user: null,
    client: null,
    operation: null,
    method: null,
    path: null,
    target: null,
    result: null,
    status: null,
    severity: e.severity,
    code: e.code,
    message: e.what,
    cause: e.cause,
  };
}

function coreText(e: AuditEntry): string {
  return `${e.kind} ${e.code ?? ''} ${e.message ?? ''} ${e.cause ?? ''}`.toLowerCase();
}
