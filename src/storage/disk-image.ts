/** Disk image files, through qemu-img: the one place that creates them, so every caller gets the same checks. */
import { access, mkdir, open, rm } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError, describeError } from '../util/errors.js';
import { run } from '../util/exec.js';

/**
 * Creates an empty qcow2 image. Throws `DISK_EXISTS` if anything is at `file` already: a data disk holds
 * acknowledged writes, and overwriting one by mistake would lose them.
 */
export async function createQcow2(file: string, sizeMiB: number): Promise<void> {
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
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, `${sizeMiB}M`]);
  } catch (e) {
    await rm(file, { force: true });
    throw e;
  }
}

/** A VM's disk on this host: created empty (qcow2, `sizeMiB`) when there is none, else left as it is. */
export async function ensureDisk(file: string, sizeMiB: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  if (!(await exists(file))) await createQcow2(file, sizeMiB);
}

export async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}
