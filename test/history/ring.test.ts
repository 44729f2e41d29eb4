/**
 * The history's ring: it keeps the newest `capacity` rounds and no more, its memory fixed when it is made;
 * `since` answers newer points, oldest first, without the rounds a column had no value in; a clock set back
 * is kept in the order it came; a column it does not have is a bug.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SampleRing } from '../../src/history/ring.js';
import { BugError } from '../../src/util/assert.js';

test('the ring keeps the newest rounds, up to its capacity, and its memory never grows', () => {
  const ring = new SampleRing(4, ['cpu', 'memory']);
  const bytes = ring.bytes;
  assert.equal(bytes, 4 * 3 * 8);
  assert.equal(ring.length, 0);
  assert.equal(ring.newestMs, null);
  assert.deepEqual(ring.since('cpu'), []);
  for (let i = 1; i <= 10; i++) ring.push(i * 1000, { cpu: i / 10, memory: i * 100 });
  assert.equal(ring.length, 4);
  assert.equal(ring.bytes, bytes);
  assert.equal(ring.newestMs, 10_000);
  assert.deepEqual(ring.since('cpu'), [
    [7000, 0.7],
    [8000, 0.8],
    [9000, 0.9],
    [10_000, 1],
  ]);
  assert.deepEqual(ring.since('memory', 8000), [
    [9000, 900],
    [10_000, 1000],
  ]);
  assert.deepEqual(ring.since('memory', 10_000), []);
  assert.equal(ring.latest('memory'), 1000);
});

test('one hour at 5 s: 720 rounds, the 721st replaces the first', () => {
  const ring = new SampleRing(720, ['cpu']);
  for (let i = 0; i < 721; i++) ring.push(i * 5000, { cpu: i });
  const points = ring.since('cpu');
  assert.equal(points.length, 720);
  assert.deepEqual(points[0], [5000, 1]);
  assert.deepEqual(points.at(-1), [720 * 5000, 720]);
  assert.equal(ring.bytes, 720 * 2 * 8);
});

test('a round without a value for a column is no point of it; the others keep theirs', () => {
  const ring = new SampleRing(8, ['cpu', 'memory']);
  ring.push(1000, { cpu: null, memory: 5 });
  ring.push(2000, { memory: 6 });
  ring.push(3000, { cpu: Number.NaN, memory: Number.POSITIVE_INFINITY });
  ring.push(4000, { cpu: 0.5, memory: 7 });
  assert.deepEqual(ring.since('cpu'), [[4000, 0.5]]);
  assert.deepEqual(ring.since('memory'), [
    [1000, 5],
    [2000, 6],
    [4000, 7],
  ]);
  ring.push(5000, { memory: 8 });
  assert.equal(ring.latest('cpu'), null, 'the newest round has no cpu');
});

test('a wall clock set back: the rounds stay in the order they came', () => {
  const ring = new SampleRing(8, ['cpu']);
  ring.push(10_000, { cpu: 1 });
  ring.push(5000, { cpu: 2 });
  ring.push(6000, { cpu: 3 });
  assert.deepEqual(ring.since('cpu'), [
    [10_000, 1],
    [5000, 2],
    [6000, 3],
  ]);
});

test('a column the ring does not have, a capacity that is none, a column named twice: bugs', () => {
  const ring = new SampleRing(2, ['cpu']);
  assert.throws(() => ring.push(1, { disk: 1 }), BugError);
  assert.throws(() => ring.since('disk'), BugError);
  assert.throws(() => new SampleRing(0, ['cpu']), BugError);
  assert.throws(() => new SampleRing(2.5, ['cpu']), BugError);
  assert.throws(() => new SampleRing(2, ['cpu', 'cpu']), BugError);
});
