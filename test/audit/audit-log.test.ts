/**
 * The audit log on real SQLite files: user actions appended and never updated, read together with a real
 * state database's event log, newest first, filtered, and paged with cursors that give every entry once.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AuditLog, CORE_SCAN_MAX, type UserAction } from '../../src/audit/audit-log.js';
import { StateDb, type LogEntry } from '../../src/daemon/state-db.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function open(): Promise<{ audit: AuditLog; db: StateDb; file: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-audit-test-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const db = StateDb.open(path.join(dir, 'lockstepd.db'));
  cleanup.add(() => db.close());
  const file = path.join(dir, 'audit.db');
  const audit = AuditLog.open(file, 'host1', (o) => db.recentLog(o));
  cleanup.add(() => audit.close());
  return { audit, db, file };
}

function action(wallMs: number, patch: Partial<UserAction> = {}): UserAction {
  return { wallMs, user: 'ann', client: '192.0.2.7', operation: 'startVm', method: 'POST', path: '/api/v1/vms/web/start', target: 'web', result: 'ok', status: 200, code: null, message: null, ...patch };
}

function core(wallMs: number, kind: 'event' | 'alert', what: string): LogEntry {
  return { wallMs, atMs: wallMs, host: 'host1', kind, severity: kind === 'alert' ? 'warning' : null, code: kind === 'alert' ? 'SOME_ALERT' : null, what, cause: 'tick' };
}

test('user actions and core entries come back merged, newest first, with their fields', async () => {
  const { audit, db } = await open();
  db.appendLog([core(1000, 'event', 'host state booting → solo'), core(3000, 'alert', 'peer lost')]);
  audit.append(action(2000));
  audit.append(action(4000, { user: null, operation: 'removeVm', result: 'denied', status: 401, code: 'NOT_AUTHENTICATED', message: 'log in first' }));
  const { entries, next } = audit.query({ limit: 10 });
  assert.equal(next, null);
  assert.deepEqual(entries.map((e) => [e.kind, e.wallMs]), [['user', 4000], ['alert', 3000], ['user', 2000], ['event', 1000]]);
  assert.deepEqual(entries[0], {
    id: entries[0]!.id, kind: 'user', at: new Date(4000).toISOString(), wallMs: 4000, host: 'host1', user: null, client: '192.0.2.7', operation: 'removeVm',
    method: 'POST', path: '/api/v1/vms/web/start', target: 'web', result: 'denied', status: 401, severity: null, code: 'NOT_AUTHENTICATED', message: 'log in first', cause: null,
  });
  assert.equal(entries[1]!.code, 'SOME_ALERT');
  assert.equal(entries[1]!.severity, 'warning');
  assert.equal(entries[1]!.message, 'peer lost');
});

test('filters: kind, user, text (case-insensitive, in either source)', async () => {
  const { audit, db } = await open();
  db.appendLog([core(1, 'event', 'operator defined VM Web'), core(2, 'alert', 'disk failed'), core(3, 'event', 'host state solo')]);
  audit.append(action(4, { user: 'ann', target: 'web' }));
  audit.append(action(5, { user: 'bob', target: 'db', operation: 'stopVm', path: '/api/v1/vms/db/stop' }));
  const ids = (q: Parameters<AuditLog['query']>[0]): string[] => audit.query(q).entries.map((e) => `${e.kind}:${e.message ?? e.operation}`);
  assert.deepEqual(ids({ limit: 10, kind: 'user' }), ['user:stopVm', 'user:startVm']);
  assert.deepEqual(ids({ limit: 10, kind: 'alert' }), ['alert:disk failed']);
  assert.deepEqual(ids({ limit: 10, user: 'bob' }), ['user:stopVm']);
  assert.deepEqual(ids({ limit: 10, text: 'WEB' }), ['user:startVm', 'event:operator defined VM Web']);
  assert.deepEqual(ids({ limit: 10, text: '192.0.2.7', kind: 'user' }), ['user:stopVm', 'user:startVm']);
  assert.deepEqual(ids({ limit: 10, text: "%' OR 1=1 --" }), []);
});

test('paging with the cursor gives every entry exactly once, whatever the page size', async () => {
  const { audit, db } = await open();
  const coreEntries: LogEntry[] = [];
  for (let i = 0; i < 40; i++) {
    if (i % 3 === 0) audit.append(action(i * 10, { target: `vm${i}` }));
    else coreEntries.push(core(i * 10, i % 2 ? 'event' : 'alert', `entry ${i}`));
  }
  db.appendLog(coreEntries);
  const all = audit.query({ limit: 500 }).entries.map((e) => e.id);
  assert.equal(all.length, 40);
  for (const size of [1, 2, 3, 7, 40]) {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = audit.query({ limit: size, ...(cursor !== undefined ? { cursor } : {}) });
      seen.push(...page.entries.map((e) => e.id));
      if (page.next === null) break;
      cursor = page.next;
    }
    assert.deepEqual(seen, all, `pages of ${size}`);
  }
  assert.throws(() => audit.query({ limit: 5, cursor: 'drop table' }), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});

test('a text search examines a bounded number of core entries per page and goes on from there', async () => {
  const { audit, db } = await open();
  const many: LogEntry[] = [];
  for (let i = 0; i < CORE_SCAN_MAX + 700; i++) many.push(core(i, 'event', i === 3 ? 'the needle' : `hay ${i}`));
  db.appendLog(many);
  const first = audit.query({ limit: 10, text: 'needle' });
  assert.deepEqual(first.entries, []);
  assert.notEqual(first.next, null, 'more to examine');
  const second = audit.query({ limit: 10, text: 'needle', cursor: first.next! });
  assert.deepEqual(second.entries.map((e) => e.message), ['the needle']);
  assert.equal(second.next, null);
});

test('the table refuses updates: the log is append-only', async () => {
  const { audit, file } = await open();
  audit.append(action(1));
  const raw = new Database(file);
  cleanup.add(() => raw.close());
  assert.throws(() => raw.prepare("UPDATE actions SET user = 'mallory'").run(), /append-only/);
  assert.equal(audit.query({ limit: 5 }).entries[0]!.user, 'ann');
});
