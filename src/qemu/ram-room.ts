/**
 * Room for guest RAM files on a tmpfs (`ft.memoryDir`). Every VM's RAM is a sparse file there
 * (`memory-backend-file,share=on`): QEMU's pages are allocated as the guest first touches them, so a tmpfs
 * that runs out of room does not fail the start — it kills the guest later with SIGBUS on a page fault.
 * A start is therefore checked against what the file system has left *after* every file already there has
 * grown to its full size: free space minus the holes of the sparse files (RAM files of running guests,
 * the backup's checkpoint images, which are RAM-sized too).
 */
import { readdir, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError, describeError } from '../util/errors.js';

export interface RamRoom {
  /** What a writer may still allocate on the file system now. */
  freeBytes: number;
  /** What the sparse files under the directory will still take once fully touched. */
  promisedBytes: number;
}

/** Free space and the holes of the files under `dir` (recursively), leaving out `except` (a file being replaced). */
export async function ramRoom(dir: string, except: string | null = null): Promise<RamRoom> {
  const fs = await statfs(dir);
  return { freeBytes: fs.bavail * fs.bsize, promisedBytes: await holes(dir, except) };
}

/**
 * Throws `MEMORY_DIR_FULL` unless `dir` has room for a RAM file of `ramBytes` beside what its files
 * already promise; `ramPath` (the file the VM will use) does not count against itself.
 */
export async function ensureRamRoom(dir: string, ramPath: string, ramBytes: number, vm: string): Promise<void> {
  let room: RamRoom;
  try {
    room = await ramRoom(dir, ramPath);
  } catch (e) {
    throw new LockstepError('MEMORY_DIR_FULL', `cannot tell whether ${dir} has room for the RAM of VM '${vm}': ${describeError(e)}`, { dir, vm }, { cause: e });
  }
  const left = room.freeBytes - room.promisedBytes;
  if (left < ramBytes) {
    throw new LockstepError(
      'MEMORY_DIR_FULL',
      `${dir} has ${mib(left)} MiB left for guest RAM (${mib(room.freeBytes)} MiB free, ${mib(room.promisedBytes)} MiB promised to files there), VM '${vm}' needs ${mib(ramBytes)} MiB`,
      { dir, vm, freeBytes: room.freeBytes, promisedBytes: room.promisedBytes, ramBytes },
    );
  }
}

async function holes(dir: string, except: string | null): Promise<number> {
  let sum = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (p === except) continue;
    // A file or directory removed meanwhile (a VM that just exited, a store dropped) promises nothing.
    if (entry.isDirectory()) sum += await holes(p, except).catch(ifGone(0));
    else if (entry.isFile()) {
      const s = await stat(p).catch(ifGone(null));
      if (s) sum += Math.max(0, s.size - s.blocks * 512);
    }
  }
  return sum;
}

function ifGone<T>(value: T): (e: unknown) => T {
  return (e) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return value;
    throw e;
  };
}

function mib(bytes: number): number {
  return Math.floor(bytes / (1024 * 1024));
}
