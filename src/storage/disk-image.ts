/** Disk image files, through qemu-img: the one place that creates them, so every caller gets the same checks. */
import { access } from 'node:fs/promises';
import { LockstepError } from '../util/errors.js';
import { run } from '../util/exec.js';

/** Creates an empty qcow2 image; refuses to touch an existing file, which may hold a VM's data. */
export async function createQcow2(file: string, sizeMiB: number): Promise<void> {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) {
    throw new LockstepError('INVALID_ARGUMENT', `disk size must be a whole number of MiB ≥ 1 (got ${sizeMiB})`, { file, sizeMiB });
  }
  if (await exists(file)) throw new LockstepError('INVALID_ARGUMENT', `refusing to overwrite the existing disk image ${file}`, { file });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, `${sizeMiB}M`]);
}

export async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}
