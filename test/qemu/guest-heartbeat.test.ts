// The guest heartbeat's silence rule: hung only after a first beat, and only for silence while running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeartbeatRule } from '../../src/qemu/guest-heartbeat.js';

test('a guest that never beat is never hung: no agent, or still booting', () => {
  const r = new HeartbeatRule(1000, 0, true);
  assert.equal(r.hungFor(60_000), null);
});

test('silence while running past the timeout is a hang; each beat restarts the count', () => {
  const r = new HeartbeatRule(1000, 0, true);
  r.beat(100);
  assert.equal(r.hungFor(1099), null);
  r.beat(1000);
  assert.equal(r.hungFor(1999), null);
  assert.equal(r.hungFor(2000), 1000);
  assert.equal(r.beatCount, 2);
});

test('time paused does not count, and a resume gives the guest a full timeout to beat again', () => {
  const r = new HeartbeatRule(1000, 0, true);
  r.beat(0);
  r.runState(false, 500); // a migration's switch-over, a mirror's switch
  assert.equal(r.hungFor(10_000), null, 'a paused guest cannot beat');
  r.runState(true, 10_000);
  assert.equal(r.hungFor(10_999), null);
  assert.equal(r.hungFor(11_000), 1000);
});

test('a guest started paused (an incoming migration) is watched from its resume', () => {
  const r = new HeartbeatRule(1000, 0, false);
  r.beat(5); // bytes queued before the pause
  r.runState(true, 5000);
  assert.equal(r.hungFor(5500), null);
  assert.equal(r.hungFor(6000), 1000);
});
