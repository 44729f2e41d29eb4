/**
 * The durable outbox of notifications: one row per (alert, receiver), written before the first attempt and
 * marked delivered only after the receiver accepted it, so that an alert is never lost because a receiver
 * was down or lockstepd restarted. Delivery is at least once: a receiver that accepted just before a crash
 * (and before the mark) gets the alert again, with the same id (Message-ID, Idempotency-Key, report id).
 *
 * ```
 * cursor      one row: the id of the newest event-log row already turned into deliveries
 * deliveries  one row per (alert, receiver): pending → delivered | abandoned, attempts, next attempt, last error
 * ```
 *
 * Why a SQLite file of its own (`<dataDir>/state/notify.db`) rather than a table in lockstepd.db:
 * - the state database holds what the core's safety rests on; an outbox that cannot be opened, or is
 *   corrupt, must cost the host its notifications, never its VMs (lockstepd then runs without them);
 * - its schema moves with notifications, not with the core's Durable, and the two cannot collide on a
 *   schema version while both are being changed;
 * - nothing needs a transaction across both: the event log in lockstepd.db is the source of truth, and the
 *   outbox follows it by row id (`cursor`), with the cursor advanced in the same transaction as the rows it
 *   made. A crash between the log's append and the outbox's is caught up at the next start.
 *
 * `synchronous = NORMAL` (not FULL as the state database): a commit lost to a power cut takes its cursor
 * with it, so the deliveries are made again from the log; a lost "delivered" mark means one more copy. What
 * must not be lost is in lockstepd.db, synced at each commit.
 */
import Database from 'better-sqlite3';
import { alertFromJson, alertJson, type NotifyAlert } from './alert.js';
import { LockstepError } from '../util/errors.js';
import { openSqlite } from '../util/sqlite.js';

export type DeliveryState = 'pending' | 'delivered' | 'abandoned';

export interface Delivery {
  id: number;
  alertUid: string;
  logId: number;
  receiver: string;
  alert: NotifyAlert;
  state: DeliveryState;
  attempts: number;
  createdMs: number;
  nextAttemptMs: number;
  lastAttemptMs: number | null;
  doneMs: number | null;
  /** The last failure (step, error, reply), kept once delivered: the console shows what it took. */
  lastError: string | null;
  /** The receiver's acceptance, or why the delivery was abandoned. */
  detail: string | null;
}

