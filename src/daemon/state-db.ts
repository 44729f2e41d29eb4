/**
 * lockstepd's durable state, in one SQLite database: the core's `Durable` (written before any effect but
 * `stop-vm` runs), the boot counter ("incarnation") and the event log behind the audit log and alerts.
 *
 * ```
 * boot    one row: the incarnation of the latest boot; never goes back, never reused
 * pair    one row: the Durable's scalars (epoch, authority, quorum servers, proposal, clock, flags)
 * vms     one row per VmRecord, keyed by VM name
 * faults  the Durable's fault history, in order (equal times are real: one health report, several faults)
 * log     core events and alerts, newest LOG_MAX_ROWS kept; ids are paging cursors
 * copies  HA's disk copies (core/types.ts CopyRecord)
 * snapshots  this host's snapshots and imported images (src/daemon/snapshots.ts): not replicated
 * ```
 *
 * The schema is relational so that SQLite's constraints check enums and types on every write, and a corrupt
 * row is reported by table, column and row rather than as an unreadable blob. Every read is checked again:
 * a row that passes neither is never handed to the core.
 */
import Database from 'better-sqlite3';
import type { Authority, Durable, VmRecord } from '../core/types.js';
import { assert } from '../util/assert.js';
import { LockstepError } from '../util/errors.js';
import { openSqlite } from '../util/sqlite.js';

/** One line of the event log: a core event (`kind: 'event'`) or an alert effect (`kind: 'alert'`). */
export interface LogEntry {
  /** Wall-clock time: the log is read across reboots, which the core's monotonic clock does not survive. */
  wallMs: number;
  /** The core's monotonic time of the decision: orders entries within one boot. */
  atMs: number;
  host: string;
  kind: 'event' | 'alert';
  severity: 'info' | 'warning' | 'critical' | null;
  code: string | null;
  what: string;
  cause: string;
}

/**
 * The log keeps the newest this many rows: a few months of a busy pair's events, a few tens of MB on disk.
 * Older rows are deleted as new ones come, so the log never fills the disk the Durable needs.
 */
export const LOG_MAX_ROWS = 100_000;

/**
 * Schema steps, applied in order; after step i the database's `user_version` is i + 1. A step is never
 * edited once released: a change is a new step. Tables are STRICT, so a value of the wrong type is refused
 * on write; vms and faults reference the pair row, so they cannot outlive or precede the state they belong to.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE boot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    incarnation INTEGER NOT NULL CHECK (incarnation >= 0)
  ) STRICT;
  INSERT INTO boot (id, incarnation) VALUES (1, 0);

  CREATE TABLE pair (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    epoch         INTEGER NOT NULL CHECK (epoch >= 0),
    authority     TEXT NOT NULL CHECK (authority IN ('none', 'pair', 'quorum', 'tiebreak')),
    active_quorum TEXT,
    quorum_set    TEXT NOT NULL,
    proposal      TEXT,
    clock         INTEGER NOT NULL CHECK (clock >= 0),
    declared_down INTEGER NOT NULL CHECK (declared_down IN (0, 1)),
    maintenance   INTEGER NOT NULL CHECK (maintenance IN (0, 1))
  ) STRICT;

  CREATE TABLE vms (
    name        TEXT NOT NULL PRIMARY KEY,
    pair        INTEGER NOT NULL DEFAULT 1 REFERENCES pair (id),
    desired     TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
    protection  TEXT NOT NULL CHECK (protection IN ('none', 'ha', 'ft')),
    hardware    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    by_host     TEXT NOT NULL,
    removed     INTEGER NOT NULL CHECK (removed IN (0, 1)),
    owner_host  TEXT NOT NULL,
    owner_epoch INTEGER NOT NULL,
    owner_seq   INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE faults (
    position INTEGER PRIMARY KEY,
    pair     INTEGER NOT NULL DEFAULT 1 REFERENCES pair (id),
    wall_ms  INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_ms  INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    host     TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('event', 'alert')),
    severity TEXT CHECK (severity IN ('info', 'warning', 'critical')),
    code     TEXT,
    what     TEXT NOT NULL,
    cause    TEXT NOT NULL
  ) STRICT;
  CREATE INDEX log_kind ON log (kind, id);
  `,
  // 2: HA's disk copies (what a takeover may rely on: core/types.ts CopyRecord).
  `
  CREATE TABLE copies (
    vm      TEXT NOT NULL PRIMARY KEY,
    pair    INTEGER NOT NULL DEFAULT 1 REFERENCES pair (id),
    stream  TEXT,
    current INTEGER NOT NULL CHECK (current IN (0, 1)),
    epoch   INTEGER NOT NULL CHECK (epoch >= 0)
  ) STRICT;
  `,
  // 3: this host's snapshots and imported images (src/daemon/snapshots.ts); the host's own, not the pair's.
  `
  CREATE TABLE snapshots (
    id            TEXT NOT NULL PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('snapshot', 'image')),
    vm            TEXT,
    storage_group TEXT NOT NULL,
    file          TEXT NOT NULL,
    format        TEXT NOT NULL CHECK (format IN ('qcow2', 'raw')),
    created_ms    INTEGER NOT NULL,
    virtual_bytes INTEGER NOT NULL CHECK (virtual_bytes >= 0),
    state         TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'failed')),
    description   TEXT NOT NULL,
    error         TEXT,
    CHECK ((kind = 'snapshot') = (vm IS NOT NULL))
  ) STRICT;
  `,
  // 4: VMs have several disks: a snapshot is of one of them (its index in the VM's hardware); the snapshots
  // taken before were of the one disk a VM had.
  `
  ALTER TABLE snapshots ADD COLUMN disk INTEGER CHECK (disk IS NULL OR disk >= 0);
  UPDATE snapshots SET disk = 0 WHERE kind = 'snapshot';
  `,
];

/** A snapshot or imported image as this host's state database keeps it (src/daemon/snapshots.ts). */
export interface SnapshotRow {
  id: string;
  kind: 'snapshot' | 'image';
  /** The VM it was taken of (null: an imported image). */
  vm: string | null;
  /** Which of the VM's disks, its index in the VM's hardware (null: an imported image). */
  disk: number | null;
  storageGroup: string;
  /** Its file's name in the group's `snapshots/` directory. */
  file: string;
  format: 'qcow2' | 'raw';
  createdMs: number;
  virtualBytes: number;
  state: 'creating' | 'ready' | 'failed';
  description: string;
  error: string | null;
}

