// lockstepd's state database on real files: exact round trips, a boot counter that never repeats, schema
// versions, corrupt files and rows, the bounded log, and state that survives a process killed after saving.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Durable, VmRecord } from '../../src/core/types.js';
import { LOG_MAX_ROWS, STATE_DB_SCHEMA_VERSION, StateDb, type LogEntry } from '../../src/daemon/state-db.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-state-db-test-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function openDb(file: string): StateDb {
  const db = StateDb.open(file);
  cleanup.add(() => db.close());
  return db;
}

/** A raw handle, for looking under the module and for corrupting what it wrote. */
function rawDb(file: string): Database.Database {
  const db = new Database(file);
  cleanup.add(() => db.close());
  return db;
}

function vm(name: string, patch: Partial<VmRecord['config']> = {}, owner: VmRecord['owner'] = { host: 'host1', epoch: 3, seq: 0 }): VmRecord {
  return {
    config: { name, desired: 'running', protection: 'ft', hardware: { vcpus: 1, memoryMiB: 256, nics: [{ mac: '52:54:00:00:00:01', address: '10.0.0.5' }] }, version: 1, by: 'host1', removed: false, ...patch },
    owner,
  };
}

const rich: Durable = {
  epoch: 7,
  authority: 'quorum',
  quorumSet: ['quorum1', 'quorum2'],
  activeQuorum: 'quorum2',
  proposal: { epoch: 8, activeQuorum: null },
  vms: {
    web: vm('web'),
    db: vm('db', { desired: 'stopped', protection: 'ha', version: 12, by: 'host2', hardware: { disks: [{ sizeMiB: 64 }], note: 'ünïcode "quoted"', flag: true, none: null } }, { host: 'host2', epoch: 7, seq: 4 }),
    old: vm('old', { removed: true, protection: 'none', hardware: {} }, { host: 'host1', epoch: 0, seq: 2 }),
  },
  clock: 12,
  declaredDown: true,
  maintenance: true,
  faultHistory: [1_700_000_000_000, 1_700_000_005_000, 1_700_000_005_000, 1_699_999_999_000],
  copies: { db: { stream: 'host2.4.17', current: true, epoch: 6 }, old: { stream: null, current: false, epoch: 0 } },
};

const fresh: Durable = {
  epoch: 0,
  authority: 'none',
  quorumSet: [],
  activeQuorum: null,
  proposal: null,
  vms: {},
  clock: 0,
  declaredDown: false,
  maintenance: false,
  faultHistory: [],
  copies: {},
};

function isStateDbError(re: RegExp): (e: unknown) => boolean {
  return (e) => isLockstepError(e, 'STATE_DB') && re.test(e.message);
}

test('a Durable round-trips exactly, each save replacing the last', async () => {
  const file = path.join(await tempDir(), 'nested', 'folder', 'state.db');
  const db = openDb(file);
  assert.equal(db.loadDurable(), null);

  const cases: Durable[] = [
    rich,
    fresh,
    { ...rich, quorumSet: ['quorum1'], activeQuorum: 'quorum1', proposal: null, authority: 'pair', declaredDown: false },
    { ...rich, quorumSet: [], activeQuorum: null, proposal: { epoch: 9, activeQuorum: 'quorum1' }, authority: 'tiebreak', vms: { web: vm('web') }, faultHistory: [5] },
    rich,
  ];
  for (const d of cases) {
    db.saveDurable(d);
    assert.deepEqual(db.loadDurable(), d);
  }
  db.close();
  assert.deepEqual(openDb(file).loadDurable(), rich);
});

test('a VM keyed under another name is a bug, and a failed save changes nothing', async () => {
  const db = openDb(path.join(await tempDir(), 'state.db'));
  db.saveDurable(rich);
  assert.throws(() => db.saveDurable({ ...fresh, epoch: 99, vms: { web: vm('db') } }), /invariant broken: VM record "web" holds the config of "db"/);
  assert.deepEqual(db.loadDurable(), rich);
});

test('the incarnation strictly increases across close and reopen', async () => {
  const file = path.join(await tempDir(), 'state.db');
  const seen: number[] = [];
  for (let boot = 0; boot < 3; boot++) {
    const db = StateDb.open(file);
    seen.push(db.nextIncarnation(), db.nextIncarnation());
    db.close();
  }
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
});

