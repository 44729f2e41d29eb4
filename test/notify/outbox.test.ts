// The durable outbox: an undelivered alert survives a restart (notifier and state database closed and
// reopened) and is delivered after it; alerts logged while no notifier ran (a crash between the log and the
// outbox) are caught up; history from before notifications is not sent; the minimum severity; receivers
// removed from the config; giving up after the policy's time; a recreated log; a broken outbox file.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Outbox, OUTBOX_SCHEMA_VERSION, retryDelayMs } from '../../src/notify/outbox.js';
import { isLockstepError } from '../../src/util/errors.js';
import { StateDb } from '../../src/daemon/state-db.js';
import { Cleanup, freePort, HttpsTestServer, logAlert, notifyConfig, startNotifier, stateDb, tempDir, testPki, waitFor } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('retry delays double from the initial delay and stop at the cap', () => {
  const policy = { initialMs: 5000, maxMs: 600_000 };
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 5000].map((n) => retryDelayMs(policy, n)), [5000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000, 600_000, 600_000]);
});

test('an undelivered alert survives a restart of the notifier and the state database, and is delivered after it, once', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const hook = await HttpsTestServer.start(cleanup, pki, [503]);
  const config = notifyConfig({ webhooks: [{ url: hook.url('/hook'), caFile: pki.caFile }] });
  const first = stateDb(cleanup, dir);
  const before = startNotifier(cleanup, dir, first.db, config);
  logAlert(first.db, 'critical', 'HOST_ISOLATED', 'host1 lost host2 and has no quorum: stopping its VMs to avoid split-brain');
  before.notifier.nudge();
  await waitFor('a refused attempt, recorded', () => (before.notifier.outbox.list({ limit: 1 })[0]?.attempts ?? 0) >= 1);
  await before.notifier.stop();
  first.db.close();

  const raw = new Database(path.join(dir, 'state', 'notify.db'), { readonly: true });
  const row = raw.prepare('SELECT state, attempts, last_error FROM deliveries').get() as Record<string, unknown>;
  raw.close();
  assert.equal(row['state'], 'pending', 'on disk, not delivered');
  assert.match(String(row['last_error']), /answered 503/);

  hook.statuses.splice(0, hook.statuses.length, 200);
  const reopened = StateDb.open(first.file);
  cleanup.add(() => reopened.close());
  const after = startNotifier(cleanup, dir, reopened, config);
  await waitFor('the delivery after the restart', () => after.notifier.outbox.list({ limit: 1 })[0]?.state === 'delivered');
  await after.notifier.runOnce();
  assert.equal(hook.accepted().length, 1, 'accepted once');
  assert.ok(hook.requests.every((r) => r.headers['idempotency-key'] === hook.requests[0]!.headers['idempotency-key']), 'the same alert id before and after the restart');
  assert.equal((hook.accepted()[0]!.body as Record<string, unknown>)['code'], 'HOST_ISOLATED');
});

test('alerts logged while no notifier ran are caught up from the log; history from before notifications is not sent', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const hook = await HttpsTestServer.start(cleanup, pki);
  const config = notifyConfig({ webhooks: [{ url: hook.url('/hook'), caFile: pki.caFile }] });
  const { db } = stateDb(cleanup, dir);
  logAlert(db, 'critical', 'FAILOVER', 'VM old failed over from host2 to host1: before notifications were configured');
  const first = startNotifier(cleanup, dir, db, config);
  await first.notifier.stop();
  logAlert(db, 'warning', 'VM_RESTARTED', 'VM web failed (exit 1); restarting it on host1');
  logAlert(db, 'critical', 'VM_FAILED', 'VM web failed 3 times within 10 min and no healthy peer can take it');
  const second = startNotifier(cleanup, dir, db, config);
  await waitFor('both caught up', () => second.notifier.outbox.list({ limit: 5, state: 'delivered' }).length === 2);
  assert.deepEqual(hook.accepted().map((r) => (r.body as Record<string, unknown>)['code']), ['VM_RESTARTED', 'VM_FAILED']);
  assert.equal(second.notifier.outbox.list({ limit: 5 }).length, 2, 'the alert from before the outbox existed was never recorded');
});

test('the minimum severity: alerts below it are not recorded, the cursor passes them', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const hook = await HttpsTestServer.start(cleanup, pki);
  const { db } = stateDb(cleanup, dir);
  const { notifier } = startNotifier(cleanup, dir, db, notifyConfig({ minSeverity: 'warning', webhooks: [{ url: hook.url('/hook'), caFile: pki.caFile }] }));
  logAlert(db, 'info', 'ALINK_PATH_RESTORED', 'A-Link path alink2 up again on host1');
  logAlert(db, 'warning', 'ALINK_PATH_DOWN', 'A-Link path alink1 down on host1: the pair carries on over alink2');
  logAlert(db, 'critical', 'FORCED_TAKEOVER', 'operator forced host1 to take over from host2');
  notifier.nudge();
  await waitFor('two deliveries', () => hook.accepted().length === 2);
  await notifier.runOnce();
  assert.deepEqual(hook.accepted().map((r) => (r.body as Record<string, unknown>)['severity']), ['warning', 'critical']);
  assert.equal(notifier.outbox.list({ limit: 10 }).length, 2);
  assert.equal(notifier.outbox.cursor(), db.recentLog({ limit: 1 })[0]!.id);
});

