// The QMP client against a real QEMU 7.2 (no guest, paused, TCG): greeting, commands, errors with their
// class, events, a timeout while QEMU is frozen, and the socket lost to kill -9 mid-command.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { QmpClient } from '../../src/qemu/qmp.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, rejectionOf, startBareQemu, tempDir, type BareQemu } from './helpers.js';

const cleanup = new Cleanup();
let qemu: BareQemu;
let qmp: QmpClient;

before(async () => {
  const dir = await tempDir(cleanup);
  qemu = await startBareQemu(cleanup, dir);
  qmp = await QmpClient.connect(qemu.socketPath, { timeoutMs: 5000 });
  cleanup.add(() => qmp.close());
});
after(() => cleanup.run());

function assertCode(e: unknown, code: string): LockstepError {
  assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return e;
}

interface Status {
  status: string;
  running: boolean;
}

test('the greeting gives QEMU’s version; query-status answers', async () => {
  assert.equal(qmp.version.qemu.major, 7);
  assert.ok(qmp.greeting.capabilities.includes('oob'));
  const status = await qmp.execute<Status>('query-status');
  assert.equal(status.status, 'prelaunch');
  assert.equal(status.running, false);
});

test('twenty concurrent commands of four kinds each get their own answer', async () => {
  const kinds = ['query-status', 'query-name', 'query-version', 'query-kvm'] as const;
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => qmp.execute<Record<string, unknown>>(kinds[i % 4]!)));
  answers.forEach((a, i) => {
    const kind = kinds[i % 4];
    if (kind === 'query-status') assert.equal(a['status'], 'prelaunch');
    if (kind === 'query-name') assert.deepEqual(a, {});
    if (kind === 'query-version') assert.equal((a['qemu'] as { major: number }).major, 7);
    if (kind === 'query-kvm') assert.equal(a['enabled'], false);
  });
});

test('errors carry QEMU’s class: CommandNotFound, GenericError, DeviceNotFound', async () => {
  let e = assertCode(await rejectionOf(qmp.execute('no-such-command')), 'QMP_ERROR');
  assert.equal(e.fields['errorClass'], 'CommandNotFound');
  e = assertCode(await rejectionOf(qmp.execute('blockdev-del', { 'node-name': 'nope' })), 'QMP_ERROR');
  assert.equal(e.fields['errorClass'], 'GenericError');
  assert.match(String(e.fields['desc']), /nope/);
  e = assertCode(await rejectionOf(qmp.execute('device_del', { id: 'nope' })), 'QMP_ERROR');
  assert.equal(e.fields['errorClass'], 'DeviceNotFound');
  assert.equal((await qmp.execute<Status>('query-status')).status, 'prelaunch', 'still usable');
});

test('cont and stop produce RESUME and STOP events', async () => {
  const resumed = qmp.waitForEvent('RESUME', undefined, 5000);
  await qmp.execute('cont');
  const r = await resumed;
  assert.ok(r.timestamp.seconds > 0);
  const stopped = qmp.waitForEvent('STOP', undefined, 5000);
  await qmp.execute('stop');
  await stopped;
  assert.equal((await qmp.execute<Status>('query-status')).status, 'paused');
});

test('a frozen QEMU (SIGSTOP) gives QMP_TIMEOUT; after SIGCONT the connection works again', async () => {
  process.kill(qemu.pid, 'SIGSTOP');
  try {
    assertCode(await rejectionOf(qmp.execute('query-status', undefined, { timeoutMs: 300 })), 'QMP_TIMEOUT');
  } finally {
    process.kill(qemu.pid, 'SIGCONT');
  }
  assert.equal((await qmp.execute<Status>('query-status')).status, 'paused');
});

test('kill -9 with a command in flight: it rejects with QMP_DISCONNECTED and closed says peer', async () => {
  process.kill(qemu.pid, 'SIGSTOP'); // so the command is certainly still pending when QEMU dies
  const pending = qmp.execute('query-status', undefined, { timeoutMs: 10_000 });
  process.kill(qemu.pid, 'SIGKILL');
  assertCode(await rejectionOf(pending), 'QMP_DISCONNECTED');
  assert.equal((await qmp.closed).cause, 'peer');
  assert.equal((await qemu.exited).signal, 'SIGKILL');
});
