// e-Alerts to a real SMTP server in this process (127.0.0.1): STARTTLS with a test CA, AUTH PLAIN and LOGIN,
// the envelope, headers and body as the server received them, dot-stuffing on the wire, refusals as values
// naming the step and quoting the reply, and the outbox's retries: a rejecting server and a server that is
// down both get the alert once they accept it, exactly once.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sendMail } from '../../src/notify/smtp.js';
import { receiversOf, sendTest, type DeliveryContext, type SmtpReceiverConfig } from '../../src/notify/receivers.js';
import { Cleanup, freePort, logAlert, logEvent, notifyConfig, parseMessage, SmtpTestServer, startNotifier, stateDb, tempDir, testPki, waitFor, type TestPki } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const ctx: DeliveryContext = { timeline: () => [], heloName: 'host1', uptimeCs: () => 100, nowMs: () => Date.now() };

async function world(): Promise<{ dir: string; pki: TestPki; passwordFile: string }> {
  const dir = await tempDir(cleanup);
  const pki = await testPki(dir);
  const passwordFile = path.join(dir, 'smtp-password');
  await writeFile(passwordFile, 's3cret-pass\n', { mode: 0o600 });
  return { dir, pki, passwordFile };
}

function smtpConfig(port: number, patch: Partial<SmtpReceiverConfig> = {}): SmtpReceiverConfig {
  return { host: '127.0.0.1', port, from: 'lockstep@pair.example', to: ['ops@example.com', 'oncall@example.com'], starttls: 'required', user: null, passwordFile: null, caFile: null, ...patch };
}

test('an alert becomes an e-Alert over STARTTLS with AUTH PLAIN: envelope, headers and body as the server got them', async () => {
  const { dir, pki, passwordFile } = await world();
  const server = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true, auth: { user: 'alerts', password: 's3cret-pass', mechanisms: ['PLAIN', 'LOGIN'] } });
  const { db } = stateDb(cleanup, dir);
  const { notifier } = startNotifier(cleanup, dir, db, notifyConfig({ smtp: smtpConfig(server.port, { user: 'alerts', passwordFile, caFile: pki.caFile }) }), 'host2');
  logEvent(db, 'peer host1 silent for 600 ms', 'host2');
  logAlert(db, 'critical', 'FAILOVER', 'VM web failed over from host1 to host2', 'host2');
  notifier.nudge();
  await waitFor('the e-Alert', () => server.accepted().length === 1);

  const s = server.accepted()[0]!;
  assert.equal(s.tls, true, 'STARTTLS was used');
  assert.equal(s.authUser, 'alerts');
  assert.equal(s.authMechanism, 'PLAIN', 'PLAIN is preferred when offered');
  assert.equal(s.helo, 'host2');
  assert.equal(s.from, 'lockstep@pair.example');
  assert.deepEqual(s.to, ['ops@example.com', 'oncall@example.com']);
  assert.ok(!s.commands.includes('STARTTLS') || s.commands.indexOf('STARTTLS') < s.commands.indexOf('AUTH PLAIN ***'), 'AUTH only after STARTTLS');

  const { headers, body } = parseMessage(s.message!);
  assert.equal(headers.get('subject'), '[Lockstep critical] FAILOVER on host2: VM web failed over from host1 to host2');
  assert.equal(headers.get('from'), 'lockstep@pair.example');
  assert.equal(headers.get('to'), 'ops@example.com, oncall@example.com');
  assert.match(headers.get('date')!, /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$/);
  assert.match(headers.get('message-id')!, /^<lockstep\.host2-\d+-\d+@lab\.lockstep\.invalid>$/);
  assert.equal(headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(headers.get('content-transfer-encoding'), '7bit');
  assert.equal(headers.get('auto-submitted'), 'auto-generated');
  assert.equal(headers.get('x-lockstep-severity'), 'critical');
  assert.equal(headers.get('x-lockstep-code'), 'FAILOVER');
  assert.equal(headers.get('x-lockstep-host'), 'host2');
  assert.equal(headers.get('x-lockstep-pair'), 'lab');
  assert.match(body, /^Lockstep e-Alert: critical FAILOVER\r\n\r\nVM web failed over from host1 to host2\r\n/);
  assert.match(body, /\r\nHost:      host2\r\n/);
  assert.match(body, /\r\nVM:        web\r\n/);
  assert.match(body, /\r\nCause:     tick\r\n/);
  assert.match(body, /Recent events on host2 \(oldest first\):\r\n {2}\S+ host2 peer host1 silent for 600 ms\r\n {2}\S+ host2 ALERT critical FAILOVER: VM web failed over/);

  await waitFor('the delivery marked', () => notifier.outbox.list({ limit: 1 })[0]?.state === 'delivered');
  const [row] = notifier.outbox.list({ limit: 10 });
  assert.equal(row!.receiver, 'smtp');
  assert.match(row!.detail!, /^250 2\.0\.0 Ok: queued as Q1$/);
});