test('pending deliveries to a receiver no longer configured are abandoned at start, with the reason', async () => {
  const dir = await tempDir(cleanup);
  const port = await freePort('tcp');
  const { db } = stateDb(cleanup, dir);
  const gone = startNotifier(cleanup, dir, db, notifyConfig({ webhooks: [{ url: `http://127.0.0.1:${port}/gone`, caFile: null }] }));
  logAlert(db, 'warning', 'TIEBREAK', 'host1 lost host2; with no quorum server it keeps the VMs as the designated tie-break winner');
  gone.notifier.nudge();
  await waitFor('a failed attempt', () => (gone.notifier.outbox.list({ limit: 1 })[0]?.attempts ?? 0) >= 1);
  await gone.notifier.stop();
  const pki = await testPki(dir);
  const hook = await HttpsTestServer.start(cleanup, pki);
  const now = startNotifier(cleanup, dir, db, notifyConfig({ webhooks: [{ url: hook.url('/new'), caFile: pki.caFile }] }));
  const [d] = now.notifier.outbox.list({ limit: 1 });
  assert.equal(d!.state, 'abandoned');
  assert.equal(d!.detail, 'the receiver is no longer configured');
  assert.ok(now.lines.some((l) => l.includes(`abandoned pending deliveries to receivers no longer configured: webhook:http://127.0.0.1:${port}/…`)));
  await now.notifier.runOnce();
  assert.equal(hook.requests.length, 0, 'an old alert is not moved to the new receiver');
});

test('a receiver down longer than the give-up time: the delivery is abandoned with its last error', async () => {
  const dir = await tempDir(cleanup);
  const port = await freePort('tcp');
  const { db } = stateDb(cleanup, dir);
  const config = notifyConfig({ webhooks: [{ url: `http://127.0.0.1:${port}/hook`, caFile: null }], retry: { initialMs: 20, maxMs: 40, giveUpAfterMs: 300 } });
  const { notifier, lines } = startNotifier(cleanup, dir, db, config);
  logAlert(db, 'warning', 'MIRROR_ENDED', 'VM web on host1 is no longer mirrored to host2 (stream broke)');
  notifier.nudge();
  await waitFor('given up', () => notifier.outbox.list({ limit: 1 })[0]?.state === 'abandoned');
  const [d] = notifier.outbox.list({ limit: 1 });
  assert.ok(d!.attempts >= 3, `retried before giving up (${d!.attempts} attempts)`);
  assert.match(d!.lastError!, /failed at connect: .*ECONNREFUSED/);
  assert.match(d!.detail!, /^given up after \d+ attempts/);
  assert.ok(lines.some((l) => /given up after \d+ attempts$/.test(l)));
});

test('a state database recreated under an old outbox: the new log is followed from its start', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const hook = await HttpsTestServer.start(cleanup, pki);
  const config = notifyConfig({ webhooks: [{ url: hook.url('/hook'), caFile: pki.caFile }] });
  const outbox = Outbox.open(path.join(dir, 'state', 'notify.db'));
  outbox.setCursor(500);
  outbox.close();
  const { db } = stateDb(cleanup, dir);
  const { notifier, lines } = startNotifier(cleanup, dir, db, config);
  logAlert(db, 'critical', 'FAILOVER', 'VM web failed over from host2 to host1');
  notifier.nudge();
  await waitFor('the delivery', () => hook.accepted().length === 1);
  assert.ok(lines.some((l) => l.includes('the event log restarted below the outbox')));
});

test('an outbox file that is not SQLite, or of a newer schema, is refused with NOTIFY_OUTBOX', async () => {
  const dir = await tempDir(cleanup);
  const junk = path.join(dir, 'junk.db');
  await writeFile(junk, 'this is not a database, not even close, and long enough to have a header');
  assert.throws(() => Outbox.open(junk), (e) => isLockstepError(e, 'NOTIFY_OUTBOX') && /junk\.db cannot be opened/.test(e.message));
  const newer = path.join(dir, 'newer.db');
  const raw = new Database(newer);
  raw.pragma(`user_version = ${OUTBOX_SCHEMA_VERSION + 1}`);
  raw.close();
  assert.throws(() => Outbox.open(newer), (e) => isLockstepError(e, 'NOTIFY_OUTBOX') && /newer than this lockstepd knows/.test(e.message));
});
