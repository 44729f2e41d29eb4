// Login rate limiting with an injected clock: free failures, a doubling lock, forgetting, success, bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LoginLimiter } from '../../src/users/login-limiter.js';

const OPTS = { freeFailures: 3, baseLockMs: 1000, maxLockMs: 8000, forgetMs: 60_000, maxKeys: 5 };

test('the free failures pass, then each failure closes the key for twice as long, up to the maximum', () => {
  let t = 0;
  const l = new LoginLimiter(() => t, OPTS);
  for (let i = 0; i < 2; i++) l.failure(['u']);
  assert.deepEqual(l.check(['u']), { ok: true });
  l.failure(['u']);
  assert.deepEqual(l.check(['u']), { ok: false, retryAfterMs: 1000 });
  assert.deepEqual(l.check(['other']), { ok: true }, 'keys are separate');
  const windows: number[] = [];
  for (let i = 0; i < 5; i++) {
    t += 10_000;
    l.failure(['u']);
    windows.push((l.check(['u']) as { retryAfterMs: number }).retryAfterMs);
  }
  assert.deepEqual(windows, [2000, 4000, 8000, 8000, 8000]);
  t += 8000 + 60_000;
  assert.deepEqual(l.check(['u']), { ok: true }, 'forgotten after a quiet while');
  l.failure(['u']);
  assert.deepEqual(l.check(['u']), { ok: true }, 'and the count starts again');
});

test('an attempt counts before it is checked; success clears the user and takes back only its own count from the address', () => {
  let t = 0;
  const l = new LoginLimiter(() => t, OPTS);
  const a = l.begin(['user:x', 'address:a']);
  const b = l.begin(['user:x', 'address:a']);
  const c = l.begin(['user:x', 'address:a']);
  const d = l.begin(['user:x', 'address:a']);
  assert.deepEqual([a.ok, b.ok, c.ok, d.ok], [true, true, true, false], 'three at once, the fourth waits');
  t += 1000;
  const ok = l.begin(['user:x', 'address:a']);
  assert.ok(ok.ok);
  l.succeeded(ok.prior, 'user:x', 'address:a');
  assert.deepEqual(l.check(['user:x']), { ok: true });
  assert.deepEqual(l.check(['address:a']), { ok: true }, 'the success does not leave the address closed by its own count');
  l.failure(['address:a']);
  assert.equal(l.check(['address:a']).ok, false, 'but the address keeps its earlier failures');
});

test('the map is bounded: the oldest keys go first', () => {
  const l = new LoginLimiter(() => 0, OPTS);
  for (let i = 0; i < 10; i++) for (let j = 0; j < 3; j++) l.failure([`k${i}`]);
  assert.deepEqual([...Array(10).keys()].map((i) => l.check([`k${i}`]).ok), [true, true, true, true, true, false, false, false, false, false]);
});
