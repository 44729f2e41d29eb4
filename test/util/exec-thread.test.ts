/** `ExecThread`: `run()` on a worker thread answers as `run()` does, errors included. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExecThread } from '../../src/util/exec-thread.js';
import { isLockstepError } from '../../src/util/errors.js';

test('output, exit code and input come back as run() gives them', async () => {
  const t = new ExecThread();
  try {
    const r = await t.run('sh', ['-c', 'read x; echo "out $x"; echo err >&2; exit 3'], { input: 'hello\n', allowFailure: true });
    assert.deepEqual(r, { stdout: 'out hello\n', stderr: 'err\n', code: 3 });
    const many = await Promise.all(Array.from({ length: 8 }, (_, i) => t.run('echo', [String(i)])));
    assert.deepEqual(many.map((m) => m.stdout), Array.from({ length: 8 }, (_, i) => `${i}\n`), 'concurrent requests get their own answers');
  } finally {
    await t.close();
  }
});

test('errors are the LockstepErrors run() throws: a failed program, a missing one, a timeout', async () => {
  const t = new ExecThread();
  try {
    await assert.rejects(t.run('sh', ['-c', 'echo nope >&2; exit 2']), (e: unknown) => isLockstepError(e, 'COMMAND_FAILED') && /exit 2\): nope/.test(e.message) && e.fields['exitCode'] === 2);
    await assert.rejects(t.run('lockstep-no-such-program', []), (e: unknown) => isLockstepError(e, 'MISSING_PREREQUISITE'));
    const slow = await t.run('sleep', ['5'], { timeoutMs: 100, allowFailure: true });
    assert.notEqual(slow.code, 0, 'killed at the timeout');
  } finally {
    await t.close();
  }
});

test('close() rejects what is in flight and every later request', async () => {
  const t = new ExecThread();
  const inFlight = assert.rejects(t.run('sleep', ['5']), /exec thread was closed/);
  await t.close();
  await inFlight;
  await assert.rejects(t.run('true', []), /exec thread was closed/);
});
