// Line framing for QMP: partial chunks are joined, coalesced lines are split, and a line that never ends
// stops the stream at the limit instead of growing the buffer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineSplitter } from '../../src/util/line-splitter.js';

const text = (lines: Buffer[]): string[] => lines.map((l) => l.toString('utf8'));

test('a line cut into many chunks comes out whole, including a UTF-8 character cut in half', () => {
  const s = new LineSplitter(1024);
  const bytes = Buffer.from('{"desc":"naïve ✓"}\r\n');
  const out: Buffer[] = [];
  for (const b of bytes) {
    const r = s.push(Buffer.from([b]));
    assert.equal(r.overflow, false);
    out.push(...r.lines);
  }
  assert.deepEqual(text(out), ['{"desc":"naïve ✓"}\r']);
  assert.equal(s.bufferedBytes, 0);
});

test('several lines in one chunk come out in order, and a trailing partial line waits', () => {
  const s = new LineSplitter(1024);
  const r1 = s.push(Buffer.from('a\nbb\nccc\ndd'));
  assert.deepEqual(text(r1.lines), ['a', 'bb', 'ccc']);
  assert.equal(s.bufferedBytes, 2);
  const r2 = s.push(Buffer.from('d\n'));
  assert.deepEqual(text(r2.lines), ['ddd']);
});

test('a line longer than the limit is an overflow; lines before it are still delivered', () => {
  const s = new LineSplitter(8);
  const r = s.push(Buffer.from('ok\n0123456789'));
  assert.deepEqual(text(r.lines), ['ok']);
  assert.equal(r.overflow, true);
  assert.equal(s.bufferedBytes, 0, 'nothing is kept after an overflow');
});

test('the limit holds across chunks and for complete lines alike', () => {
  const a = new LineSplitter(8);
  assert.equal(a.push(Buffer.from('01234')).overflow, false);
  assert.equal(a.push(Buffer.from('5678')).overflow, true);
  const b = new LineSplitter(8);
  assert.equal(b.push(Buffer.from('012345678\n')).overflow, true);
  const c = new LineSplitter(8);
  assert.deepEqual(text(c.push(Buffer.from('01234567\n')).lines), ['01234567'], 'exactly the limit is fine');
});
