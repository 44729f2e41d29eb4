/**
 * A small real tmpfs for the tests of what accounts room on one (guest RAM files, checkpoint images): made
 * in a fresh temporary directory before the file's tests and removed after them. Mounting needs root: the
 * tests that use `mounted` skip with `needsRoot` otherwise; `tmp` (beside the mount) exists either way.
 */
import { after, before } from 'node:test';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/util/exec.js';

export const needsRoot: string | false = process.getuid?.() !== 0 ? 'needs root (mounts a tmpfs)' : false;

export interface TestTmpfs {
  /** The temporary directory the mount point is in. */
  readonly tmp: string;
  /** The tmpfs (a plain directory when not root). */
  readonly dir: string;
}

/** Registers `before`/`after` hooks for a tmpfs of `sizeMiB`; its paths are set once `before` ran. */
export function testTmpfs(tag: string, sizeMiB: number): TestTmpfs {
  const fs = { tmp: '', dir: '' };
  let mounted = false;
  before(async () => {
    fs.tmp = await mkdtemp(path.join(os.tmpdir(), `lockstep-${tag}-`));
    fs.dir = path.join(fs.tmp, 'memory');
    await mkdir(fs.dir);
    if (needsRoot) return;
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, `lockstep-${tag}`, fs.dir]);
    mounted = true;
  });
  after(async () => {
    if (mounted) await run('umount', [fs.dir]);
    await rm(fs.tmp, { recursive: true, force: true });
  });
  return fs;
}
