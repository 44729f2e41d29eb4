// Call Home and webhooks to a real HTTPS server in this process (127.0.0.1, certificate from a test CA):
// the JSON documents as received, the CA file for a private endpoint, refusals as values, and a receiver
// that answers 500 before 200 getting the alert by retry, once.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { postJson } from '../../src/notify/http-post.js';
import { Cleanup, HttpsTestServer, logAlert, logEvent, notifyConfig, startNotifier, stateDb, tempDir, testPki, waitFor } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('Call Home: the report carries the fault, its exact location and the timeline up to it', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const support = await HttpsTestServer.start(cleanup, pki);
  const { db } = stateDb(cleanup, dir);
  const { notifier } = startNotifier(cleanup, dir, db, notifyConfig({ callHome: { url: support.url('/v1/reports'), caFile: pki.caFile } }));
  logEvent(db, 'component fault: disk (health 70, estimated MTBF ∞)');
  logAlert(db, 'warning', 'PRIMARY_FAULT', 'host1 lost disk: its VMs move to host2 if it is healthier');
  logEvent(db, 'after the alert: not in its timeline');
  notifier.nudge();
  await waitFor('the report', () => support.accepted().length === 1);

  const r = support.requests[0]!;
  assert.equal(r.method, 'POST');
  assert.equal(r.url, '/v1/reports');
  assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  const body = r.body as Record<string, any>;
  assert.equal(r.headers['idempotency-key'], body['reportId']);
  assert.equal(body['type'], 'lockstep.callHome');
  assert.equal(body['version'], 1);
  assert.equal(body['test'], false);
  assert.deepEqual(body['product'], { name: 'lockstep', version: '0.1.0' });
  assert.equal(body['fault'].type, 'PRIMARY_FAULT');
  assert.equal(body['fault'].severity, 'warning');
  assert.equal(body['fault'].message, 'host1 lost disk: its VMs move to host2 if it is healthier');
  assert.equal(body['fault'].cause, 'tick');
  assert.match(body['fault'].time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(body['location'], { pair: 'lab', host: 'host1', component: 'disk', vm: null });
  assert.deepEqual(
    body['timeline'].map((t: any) => [t.kind, t.code, t.what]),
    [
      ['event', null, 'component fault: disk (health 70, estimated MTBF ∞)'],
      ['alert', 'PRIMARY_FAULT', 'host1 lost disk: its VMs move to host2 if it is healthier'],
    ],
    'oldest first, up to the alert and not beyond',
  );
  assert.equal(body['alert'].id, body['reportId']);
  await waitFor('the delivery marked', () => notifier.outbox.list({ limit: 1 })[0]?.state === 'delivered');
  assert.equal(notifier.outbox.list({ limit: 1 })[0]!.detail, 'HTTP 200');
});

test('webhooks: the alert as JSON to each URL; a receiver that answers 500 then 200 gets it by retry, once', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const healthy = await HttpsTestServer.start(cleanup, pki);
  const flaky = await HttpsTestServer.start(cleanup, pki, [500, 500, 200]);
  const { db } = stateDb(cleanup, dir);
  const { notifier, lines } = startNotifier(
    cleanup,
    dir,
    db,
    notifyConfig({ webhooks: [{ url: healthy.url('/hook'), caFile: pki.caFile }, { url: flaky.url('/hook?token=x'), caFile: pki.caFile }] }),
  );
  logAlert(db, 'critical', 'FAILOVER', 'VM web failed over from host1 to host2', 'host2');
  notifier.nudge();
  await waitFor('both webhooks', () => healthy.accepted().length === 1 && flaky.accepted().length === 1);
  await waitFor('both marked', () => notifier.outbox.list({ limit: 2, state: 'delivered' }).length === 2);
  await notifier.runOnce();
  assert.equal(healthy.requests.length, 1);
  assert.deepEqual(flaky.requests.map((r) => r.status), [500, 500, 200], 'retried after each 500, not after the 200');

  const alert = healthy.requests[0]!.body as Record<string, unknown>;
  assert.deepEqual({ ...alert, id: '<id>', time: '<time>', logId: '<logId>' }, {
    type: 'lockstep.alert',
    version: 1,
    id: '<id>',
    test: false,
    pair: 'lab',
    host: 'host2',
    severity: 'critical',
    code: 'FAILOVER',
    message: 'VM web failed over from host1 to host2',
    cause: 'tick',
    time: '<time>',
    location: { host: 'host2', component: null, vm: 'web' },
    logId: '<logId>',
  });
  assert.deepEqual(flaky.requests[2]!.body, alert, 'the retry carries the same document');
  assert.equal(flaky.requests[0]!.headers['idempotency-key'], alert['id']);
  assert.equal(flaky.requests[2]!.headers['idempotency-key'], alert['id'], 'the same key on every retry');
  const flakyDelivery = notifier.outbox.list({ limit: 2 }).find((d) => d.receiver.includes(String(flaky.port)))!;
  assert.equal(flakyDelivery.attempts, 3);
  assert.match(flakyDelivery.lastError!, /failed at HTTP status: .* answered 500 .*\(reply: HTTP 500: receiver is unwell\)/);
  // The log names the webhook by its place and shows no path or query: its URL is often its secret.
  assert.ok(lines.some((l) => /to webhook:2 delivered \(HTTP 200\) after 3 attempts/.test(l)), lines.join('\n'));
  assert.ok(!lines.some((l) => l.includes('token=x')), lines.join('\n'));
});

test('HTTPS refusals are values: an unknown CA, a status that is not 2xx, no listener', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const other = await testPki(dir, 'other');
  const server = await HttpsTestServer.start(cleanup, pki, [404]);
  const untrusted = await postJson(server.url('/x'), { a: 1 });
  assert.deepEqual({ ok: untrusted.ok, step: !untrusted.ok && untrusted.step }, { ok: false, step: 'TLS handshake' });
  const wrongCa = await postJson(server.url('/x'), { a: 1 }, { ca: other.caPem });
  assert.equal(!wrongCa.ok && wrongCa.step, 'TLS handshake');
  assert.equal(server.requests.length, 0, 'nothing was posted over an unverified connection');
  const notFound = await postJson(server.url('/x'), { a: 1 }, { ca: pki.caPem });
  assert.deepEqual(notFound, { ok: false, step: 'HTTP status', error: `${server.url('/x')} answered 404 Not Found`, reply: 'HTTP 404: receiver is unwell' });
  await cleanup.run();
  const down = await postJson(`https://127.0.0.1:${server.port}/x`, {});
  assert.equal(!down.ok && down.step, 'connect');
});
