// A guest's serial console as text: escape sequences and control characters out, newlines and tabs kept;
// a tail cut at a line start, and UTF-8 cut by either end or invalid in the middle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stripControls, tailText } from '../../src/qemu/console-text.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

test('what a booting Linux writes: colours, cursor moves, a title, CRLF — text, newlines and tabs left', () => {
  const rows: [string, string, string][] = [
    ['CRLF line ends', 'Booting\r\nLinux\r\n', 'Booting\nLinux\n'],
    ['SGR colours', '[  \x1b[0;32mOK\x1b[0m  ] Started\tjournald\n', '[  OK  ] Started\tjournald\n'],
    ['cursor moves and erase', '\x1b[2J\x1b[H\x1b[?25lready\x1b[K\n', 'ready\n'],
    ['an OSC title ended by BEL', '\x1b]0;root@guest:~\x07$ ', '$ '],
    ['an OSC ended by ST', '\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n', 'link\n'],
    ['a DCS string', 'a\x1bPq#0;2;0;0;0\x1b\\b', 'ab'],
    ['charset and keypad escapes, a reset', '\x1b(B\x1b=\x1bcx', 'x'],
    ['bell, backspace, NUL, DEL, a stray ESC', 'a\x07b\x08c\x00d\x7fe\x1b', 'abcde'],
    ['C1 controls encoded in UTF-8', 'a\u009b31mb\u009bmc\u0085d', 'abcd'],
    ['an OSC never terminated: only its introducer goes', '\x1b]0;title', '0;title'],
    ['a CSI without its final byte: the introducer goes', 'x\x1b[12', 'x12'],
    ['text that is not ASCII', 'Grüße, 日本語 ✓\n', 'Grüße, 日本語 ✓\n'],
  ];
  for (const [what, input, want] of rows) assert.equal(stripControls(input), want, what);
});

test('a guest writing a flood of unterminated control strings is cleaned in linear time', () => {
  const flood = '\x1b]'.repeat(256 * 1024) + 'end';
  const t0 = performance.now();
  assert.equal(stripControls(flood), 'end');
  const long = '\x1b]' + 'a'.repeat(512 * 1024);
  assert.equal(stripControls(long), 'a'.repeat(512 * 1024));
  assert.ok(performance.now() - t0 < 2000, 'a quadratic scan would take minutes');
});

test('a tail that starts a line is whole; one that does not loses its partial first line', () => {
  assert.deepEqual(tailText(bytes('one\ntwo\n'), true), { text: 'one\ntwo\n', droppedBytes: 0 });
  assert.deepEqual(tailText(bytes('ne\ntwo\nthr'), false), { text: 'two\nthr', droppedBytes: 3 });
  assert.deepEqual(tailText(bytes('\ntwo\n'), false), { text: 'two\n', droppedBytes: 1 });
  assert.deepEqual(tailText(bytes(''), false), { text: '', droppedBytes: 0 });
  // All one line: kept, from its first whole character (the tail began inside a 3-byte one).
  const cut = bytes('日本語').subarray(1);
  assert.deepEqual(tailText(cut, false), { text: '本語', droppedBytes: 2 });
});

test('UTF-8: a character the end cuts is held back; an invalid one in the middle becomes U+FFFD', () => {
  const writing = bytes('ok ✓');
  assert.equal(tailText(writing.subarray(0, writing.length - 1), true).text, 'ok ');
  assert.equal(tailText(new Uint8Array([0x61, 0xff, 0x62, 0x0a]), true).text, 'a\ufffdb\n');
  // A raw 8-bit CSI byte is not UTF-8: replaced, not read as a control.
  assert.equal(tailText(new Uint8Array([0x61, 0x9b, 0x62]), true).text, 'a\ufffdb');
  // A BOM is the guest's text, not a signature to strip.
  assert.equal(tailText(bytes('\ufeffx'), true).text, '\ufeffx');
});
