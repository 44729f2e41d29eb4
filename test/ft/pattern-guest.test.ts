// The pattern guest: its bytes are what pattern-guest.S assembles to, and the pattern check says what it
// should about made-up RAM.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { findProgram } from '../../src/util/proc.js';
import { repoRoot } from '../../src/util/paths.js';
import { Cleanup } from '../support/cleanup.js';
import { tempDir } from '../qemu/helpers.js';
import { checkPattern, patternGuestCode } from './pattern-guest.js';

const exec = promisify(execFile);
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('the pattern guest bytes are what pattern-guest.S assembles to (when binutils is installed)', async (t) => {
  // The bytes themselves are in pattern-guest.ts, which every other FT test runs; assembling the source is a
  // cross-check that needs binutils (setup.sh brings it with gcc for the lab's wire), so without it: skipped.
  if (!(await findProgram('as')) || !(await findProgram('ld'))) {
    t.skip('binutils (as, ld) not installed');
    return;
  }
  const dir = await tempDir(cleanup);
  await exec('as', ['--32', '-o', path.join(dir, 'g.o'), path.join(repoRoot(), 'test', 'ft', 'pattern-guest.S')]);
  await exec('ld', ['-m', 'elf_i386', '-Ttext', '0x7c00', '--oformat', 'binary', '-o', path.join(dir, 'g.img'), path.join(dir, 'g.o')]);
  assert.deepEqual(await readFile(path.join(dir, 'g.img')), patternGuestCode());
});

test('checkPattern: k+1 before one edge and k after it is consistent (mod 256); a second edge or a stray value is not', () => {
  const region = { startBytes: 0x100000, endBytes: 0x100000 + 8 * 4096 };
  const ram = Buffer.alloc(region.endBytes);
  const set = (values: number[]): void => values.forEach((v, i) => (ram[region.startBytes + i * 4096] = v));
  set([0, 0, 0, 255, 255, 255, 255, 255]);
  assert.deepEqual(checkPattern(ram, region), { consistent: true, first: 0, edgePage: 0x100 + 3, bad: [] });
  set([5, 5, 5, 5, 5, 5, 5, 5]);
  assert.equal(checkPattern(ram, region).edgePage, null);
  set([6, 6, 5, 5, 4, 4, 4, 4]);
  // Past a second edge every page is off from the first side's value, as QEMU's test counts them.
  assert.deepEqual(checkPattern(ram, region).bad, [0x100 + 4, 0x100 + 5, 0x100 + 6, 0x100 + 7]);
  set([6, 6, 9, 6, 6, 6, 6, 6]);
  assert.equal(checkPattern(ram, region).consistent, false);
});
