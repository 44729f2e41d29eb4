/**
 * Opening one of lockstepd's SQLite files (the state database, the notification outbox, the users and the
 * audit log): folder made, WAL, the durability asked for, schema brought up to date step by step, and a file
 * written by a newer Lockstep refused. Every failure is the caller's error code, naming the file.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { LockstepError, type ErrorCode } from './errors.js';

export interface SqliteFile {
  /** What the file is, for messages: "state database", "the audit log"… */
  what: string;
  /** The error code of every failure to open it. */
  code: ErrorCode;
  /** Schema steps in order; after step i the file's `user_version` is i + 1. A step is never changed once shipped. */
  migrations: readonly string[];
  /**
   * FULL syncs the WAL at every commit (a commit survives a power loss); NORMAL only at checkpoints (it
   * survives a process crash). Say which the data needs.
   */
  synchronous: 'FULL' | 'NORMAL';
  foreignKeys?: boolean;
}

/** Opens (creating it and its folder) and migrates `file`. */
export function openSqlite(file: string, spec: SqliteFile): Database.Database {
  let db: Database.Database | null = null;
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    // A second handle (the CLI, a restarting daemon) waits this long for a write lock (busy_timeout).
    db = new Database(file, { timeout: 5000 });
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${spec.synchronous}`);
    if (spec.foreignKeys) db.pragma('foreign_keys = ON');
    migrate(db, file, spec);
    return db;
  } catch (e) {
    db?.close();
    if (e instanceof LockstepError) throw e;
    throw new LockstepError(spec.code, `${spec.what} ${file} cannot be opened: ${(e as Error).message}`, { file }, { cause: e });
  }
}

/**
 * One step per transaction. Each step takes the write lock first and reads the version again under it, so
 * two processes opening a fresh file cannot both apply it.
 */
function migrate(db: Database.Database, file: string, spec: SqliteFile): void {
  const known = spec.migrations.length;
  const version = (): number => db.pragma('user_version', { simple: true }) as number;
  const found = version();
  if (found > known) {
    throw new LockstepError(
      spec.code,
      `${spec.what} ${file} has schema version ${found}, newer than this lockstepd knows (${known}): run the Lockstep version that wrote it`,
      { file, version: found, known },
    );
  }
  for (const [i, sql] of spec.migrations.entries()) {
    if (i < found) continue;
    db.transaction(() => {
      if (version() > i) return;
      db.exec(sql);
      db.pragma(`user_version = ${i + 1}`);
    }).immediate();
  }
}