test('dot-stuffing: lines starting with a dot reach the server doubled and come out as sent', async () => {
  const { pki } = await world();
  const server = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true });
  const message = 'Subject: dots\r\n\r\nfirst\r\n.\r\n..two\r\n.hidden\r\nlast\r\n';
  const outcome = await sendMail({ host: '127.0.0.1', port: server.port, starttls: 'required', ca: pki.caPem, heloName: 'host1' }, { from: 'a@b.example', to: ['c@d.example'] }, message);
  assert.deepEqual(outcome, { ok: true, detail: '250 2.0.0 Ok: queued as Q1' });
  const s = server.accepted()[0]!;
  assert.equal(s.rawData, 'Subject: dots\r\n\r\nfirst\r\n..\r\n...two\r\n..hidden\r\nlast\r\n');
  assert.equal(s.message, message, 'the message the server un-stuffed is the one sent');
});

test('AUTH LOGIN when the server offers only LOGIN; "send test" returns its outcome', async () => {
  const { pki, passwordFile } = await world();
  const server = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true, auth: { user: 'alerts', password: 's3cret-pass', mechanisms: ['LOGIN'] } });
  const [smtp] = receiversOf(notifyConfig({ smtp: smtpConfig(server.port, { user: 'alerts', passwordFile, caFile: pki.caFile }) }));
  const result = await sendTest(smtp!, ctx, 'lab', 'host1');
  assert.equal(result.receiver, 'smtp');
  assert.equal(result.outcome.ok, true, JSON.stringify(result.outcome));
  const s = server.accepted()[0]!;
  assert.equal(s.authMechanism, 'LOGIN');
  const { headers, body } = parseMessage(s.message!);
  assert.equal(headers.get('x-lockstep-code'), 'TEST');
  assert.match(headers.get('subject')!, /^\[Lockstep info\] TEST on host1: test notification from host1 of pair lab/);
  assert.match(body, /^Lockstep test notification\r\n/);
});

test('refusals are values naming the step and quoting the reply; the password never goes in clear', async () => {
  const { pki, passwordFile } = await world();
  const withTls = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true, auth: { user: 'alerts', password: 's3cret-pass', mechanisms: ['PLAIN'] } });
  const plain = await SmtpTestServer.start(cleanup, { offerStartTls: false, auth: { user: 'alerts', password: 's3cret-pass', mechanisms: ['PLAIN'] } });
  const deliver = async (cfg: SmtpReceiverConfig) => (await sendTest(receiversOf(notifyConfig({ smtp: cfg }))[0]!, ctx, 'lab', 'host1')).outcome;

  const required = await deliver(smtpConfig(plain.port, { starttls: 'required' }));
  assert.equal(required.ok, false);
  assert.equal(!required.ok && required.step, 'STARTTLS');
  assert.ok(!plain.sessions.at(-1)!.commands.some((c) => c.startsWith('MAIL')), 'nothing sent after the missing STARTTLS');

  const clearAuth = await deliver(smtpConfig(plain.port, { starttls: 'opportunistic', user: 'alerts', passwordFile }));
  assert.equal(!clearAuth.ok && clearAuth.step, 'AUTH');
  assert.match(!clearAuth.ok ? clearAuth.error : '', /not sent in clear text/);
  assert.ok(!plain.sessions.at(-1)!.commands.some((c) => c.startsWith('AUTH')), 'no AUTH command went over the clear connection');

  const untrusted = await deliver(smtpConfig(withTls.port, { user: 'alerts', passwordFile }));
  assert.equal(!untrusted.ok && untrusted.step, 'TLS handshake', 'the test CA is not among the system CAs');

  await writeFile(passwordFile, 'wrong\n');
  const wrongPassword = await deliver(smtpConfig(withTls.port, { user: 'alerts', passwordFile, caFile: pki.caFile }));
  assert.deepEqual(
    { ok: wrongPassword.ok, step: !wrongPassword.ok && wrongPassword.step, reply: !wrongPassword.ok && wrongPassword.reply },
    { ok: false, step: 'AUTH PLAIN', reply: '535 5.7.8 Authentication credentials invalid' },
  );

  withTls.opts.auth = undefined;
  withTls.opts.reject = { at: 'RCPT', rcpt: 'oncall@example.com', reply: '550 5.1.1 <oncall@example.com>: no such user' };
  const partly = await deliver(smtpConfig(withTls.port, { caFile: pki.caFile }));
  assert.deepEqual(
    { step: !partly.ok && partly.step, reply: !partly.ok && partly.reply },
    { step: 'RCPT TO <oncall@example.com>', reply: '550 5.1.1 <oncall@example.com>: no such user' },
  );
  const last = withTls.sessions.at(-1)!;
  assert.ok(last.commands.includes('RSET') && !last.commands.includes('DATA'), 'a partly accepted mail is abandoned before DATA');

  const down = await deliver(smtpConfig(await freePort('tcp')));
  assert.equal(!down.ok && down.step, 'connect');
  assert.match(!down.ok ? down.error : '', /ECONNREFUSED/);
  assert.equal(withTls.accepted().length + plain.accepted().length, 0);
});

