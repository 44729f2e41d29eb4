// The daemon's recent log lines for the support bundle: kept in order, bounded in bytes, oldest first out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogTail } from '../../src/daemon/log-tail.js';

test('lines come back in order, each with its newline; none yet is an empty text', () => {
  const t = new LogTail(1024);
  assert.equal(t.text(), '');
  t.add('first');
  t.add('second — é');
  assert.equal(t.text(), 'first\nsecond — é\n');
});

test('over its bound the oldest lines go, and the tail never holds more than the bound', () => {
  const t = new LogTail(100);
  for (let i = 0; i < 10_000; i++) t.add(`line ${String(i).padStart(5, '0')}`);
  const text = t.text();
  assert.ok(Buffer.byteLength(text) <= 100, `${Buffer.byteLength(text)} bytes`);
  const lines = text.trimEnd().split('\n');
  // Each line is 10 bytes and its newline 1: nine of them fit in 100.
  assert.deepEqual(lines, Array.from({ length: 9 }, (_, k) => `line ${String(10_000 - 9 + k).padStart(5, '0')}`));
});

test('a line larger than the bound is not kept, and does not push out what came after it', () => {
  const t = new LogTail(20);
  t.add('x'.repeat(50));
  assert.equal(t.text(), '');
  t.add('short');
  assert.equal(t.text(), 'short\n');
});