test('an empty file is migrated to the current schema; reopening migrates nothing and keeps the data', async () => {
  const file = path.join(await tempDir(), 'state.db');
  await writeFile(file, '');
  const db = StateDb.open(file);
  db.saveDurable(rich);
  db.appendLog([entry(1)]);
  const incarnation = db.nextIncarnation();
  db.close();
  const raw = rawDb(file);
  assert.equal(raw.pragma('user_version', { simple: true }), STATE_DB_SCHEMA_VERSION);
  assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  const tables = (): unknown => raw.prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name").all();
  const before = tables();
  assert.deepEqual(before, [{ name: 'boot' }, { name: 'copies' }, { name: 'faults' }, { name: 'log' }, { name: 'log_kind' }, { name: 'pair' }, { name: 'snapshots' }, { name: 'vms' }]);

  const again = openDb(file);
  assert.deepEqual(tables(), before);
  assert.equal(raw.pragma('user_version', { simple: true }), STATE_DB_SCHEMA_VERSION);
  assert.deepEqual(again.loadDurable(), rich);
  assert.equal(again.recentLog({ limit: 10 }).length, 1);
  assert.equal(again.nextIncarnation(), incarnation + 1);
});

test('a database written by a newer schema is refused, naming both versions', async () => {
  const file = path.join(await tempDir(), 'state.db');
  StateDb.open(file).close();
  const raw = new Database(file);
  raw.pragma(`user_version = ${STATE_DB_SCHEMA_VERSION + 1}`);
  raw.close();
  assert.throws(
    () => StateDb.open(file),
    (e) =>
      isStateDbError(new RegExp(`schema version ${STATE_DB_SCHEMA_VERSION + 1}, newer than this lockstepd knows \\(${STATE_DB_SCHEMA_VERSION}\\)`))(e) &&
      isLockstepError(e) &&
      e.fields['file'] === file,
  );
});

test('a file that is not a SQLite database is refused, naming the file, and left as it was', async () => {
  const file = path.join(await tempDir(), 'state.db');
  const content = 'not a database, just text\n'.repeat(200);
  await writeFile(file, content);
  assert.throws(() => StateDb.open(file), (e) => isStateDbError(/cannot be opened: file is not a database/)(e) && isLockstepError(e) && e.message.includes(file) && e.fields['file'] === file);
  assert.equal(await readFile(file, 'utf8'), content);
});

for (const [what, table, column, sql, row] of [
  ['JSON that does not parse', 'pair', 'quorum_set', `UPDATE pair SET quorum_set = '["quorum1",'`, '1'],
  ['JSON of the wrong shape', 'pair', 'quorum_set', `UPDATE pair SET quorum_set = '["quorum1", 2]'`, '1'],
  ['a proposal without an epoch', 'pair', 'proposal', `UPDATE pair SET proposal = '{"activeQuorum": null}'`, '1'],
  ['hardware that does not parse', 'vms', 'hardware', `UPDATE vms SET hardware = '{"vcpus": 1' WHERE name = 'db'`, 'db'],
  ['hardware that is an array', 'vms', 'hardware', `UPDATE vms SET hardware = '[1]' WHERE name = 'web'`, 'web'],
  // Past the CHECK constraints, as a damaged file or a hand edit could be: the read checks again.
  ['an unknown authority', 'pair', 'authority', `UPDATE pair SET authority = 'bogus'`, '1'],
  ['an unknown protection', 'vms', 'protection', `UPDATE vms SET protection = 'gold' WHERE name = 'old'`, 'old'],
  ['a flag that is not 0 or 1', 'pair', 'maintenance', `UPDATE pair SET maintenance = 2`, '1'],
] as const) {
  test(`a corrupt row (${what}) makes loadDurable fail naming ${table}.${column}`, async () => {
    const file = path.join(await tempDir(), 'state.db');
    openDb(file).saveDurable(rich);
    const raw = rawDb(file);
    raw.pragma('ignore_check_constraints = ON');
    assert.equal(raw.prepare(sql).run().changes, 1);
    const db = openDb(file);
    assert.throws(
      () => db.loadDurable(),
      (e) =>
        isLockstepError(e, 'STATE_DB') &&
        e.message.includes(`holds a corrupt row: ${table}.${column} of row ${row}`) &&
        e.fields['table'] === table &&
        e.fields['column'] === column &&
        String(e.fields['row']) === row,
    );
  });
}

test('the schema refuses an unknown enum value or a value of the wrong type on write', async () => {
  const file = path.join(await tempDir(), 'state.db');
  openDb(file).saveDurable(rich);
  const raw = rawDb(file);
  assert.throws(() => raw.prepare(`UPDATE pair SET authority = 'bogus'`).run(), /CHECK constraint failed/);
  assert.throws(() => raw.prepare(`UPDATE vms SET version = 'one'`).run(), /cannot store TEXT value in INTEGER column vms.version/);
  raw.pragma('foreign_keys = ON');
  assert.throws(() => raw.prepare(`INSERT INTO faults (position, pair, wall_ms) VALUES (9, 2, 0)`).run(), /FOREIGN KEY constraint failed/);
});

