// The FT primary's pause window: percentiles by rank, the last pause, the epoch rate over the window, and
// a window that forgets the oldest epochs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PauseWindow } from '../../src/ft/ft-stats.js';

test('pause window: p50, p99 and the last pause by rank; the epoch rate over the window', () => {
  const w = new PauseWindow(100);
  assert.deepEqual(w.summary(), { epochs: 0, lastPauseMs: null, pauseP50Ms: null, pauseP99Ms: null, epochsPerSec: null });
  w.add(0, 5);
  assert.equal(w.summary().epochsPerSec, null, 'one epoch has no rate');
  for (let i = 1; i < 100; i++) w.add(i * 20, i === 50 ? 90 : 10 + (i % 3));
  const s = w.summary();
  assert.equal(s.epochs, 100);
  assert.equal(s.lastPauseMs, 10 + (99 % 3));
  assert.equal(s.pauseP50Ms, 11);
  assert.equal(s.pauseP99Ms, 12, 'one slow epoch in 100 is above p99');
  assert.equal(s.epochsPerSec, 50);
  // The window keeps the last 100: the slow epoch and the first ones go.
  for (let i = 100; i < 200; i++) w.add(i * 20, 30);
  assert.deepEqual(w.summary(), { epochs: 100, lastPauseMs: 30, pauseP50Ms: 30, pauseP99Ms: 30, epochsPerSec: 50 });
});
