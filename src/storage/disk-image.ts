/** Disk image files, through qemu-img: the one place that creates them, so every caller gets the same checks. */
import { access, mkdir, open, rm } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError, describeError } from '../util/errors.js';
import { run } from '../util/exec.js';
import type { VolumeFormat } from './storage-group.js';

/** Creates an empty qcow2 image (see `createImage`). */
export function createQcow2(file: string, sizeMiB: number): Promise<void> {
  return createImage(file, sizeMiB, 'qcow2');
}

/**
 * Creates an empty image: qcow2, or raw (a sparse file: it allocates as the guest writes, like qcow2).
 * Throws `DISK_EXISTS` if anything is at `file` already: a data disk holds acknowledged writes, and
 * overwriting one by mistake would lose them.
 */
export async function createImage(file: string, sizeMiB: number, format: VolumeFormat): Promise<void> {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) {
    throw new LockstepError('INVALID_ARGUMENT', `disk size must be a whole number of MiB ≥ 1, not ${sizeMiB}`, { file, sizeMiB });
  }
  // Claiming the name with an exclusive create closes the gap between "does it exist?" and qemu-img creating it.
  try {
    await (await open(file, 'wx')).close();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new LockstepError('DISK_EXISTS', `refusing to overwrite the existing file ${file} with a new disk image`, { file });
    }
    throw new LockstepError('INVALID_ARGUMENT', `cannot create the disk image ${file}: ${describeError(e)}`, { file }, { cause: e });
  }
  try {
    await run('qemu-img', ['create', '-q', '-f', format, file, `${sizeMiB}M`]);
  } catch (e) {
    await rm(file, { force: true });
    throw e;
  }
}

/** A VM's disk on this host: created empty (`format`, `sizeMiB`) when there is none, else left as it is. */
export async function ensureDisk(file: string, sizeMiB: number, format: VolumeFormat): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  if (!(await exists(file))) await createImage(file, sizeMiB, format);
}

export async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}