function entry(i: number, patch: Partial<LogEntry> = {}): LogEntry {
  return { wallMs: 1_700_000_000_000 + i, atMs: 1000 + i, host: 'host1', kind: 'event', severity: null, code: null, what: `event ${i}`, cause: `cause ${i}`, ...patch };
}

test('the log returns entries newest first, by kind, a page at a time', async () => {
  const db = openDb(path.join(await tempDir(), 'state.db'));
  assert.deepEqual(db.recentLog({ limit: 5 }), []);
  const entries: LogEntry[] = [];
  for (let i = 1; i <= 10; i++) entries.push(i % 3 === 0 ? entry(i, { kind: 'alert', severity: i === 9 ? 'critical' : 'warning', code: `CODE_${i}`, cause: '' }) : entry(i));
  db.appendLog(entries.slice(0, 4));
  db.appendLog([]);
  db.appendLog(entries.slice(4));

  const all = db.recentLog({ limit: 100 });
  assert.deepEqual(
    all,
    entries.map((e, i) => ({ id: i + 1, ...e })).reverse(),
  );
  const page1 = db.recentLog({ limit: 4 });
  assert.deepEqual(page1.map((e) => e.id), [10, 9, 8, 7]);
  const page2 = db.recentLog({ limit: 4, beforeId: page1.at(-1)?.id });
  assert.deepEqual(page2.map((e) => e.id), [6, 5, 4, 3]);
  assert.deepEqual(db.recentLog({ limit: 4, beforeId: 3 }).map((e) => e.id), [2, 1]);
  assert.deepEqual(db.recentLog({ limit: 4, beforeId: 1 }), []);

  const alerts = db.recentLog({ limit: 10, kind: 'alert' });
  assert.deepEqual(alerts.map((e) => [e.id, e.severity, e.code]), [[9, 'critical', 'CODE_9'], [6, 'warning', 'CODE_6'], [3, 'warning', 'CODE_3']]);
  assert.deepEqual(db.recentLog({ limit: 2, kind: 'event', beforeId: 7 }).map((e) => e.id), [5, 4]);
  assert.throws(() => db.recentLog({ limit: 0 }), /invariant broken: log limit 0/);
});

test(`the log keeps the newest ${LOG_MAX_ROWS} entries`, async () => {
  const file = path.join(await tempDir(), 'state.db');
  const db = openDb(file);
  db.appendLog(Array.from({ length: LOG_MAX_ROWS - 1 }, (_, i) => entry(i + 1)));
  db.appendLog([entry(LOG_MAX_ROWS), entry(LOG_MAX_ROWS + 1), entry(LOG_MAX_ROWS + 2)]);
  const raw = rawDb(file);
  assert.deepEqual(raw.prepare('SELECT count(*) AS n, min(id) AS oldest, max(id) AS newest FROM log').get(), { n: LOG_MAX_ROWS, oldest: 3, newest: LOG_MAX_ROWS + 2 });
  assert.deepEqual(db.recentLog({ limit: 1, beforeId: 4 }).map((e) => [e.id, e.what]), [[3, 'event 3']]);
});

test('what a process saved survives it being killed before it closes the database', async () => {
  const file = path.join(await tempDir(), 'state.db');
  const module = new URL('../../src/daemon/state-db.js', import.meta.url).href;
  const script = `
    import { StateDb } from ${JSON.stringify(module)};
    const db = StateDb.open(process.argv[1]);
    db.nextIncarnation();
    db.nextIncarnation();
    db.saveDurable(JSON.parse(process.argv[2]));
    db.appendLog([JSON.parse(process.argv[3])]);
    process.kill(process.pid, 'SIGKILL');
  `;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script, file, JSON.stringify(rich), JSON.stringify(entry(1))], { encoding: 'utf8' });
  assert.equal(child.signal, 'SIGKILL', child.stderr);

  const db = openDb(file);
  assert.deepEqual(db.loadDurable(), rich);
  assert.deepEqual(db.recentLog({ limit: 10 }), [{ id: 1, ...entry(1) }]);
  assert.equal(db.nextIncarnation(), 3);
});

test('a second handle sees what the first committed while the first is still open', async () => {
  const file = path.join(await tempDir(), 'state.db');
  const first = openDb(file);
  first.saveDurable(rich);
  assert.equal(first.nextIncarnation(), 1);
  const second = openDb(file);
  assert.deepEqual(second.loadDurable(), rich);
  assert.equal(second.nextIncarnation(), 2);
  first.saveDurable(fresh);
  assert.deepEqual(second.loadDurable(), fresh);
});