test('a server that rejects (550) gets the alert once it accepts: retried from the outbox, delivered once', async () => {
  const { dir, pki } = await world();
  const server = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true, reject: { at: 'MAIL', reply: '550 5.7.1 relaying denied' } });
  const { db } = stateDb(cleanup, dir);
  const { notifier, lines } = startNotifier(cleanup, dir, db, notifyConfig({ smtp: smtpConfig(server.port, { caFile: pki.caFile }) }));
  logAlert(db, 'warning', 'PRIMARY_FAULT', 'host1 lost disk: its VMs move to host2 if it is healthier');
  notifier.nudge();
  await waitFor('two refused attempts', () => (notifier.outbox.list({ limit: 1 })[0]?.attempts ?? 0) >= 2);
  const pending = notifier.outbox.list({ limit: 1 })[0]!;
  assert.equal(pending.state, 'pending');
  assert.match(pending.lastError!, /failed at MAIL FROM: .*550 5\.7\.1 relaying denied/);
  assert.ok(lines.some((l) => /notify: alert PRIMARY_FAULT .* to smtp failed at MAIL FROM: .*; attempt 1, next in 50 ms/.test(l)), lines.join('\n'));

  server.opts.reject = null;
  await waitFor('the e-Alert', () => server.accepted().length === 1);
  await waitFor('the delivery marked', () => notifier.outbox.list({ limit: 1 })[0]?.state === 'delivered');
  await notifier.runOnce();
  assert.equal(server.accepted().length, 1, 'not sent again after acceptance');
  assert.ok(lines.some((l) => /to smtp delivered \(250 .*\) after \d+ attempts/.test(l)), lines.join('\n'));
});

test('a server that is down: the alerts wait in the outbox and are delivered in order once it is up, each once', async () => {
  const { dir, pki } = await world();
  const port = await freePort('tcp');
  const { db } = stateDb(cleanup, dir);
  const { notifier } = startNotifier(cleanup, dir, db, notifyConfig({ smtp: smtpConfig(port, { caFile: pki.caFile }) }));
  logAlert(db, 'critical', 'HOST_ISOLATED', 'host1 lost host2 and has no quorum: stopping its VMs to avoid split-brain');
  logAlert(db, 'warning', 'ALINK_PATH_DOWN', 'A-Link path alink2 down on host1: no A-Link path is left');
  notifier.nudge();
  await waitFor('retries while down', () => notifier.outbox.list({ limit: 2 }).every((d) => d.state === 'pending') && notifier.outbox.list({ limit: 2 }).some((d) => d.attempts >= 2));
  assert.match(notifier.outbox.list({ limit: 2 }).find((d) => d.attempts > 0)!.lastError!, /failed at connect: .*ECONNREFUSED/);

  const server = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true }, port);
  await waitFor('both e-Alerts', () => server.accepted().length === 2);
  await waitFor('both marked', () => notifier.outbox.list({ limit: 2, state: 'delivered' }).length === 2);
  await notifier.runOnce();
  await notifier.runOnce();
  assert.equal(server.accepted().length, 2, 'nothing sent twice');
  const codes = server.accepted().map((s) => parseMessage(s.message!).headers.get('x-lockstep-code'));
  assert.deepEqual(codes, ['HOST_ISOLATED', 'ALINK_PATH_DOWN'], 'in the order they were logged');
  const ids = server.accepted().map((s) => parseMessage(s.message!).headers.get('message-id'));
  assert.notEqual(ids[0], ids[1]);
});