/** The schema version this code writes: a database with a higher `user_version` is refused. */
export const STATE_DB_SCHEMA_VERSION = MIGRATIONS.length;

const AUTHORITIES: readonly Authority[] = ['none', 'pair', 'quorum', 'tiebreak'];
const SEVERITIES = ['info', 'warning', 'critical'] as const;
const LOG_KINDS = ['event', 'alert'] as const;

type Row = Record<string, unknown>;

export class StateDb {
  private readonly stmt;

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
  ) {
    this.stmt = {
      nextIncarnation: db.prepare('UPDATE boot SET incarnation = incarnation + 1 WHERE id = 1 RETURNING incarnation'),
      pair: db.prepare('SELECT * FROM pair WHERE id = 1'),
      vms: db.prepare('SELECT * FROM vms ORDER BY name'),
      faults: db.prepare('SELECT * FROM faults ORDER BY position'),
      copies: db.prepare('SELECT * FROM copies ORDER BY vm'),
      // An upsert, not INSERT OR REPLACE: replacing deletes the row first, which the vms and faults that
      // reference it forbid.
      upsertPair: db.prepare(`
        INSERT INTO pair (id, epoch, authority, active_quorum, quorum_set, proposal, clock, declared_down, maintenance)
        VALUES (1, @epoch, @authority, @activeQuorum, @quorumSet, @proposal, @clock, @declaredDown, @maintenance)
        ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, authority = excluded.authority,
          active_quorum = excluded.active_quorum, quorum_set = excluded.quorum_set, proposal = excluded.proposal,
          clock = excluded.clock, declared_down = excluded.declared_down, maintenance = excluded.maintenance`),
      clearVms: db.prepare('DELETE FROM vms'),
      insertVm: db.prepare(`
        INSERT INTO vms (name, desired, protection, hardware, version, by_host, removed, owner_host, owner_epoch, owner_seq)
        VALUES (@name, @desired, @protection, @hardware, @version, @by, @removed, @ownerHost, @ownerEpoch, @ownerSeq)`),
      clearFaults: db.prepare('DELETE FROM faults'),
      insertFault: db.prepare('INSERT INTO faults (position, wall_ms) VALUES (?, ?)'),
      clearCopies: db.prepare('DELETE FROM copies'),
      insertCopy: db.prepare('INSERT INTO copies (vm, stream, current, epoch) VALUES (@vm, @stream, @current, @epoch)'),
      insertLog: db.prepare(`
        INSERT INTO log (wall_ms, at_ms, host, kind, severity, code, what, cause)
        VALUES (@wallMs, @atMs, @host, @kind, @severity, @code, @what, @cause)`),
      trimLog: db.prepare('DELETE FROM log WHERE id <= ?'),
      snapshots: db.prepare('SELECT * FROM snapshots ORDER BY created_ms, id'),
      upsertSnapshot: db.prepare(`
        INSERT INTO snapshots (id, kind, vm, disk, storage_group, file, format, created_ms, virtual_bytes, state, description, error)
        VALUES (@id, @kind, @vm, @disk, @storageGroup, @file, @format, @createdMs, @virtualBytes, @state, @description, @error)
        ON CONFLICT (id) DO UPDATE SET virtual_bytes = excluded.virtual_bytes, state = excluded.state, error = excluded.error, created_ms = excluded.created_ms`),
      deleteSnapshot: db.prepare('DELETE FROM snapshots WHERE id = ?'),
      logAfter: db.prepare('SELECT * FROM log WHERE id > ? ORDER BY id ASC LIMIT ?'),
      recentLog: db.prepare('SELECT * FROM log WHERE id < ? ORDER BY id DESC LIMIT ?'),
      recentLogOfKind: db.prepare('SELECT * FROM log WHERE kind = ? AND id < ? ORDER BY id DESC LIMIT ?'),
    };
  }

  /**
   * Opens (creating it and its folder if needed) and migrates the database at `file`. Throws `STATE_DB`
   * when it is not a SQLite database, cannot be opened, or was written by a newer Lockstep.
   */
  static open(file: string): StateDb {
    // FULL: a Durable saved before effects ran (and an incarnation handed out) must survive a power loss.
    const db = openSqlite(file, { what: 'state database', code: 'STATE_DB', migrations: MIGRATIONS, synchronous: 'FULL', foreignKeys: true });
    return new StateDb(db, file);
  }

  /** The next boot's incarnation: committed before it is returned, so no two boots ever share one. */
  nextIncarnation(): number {
    return this.guard('count this boot', () => {
      const row = this.db.transaction(() => this.stmt.nextIncarnation.get() as Row | undefined).immediate();
      if (row === undefined) throw corrupt(this.file, 'boot', 'incarnation', 1, 'is missing');
      return new RowReader(this.file, 'boot', row, 1).int('incarnation');
    });
  }

  /** The Durable as last saved, or null when none was ever saved (a fresh host). */
  loadDurable(): Durable | null {
    return this.guard('read the durable state', () =>
      this.db.transaction(() => {
        const pairRow = this.stmt.pair.get() as Row | undefined;
        if (pairRow === undefined) return null;
        const p = new RowReader(this.file, 'pair', pairRow, 1);
        const vms: Record<string, VmRecord> = {};
        for (const row of this.stmt.vms.all() as Row[]) {
          const r = new RowReader(this.file, 'vms', row, String(row['name']));
          const name = r.str('name');
          vms[name] = {
            config: {
              name,
              desired: r.oneOf('desired', ['running', 'stopped'] as const),
              protection: r.oneOf('protection', ['none', 'ha', 'ft'] as const),
              hardware: r.json('hardware', isPlainObject, 'a JSON object'),
              version: r.int('version'),
              by: r.str('by_host'),
              removed: r.bool('removed'),
            },
            owner: { host: r.str('owner_host'), epoch: r.int('owner_epoch'), seq: r.int('owner_seq') },
          };
        }
        const faultHistory = (this.stmt.faults.all() as Row[]).map((row) => new RowReader(this.file, 'faults', row, String(row['position'])).int('wall_ms'));
        const copies: Durable['copies'] = {};
        for (const row of this.stmt.copies.all() as Row[]) {
          const r = new RowReader(this.file, 'copies', row, String(row['vm']));
          copies[r.str('vm')] = { stream: r.strOrNull('stream'), current: r.bool('current'), epoch: r.int('epoch') };
        }
        const proposal = p.json('proposal', isProposal, 'null or a JSON object { epoch, activeQuorum }');
        return {
          epoch: p.int('epoch'),
          authority: p.oneOf('authority', AUTHORITIES),
          quorumSet: p.json('quorum_set', isStringArray, 'a JSON array of strings'),
          activeQuorum: p.strOrNull('active_quorum'),
          // Rebuilt field by field: the stored JSON could carry more than a proposal has.
          proposal: proposal === null ? null : { epoch: proposal.epoch, activeQuorum: proposal.activeQuorum },
          vms,
          clock: p.int('clock'),
          declaredDown: p.bool('declared_down'),
          maintenance: p.bool('maintenance'),
          faultHistory,
          copies,
        };
      })(),
    );
  }

  /** Replaces the saved Durable with `d`, all of it or nothing (one transaction). */
  saveDurable(d: Durable): void {
    this.guard('write the durable state', () =>
      this.db
        .transaction(() => {
          this.stmt.upsertPair.run({
            epoch: d.epoch,
            authority: d.authority,
            activeQuorum: d.activeQuorum,
            quorumSet: JSON.stringify(d.quorumSet),
            proposal: d.proposal === null ? null : JSON.stringify({ epoch: d.proposal.epoch, activeQuorum: d.proposal.activeQuorum }),
            clock: d.clock,
            declaredDown: d.declaredDown ? 1 : 0,
            maintenance: d.maintenance ? 1 : 0,
          });
          this.stmt.clearVms.run();
          for (const [name, { config: c, owner: o }] of Object.entries(d.vms)) {
            assert(name === c.name, `VM record ${JSON.stringify(name)} holds the config of ${JSON.stringify(c.name)}`);
            this.stmt.insertVm.run({
              name,
              desired: c.desired,
              protection: c.protection,
              hardware: JSON.stringify(c.hardware),
              version: c.version,
              by: c.by,
              removed: c.removed ? 1 : 0,
              ownerHost: o.host,
              ownerEpoch: o.epoch,
              ownerSeq: o.seq,
            });
          }
          this.stmt.clearFaults.run();
          d.faultHistory.forEach((wallMs, i) => this.stmt.insertFault.run(i, wallMs));
          this.stmt.clearCopies.run();
          for (const [vm, c] of Object.entries(d.copies)) this.stmt.insertCopy.run({ vm, stream: c.stream, current: c.current ? 1 : 0, epoch: c.epoch });
        })
        .immediate(),
    );
  }

  /** Appends entries to the log (one transaction) and drops what falls beyond the newest `LOG_MAX_ROWS`. */
  appendLog(entries: readonly LogEntry[]): void {
    if (entries.length === 0) return;
    this.guard('append to the log', () =>
      this.db
        .transaction(() => {
          let lastId = 0;
          for (const e of entries) lastId = Number(this.stmt.insertLog.run(e).lastInsertRowid);
          // Ids are consecutive (AUTOINCREMENT, and a rolled-back append rolls its ids back too), so the
          // newest LOG_MAX_ROWS rows are exactly those above lastId - LOG_MAX_ROWS.
          this.stmt.trimLog.run(lastId - LOG_MAX_ROWS);
        })
        .immediate(),
    );
  }

  /** Log entries newest first: at most `limit`, only those older than `beforeId` (the next page), of `kind`. */
  recentLog(opts: { limit: number; beforeId?: number; kind?: 'event' | 'alert' }): (LogEntry & { id: number })[] {
    assert(Number.isSafeInteger(opts.limit) && opts.limit > 0, `log limit ${opts.limit} is not a positive integer`);
    const before = opts.beforeId ?? Number.MAX_SAFE_INTEGER;
    return this.guard('read the log', () =>
      ((opts.kind === undefined ? this.stmt.recentLog.all(before, opts.limit) : this.stmt.recentLogOfKind.all(opts.kind, before, opts.limit)) as Row[]).map((row) => this.logRow(row)),
    );
  }

  /** Log entries oldest first, those newer than `afterId`, at most `limit`: the live stream's catch-up. */
  logAfter(afterId: number, limit: number): (LogEntry & { id: number })[] {
    assert(Number.isSafeInteger(limit) && limit > 0, `log limit ${limit} is not a positive integer`);
    return this.guard('read the log', () => (this.stmt.logAfter.all(afterId, limit) as Row[]).map((row) => this.logRow(row)));
  }

  private logRow(row: Row): LogEntry & { id: number } {
    const r = new RowReader(this.file, 'log', row, String(row['id']));
    return {
      id: r.int('id'),
      wallMs: r.int('wall_ms'),
      atMs: r.int('at_ms'),
      host: r.str('host'),
      kind: r.oneOf('kind', LOG_KINDS),
      severity: row['severity'] === null ? null : r.oneOf('severity', SEVERITIES),
      code: r.strOrNull('code'),
      what: r.str('what'),
      cause: r.str('cause'),
    };
  }

  /** This host's snapshots and images, oldest first. */
  snapshots(): SnapshotRow[] {
    return this.guard('read the snapshots', () =>
      (this.stmt.snapshots.all() as Row[]).map((row) => {
        const r = new RowReader(this.file, 'snapshots', row, String(row['id']));
        return {
          id: r.str('id'),
          kind: r.oneOf('kind', ['snapshot', 'image'] as const),
          vm: r.strOrNull('vm'),
          disk: r.intOrNull('disk'),
          storageGroup: r.str('storage_group'),
          file: r.str('file'),
          format: r.oneOf('format', ['qcow2', 'raw'] as const),
          createdMs: r.int('created_ms'),
          virtualBytes: r.int('virtual_bytes'),
          state: r.oneOf('state', ['creating', 'ready', 'failed'] as const),
          description: r.str('description'),
          error: r.strOrNull('error'),
        };
      }),
    );
  }

  /** Writes a snapshot's row (new, or its state, size, time and error changed), durably before it returns. */
  saveSnapshot(row: SnapshotRow): void {
    this.guard('write a snapshot', () => this.stmt.upsertSnapshot.run(row));
  }

  deleteSnapshot(id: string): void {
    this.guard('delete a snapshot', () => this.stmt.deleteSnapshot.run(id));
  }

  close(): void {
    this.db.close();
  }

  /** Runs `fn`, turning SQLite's own errors (I/O, disk full, lock timeout) into `STATE_DB` saying what failed. */
  private guard<T>(doing: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof Database.SqliteError)) throw e;
      throw new LockstepError('STATE_DB', `state database ${this.file}: cannot ${doing}: ${e.message}`, { file: this.file, sqliteCode: e.code }, { cause: e });
    }
  }
}

