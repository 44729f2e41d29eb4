// A running notifier given a new config (a preference setter: Notifier.reconfigure), with real receivers
// in this process: the alert waiting for a relay that is down goes out through the new relay at once,
// exactly once, with its attempts counted on; a receiver the new config adds gets the alerts logged from
// then on, not the old ones; one it removes has its waiting deliveries abandoned, saying why.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpReceiverConfig } from '../../src/notify/receivers.js';
import { Cleanup, HttpsTestServer, freePort, logAlert, notifyConfig, SmtpTestServer, startNotifier, stateDb, tempDir, testPki, waitFor } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** No retry within the test: a failed delivery waits, as a real one would for minutes. */
const SLOW_RETRY = { initialMs: 600_000, maxMs: 600_000, giveUpAfterMs: 7 * 86_400_000 };

function smtp(port: number, to: string[]): SmtpReceiverConfig {
  return { host: '127.0.0.1', port, from: 'lockstep@pair.example', to, starttls: 'off', user: null, passwordFile: null, caFile: null };
}

test('reconfigure: the waiting alert goes out through the new relay at once, a new receiver gets only new alerts, a removed one is abandoned', async () => {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const { db } = stateDb(cleanup, dir);
  const downPort = await freePort('tcp');
  const goneHook = `https://127.0.0.1:${await freePort('tcp')}/hooks/gone`;
  const { notifier, lines } = startNotifier(cleanup, dir, db, notifyConfig({ smtp: smtp(downPort, ['ops@example.com']), webhooks: [{ url: goneHook, caFile: pki.caFile }], retry: SLOW_RETRY }));

  logAlert(db, 'critical', 'FAILOVER', 'VM web failed over from host1 to host2');
  notifier.nudge();
  await waitFor('both attempts failed', () => notifier.outbox.list({ limit: 10, state: 'pending' }).filter((d) => d.attempts === 1).length === 2);
  const waiting = notifier.outbox.list({ limit: 10, state: 'pending' }).find((d) => d.receiver === 'smtp')!;

  const relay = await SmtpTestServer.start(cleanup, { offerStartTls: false });
  const hook = await HttpsTestServer.start(cleanup, pki);
  notifier.reconfigure(notifyConfig({ smtp: smtp(relay.port, ['ops@example.com', 'night@example.com']), webhooks: [{ url: hook.url('/hooks/new'), caFile: pki.caFile }], retry: SLOW_RETRY }));

  // Not after the old backoff of 10 minutes: now, through the new settings.
  await waitFor('the waiting alert through the new relay', () => relay.accepted().length === 1, 5000);
  assert.deepEqual(relay.accepted()[0]!.to, ['ops@example.com', 'night@example.com']);
  await waitFor('marked delivered', () => notifier.outbox.list({ limit: 10, state: 'delivered' }).length === 1, 5000);
  const done = notifier.outbox.list({ limit: 10, state: 'delivered' });
  assert.deepEqual(done.map((d) => [d.id, d.receiver, d.attempts]), [[waiting.id, 'smtp', 2]], 'the same delivery, its attempts counted on');
  const abandoned = notifier.outbox.list({ limit: 10, state: 'abandoned' });
  assert.deepEqual(abandoned.map((d) => [d.alert.code, d.detail]), [['FAILOVER', 'the receiver is no longer configured']]);
  assert.equal(hook.accepted().length, 0, 'the new webhook does not get the alert from before it was configured');
  assert.ok(lines.some((l) => /^notify: reconfigured: notifications to smtp, webhook:1$/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /abandoned pending deliveries to receivers no longer configured: webhook:https:\/\/127\.0\.0\.1:\d+\/…$/.test(l)), lines.join('\n'));

  // The next alert goes to both, once each.
  logAlert(db, 'warning', 'PATH_DOWN', 'A-Link path alink2 down');
  notifier.nudge();
  await waitFor('the next alert to both', () => relay.accepted().length === 2 && hook.accepted().length === 1, 5000);
  assert.equal((hook.accepted()[0]!.body as { code: string }).code, 'PATH_DOWN');
  await waitFor('both marked delivered', () => notifier.pending() === 0, 5000);
});
