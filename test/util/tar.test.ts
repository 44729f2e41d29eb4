// The ustar writer against Debian's GNU tar: what tar lists and extracts is what was written, byte for byte,
// at block edges and for an empty file; names ustar cannot hold are refused before anything is written.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Cleanup } from '../support/cleanup.js';
import { tempDir } from '../notify/helpers.js';
import { tarGz } from '../../src/util/tar.js';
import { run } from '../../src/util/exec.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('GNU tar lists and extracts every entry byte for byte, with its size and time', async () => {
  const dir = await tempDir(cleanup, 'lockstep-tar-');
  const mtime = 1_796_000_000;
  const entries = [
    { name: 'b/empty.txt', data: Buffer.alloc(0), mtime },
    { name: 'b/one-short.bin', data: randomBytes(511), mtime },
    { name: 'b/one-block.bin', data: randomBytes(512), mtime },
    { name: 'b/one-over.bin', data: randomBytes(513), mtime },
    { name: 'b/vms/web/console-log.txt', data: Buffer.from('Linux version 6.1 — ready\n', 'utf8'), mtime },
    { name: `b/${'n'.repeat(98)}`, data: Buffer.from('a name of 100 bytes'), mtime },
  ];
  const archive = path.join(dir, 'x.tar.gz');
  const gz = await tarGz(entries);
  await writeFile(archive, gz);
  // A whole number of blocks, ending in the two zero blocks.
  const raw = gunzipSync(gz);
  assert.equal(raw.length % 512, 0);
  assert.ok(raw.subarray(raw.length - 1024).every((b) => b === 0));
  const listing = (await run('tar', ['--numeric-owner', '--full-time', '-tvzf', archive], { env: { ...process.env, TZ: 'UTC' } })).stdout.trim().split('\n');
  assert.equal(listing.length, entries.length);
  for (const [i, e] of entries.entries()) {
    assert.match(listing[i]!, new RegExp(`^-rw-r--r-- 0/0 +${e.data.length} 2026-11-30 00:53:20 ${e.name}$`));
  }
  const out = path.join(dir, 'out');
  await mkdir(out);
  await run('tar', ['-xzf', archive, '-C', out]);
  for (const e of entries) assert.deepEqual(await readFile(path.join(out, e.name)), e.data, e.name);
});

test('names ustar cannot hold, or that would escape the directory, are refused', async () => {
  const data = Buffer.from('x');
  for (const name of ['', '/etc/passwd', 'a/../b', '../b', 'a//b', 'a/', 'x'.repeat(101), 'a\nb']) {
    await assert.rejects(tarGz([{ name, data, mtime: 0 }]), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT', JSON.stringify(name));
  }
});