/** Typed reads of one row's columns; a value of the wrong shape is a `STATE_DB` error naming the cell. */
class RowReader {
  constructor(
    private readonly file: string,
    private readonly table: string,
    private readonly row: Row,
    private readonly key: string | number,
  ) {}

  int(column: string): number {
    const v = this.row[column];
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw this.bad(column, `is ${JSON.stringify(v)}, not an integer`);
    return v;
  }

  str(column: string): string {
    const v = this.row[column];
    if (typeof v !== 'string') throw this.bad(column, `is ${JSON.stringify(v)}, not text`);
    return v;
  }

  strOrNull(column: string): string | null {
    return this.row[column] === null ? null : this.str(column);
  }

  intOrNull(column: string): number | null {
    return this.row[column] === null ? null : this.int(column);
  }

  bool(column: string): boolean {
    const v = this.row[column];
    if (v !== 0 && v !== 1) throw this.bad(column, `is ${JSON.stringify(v)}, not 0 or 1`);
    return v === 1;
  }

  oneOf<T extends string>(column: string, values: readonly T[]): T {
    const v = this.row[column];
    if (!values.includes(v as T)) throw this.bad(column, `is ${JSON.stringify(v)}, not one of ${values.join(', ')}`);
    return v as T;
  }

  /** A JSON text column; a SQL NULL reads as JSON null, which `check` accepts or refuses. */
  json<T>(column: string, check: (v: unknown) => v is T, expected: string): T {
    const text = this.row[column] === null ? 'null' : this.str(column);
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw this.bad(column, `is not valid JSON (${(e as Error).message})`, e);
    }
    if (!check(v)) throw this.bad(column, `is ${text}, not ${expected}`);
    return v;
  }

  private bad(column: string, why: string, cause?: unknown): LockstepError {
    return corrupt(this.file, this.table, column, this.key, why, cause);
  }
}

/** A `STATE_DB` error for a row that does not hold what its table promises. */
function corrupt(file: string, table: string, column: string, row: string | number, why: string, cause?: unknown): LockstepError {
  return new LockstepError('STATE_DB', `state database ${file} holds a corrupt row: ${table}.${column} of row ${row} ${why}`, { file, table, column, row }, cause === undefined ? undefined : { cause });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

function isProposal(v: unknown): v is Durable['proposal'] {
  if (v === null) return true;
  if (!isPlainObject(v)) return false;
  const { epoch, activeQuorum } = v;
  return typeof epoch === 'number' && Number.isSafeInteger(epoch) && (activeQuorum === null || typeof activeQuorum === 'string');
}