/** Finished deliveries kept (the newest; pending ones are never trimmed): the console's notification history. */
export const OUTBOX_DONE_MAX_ROWS = 10_000;

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE cursor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    last_log_id INTEGER NOT NULL CHECK (last_log_id >= 0)
  ) STRICT;

  CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_uid       TEXT NOT NULL,
    log_id          INTEGER NOT NULL CHECK (log_id >= 0),
    receiver        TEXT NOT NULL,
    alert           TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'abandoned')),
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_attempt_ms INTEGER,
    done_ms         INTEGER,
    last_error      TEXT,
    detail          TEXT,
    UNIQUE (alert_uid, receiver)
  ) STRICT;
  CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
  `,
];

export const OUTBOX_SCHEMA_VERSION = MIGRATIONS.length;

type Row = Record<string, unknown>;

export class Outbox {
  private readonly stmt;

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
  ) {
    this.stmt = {
      cursor: db.prepare('SELECT last_log_id FROM cursor WHERE id = 1'),
      setCursor: db.prepare('INSERT INTO cursor (id, last_log_id) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET last_log_id = excluded.last_log_id'),
      insert: db.prepare(`
        INSERT OR IGNORE INTO deliveries (alert_uid, log_id, receiver, alert, state, attempts, created_ms, next_attempt_ms)
        VALUES (@uid, @logId, @receiver, @alert, 'pending', 0, @now, @now)`),
      due: db.prepare(`SELECT * FROM deliveries WHERE state = 'pending' AND next_attempt_ms <= ? ORDER BY log_id, id LIMIT ?`),
      nextDue: db.prepare(`SELECT MIN(next_attempt_ms) AS at FROM deliveries WHERE state = 'pending'`),
      delivered: db.prepare(`UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_attempt_ms = @now, done_ms = @now, detail = @detail WHERE id = @id AND state = 'pending'`),
      failed: db.prepare(`UPDATE deliveries SET attempts = attempts + 1, last_attempt_ms = @now, next_attempt_ms = @next, last_error = @error WHERE id = @id AND state = 'pending'`),
      defer: db.prepare(`UPDATE deliveries SET next_attempt_ms = MAX(next_attempt_ms, @next) WHERE receiver = @receiver AND state = 'pending'`),
      abandon: db.prepare(`UPDATE deliveries SET state = 'abandoned', done_ms = @now, detail = @why WHERE id = @id AND state = 'pending'`),
      dueNow: db.prepare(`UPDATE deliveries SET next_attempt_ms = @now WHERE receiver = @receiver AND state = 'pending' AND next_attempt_ms > @now`),
      pendingCount: db.prepare(`SELECT count(*) AS n FROM deliveries WHERE state = 'pending'`),
      pendingReceivers: db.prepare(`SELECT DISTINCT receiver FROM deliveries WHERE state = 'pending'`),
      abandonReceiver: db.prepare(`UPDATE deliveries SET state = 'abandoned', done_ms = @now, detail = @why WHERE receiver = @receiver AND state = 'pending'`),
      list: db.prepare('SELECT * FROM deliveries ORDER BY id DESC LIMIT ?'),
      // The newest outcome a receiver gave: the latest attempt, or an abandonment without one.
      lastOutcome: db.prepare(`SELECT * FROM deliveries WHERE receiver = ? AND (last_attempt_ms IS NOT NULL OR done_ms IS NOT NULL) ORDER BY COALESCE(last_attempt_ms, done_ms) DESC, id DESC LIMIT 1`),
      pendingOf: db.prepare(`SELECT count(*) AS n FROM deliveries WHERE receiver = ? AND state = 'pending'`),
      listOfState: db.prepare('SELECT * FROM deliveries WHERE state = ? ORDER BY id DESC LIMIT ?'),
      trim: db.prepare(`DELETE FROM deliveries WHERE state != 'pending' AND id NOT IN (SELECT id FROM deliveries WHERE state != 'pending' ORDER BY id DESC LIMIT ?)`),
    };
  }

  /** Opens (creating it and its folder) and migrates the outbox at `file`; `NOTIFY_OUTBOX` when it cannot. */
  static open(file: string): Outbox {
    // NORMAL: a delivery lost to a power cut is one the event log turns into a delivery again.
    return new Outbox(openSqlite(file, { what: 'notification outbox', code: 'NOTIFY_OUTBOX', migrations: MIGRATIONS, synchronous: 'NORMAL' }), file);
  }

  /** How many deliveries wait to go out (the metrics' outbox depth). */
  pendingCount(): number {
    return this.guard('count pending deliveries', () => int(this.file, this.stmt.pendingCount.get() as Row, 'n', 'pending count'));
  }

  /** The newest event-log id already turned into deliveries; null for a new outbox. */
  cursor(): number | null {
    return this.guard('read the cursor', () => {
      const row = this.stmt.cursor.get() as Row | undefined;
      return row === undefined ? null : int(this.file, row, 'last_log_id', 'cursor');
    });
  }

  setCursor(logId: number): void {
    this.guard('move the cursor', () => this.stmt.setCursor.run(logId));
  }

  /**
   * Records a pending delivery of each alert to each receiver, and moves the cursor to `cursor`, in one
   * transaction. A pair already recorded is left as it is (never sent twice by a second enqueue). Returns how
   * many deliveries were new.
   */
  enqueue(alerts: readonly NotifyAlert[], receivers: readonly string[], cursor: number, nowMs: number): number {
    return this.guard('record deliveries', () =>
      this.db
        .transaction(() => {
          let added = 0;
          for (const a of alerts) {
            for (const receiver of receivers) {
              added += this.stmt.insert.run({ uid: a.uid, logId: a.logId, receiver, alert: JSON.stringify(alertJson(a)), now: nowMs }).changes;
            }
          }
          this.stmt.setCursor.run(cursor);
          return added;
        })
        .immediate(),
    );
  }

  /** Pending deliveries whose next attempt is due, oldest alert first. */
  due(nowMs: number, limit: number): Delivery[] {
    return this.guard('read due deliveries', () => (this.stmt.due.all(nowMs, limit) as Row[]).map((r) => this.delivery(r)));
  }

  /** When the earliest pending delivery is due; null when none is pending. */
  nextDueMs(): number | null {
    return this.guard('read the next due time', () => {
      const at = (this.stmt.nextDue.get() as Row)['at'];
      return typeof at === 'number' ? at : null;
    });
  }

  markDelivered(id: number, nowMs: number, detail: string): void {
    this.guard('mark a delivery done', () => this.stmt.delivered.run({ id, now: nowMs, detail }));
  }

  /**
   * Counts a failed attempt and sets the next; the receiver's other pending deliveries wait at least as long,
   * so that a receiver that is down gets one attempt per backoff period, not one per queued alert.
   */
  markFailed(id: number, receiver: string, nowMs: number, error: string, nextAttemptMs: number): void {
    this.guard('record a failed attempt', () =>
      this.db
        .transaction(() => {
          this.stmt.failed.run({ id, now: nowMs, next: nextAttemptMs, error });
          this.stmt.defer.run({ receiver, next: nextAttemptMs });
        })
        .immediate(),
    );
  }

  abandon(id: number, nowMs: number, why: string): void {
    this.guard('abandon a delivery', () => this.stmt.abandon.run({ id, now: nowMs, why }));
  }

  /** Makes a receiver's pending deliveries due now (its settings changed: the backoff was for the old ones); returns how many. */
  retryNow(receiver: string, nowMs: number): number {
    return this.guard('retry deliveries now', () => this.stmt.dueNow.run({ receiver, now: nowMs }).changes);
  }

  /** Abandons the pending deliveries of receivers no longer configured; returns those receivers. */
  abandonReceiversNotIn(receivers: readonly string[], nowMs: number): string[] {
    return this.guard('abandon unconfigured receivers', () =>
      this.db
        .transaction(() => {
          const gone = (this.stmt.pendingReceivers.all() as Row[]).map((r) => String(r['receiver'])).filter((r) => !receivers.includes(r));
          for (const receiver of gone) this.stmt.abandonReceiver.run({ receiver, now: nowMs, why: 'the receiver is no longer configured' });
          return gone;
        })
        .immediate(),
    );
  }

  /** Deliveries newest first, at most `limit`, optionally of one state (the console, the tests). */
  list(opts: { limit: number; state?: DeliveryState }): Delivery[] {
    return this.guard('list deliveries', () => {
      const rows = (opts.state === undefined ? this.stmt.list.all(opts.limit) : this.stmt.listOfState.all(opts.state, opts.limit)) as Row[];
      return rows.map((r) => this.delivery(r));
    });
  }

  /**
   * What the console and the CLI show of one receiver: its deliveries waiting, and the delivery of its
   * latest outcome (delivered, a failed attempt now waiting for its retry, or abandoned); null before any.
   */
  receiverSummary(receiver: string): { pending: number; last: Delivery | null } {
    return this.guard('summarise a receiver', () => {
      const row = this.stmt.lastOutcome.get(receiver) as Row | undefined;
      return { pending: int(this.file, this.stmt.pendingOf.get(receiver) as Row, 'n', 'pending count'), last: row === undefined ? null : this.delivery(row) };
    });
  }

  /** Drops finished deliveries beyond the newest `OUTBOX_DONE_MAX_ROWS`. */
  trim(): void {
    this.guard('trim finished deliveries', () => this.stmt.trim.run(OUTBOX_DONE_MAX_ROWS));
  }

  close(): void {
    this.db.close();
  }

  private delivery(r: Row): Delivery {
    const key = String(r['id']);
    const alert = alertFromJson(safeJson(String(r['alert'])));
    if (alert === null) throw corrupt(this.file, key, 'alert', 'is not an alert as Lockstep writes it');
    const state = r['state'];
    if (state !== 'pending' && state !== 'delivered' && state !== 'abandoned') throw corrupt(this.file, key, 'state', `is ${JSON.stringify(state)}`);
    const intOrNull = (c: string): number | null => (r[c] === null ? null : int(this.file, r, c, key));
    const strOrNull = (c: string): string | null => (r[c] === null ? null : String(r[c]));
    return {
      id: int(this.file, r, 'id', key),
      alertUid: String(r['alert_uid']),
      logId: int(this.file, r, 'log_id', key),
      receiver: String(r['receiver']),
      alert,
      state,
      attempts: int(this.file, r, 'attempts', key),
      createdMs: int(this.file, r, 'created_ms', key),
      nextAttemptMs: int(this.file, r, 'next_attempt_ms', key),
      lastAttemptMs: intOrNull('last_attempt_ms'),
      doneMs: intOrNull('done_ms'),
      lastError: strOrNull('last_error'),
      detail: strOrNull('detail'),
    };
  }

  private guard<T>(doing: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof Database.SqliteError)) throw e;
      throw new LockstepError('NOTIFY_OUTBOX', `notification outbox ${this.file}: cannot ${doing}: ${e.message}`, { file: this.file, sqliteCode: e.code }, { cause: e });
    }
  }
}

/** The delay before attempt `attempts + 1` after `attempts` failed ones: doubling from `initialMs`, capped at `maxMs`. */
export function retryDelayMs(policy: { initialMs: number; maxMs: number }, attempts: number): number {
  const exp = Math.min(Math.max(attempts - 1, 0), 40);
  return Math.min(policy.initialMs * 2 ** exp, policy.maxMs);
}

function int(file: string, row: Row, column: string, key: string): number {
  const v = row[column];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw corrupt(file, key, column, `is ${JSON.stringify(v)}, not an integer`);
  return v;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function corrupt(file: string, row: string, column: string, why: string): LockstepError {
  return new LockstepError('NOTIFY_OUTBOX', `notification outbox ${file} holds a corrupt row: deliveries.${column} of row ${row} ${why}`, { file, row, column });
}
