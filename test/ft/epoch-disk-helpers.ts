/**
 * Test helpers for the FT epoch disk: reading the copy's image file directly (what is on the copy, whatever
 * the epoch disk holds), reading through the epoch disk's server (what the mirror's target shows), and a
 * guest zero write. Each runs qemu-io once and reports whether the range holds the pattern.
 */
import path from 'node:path';
import { run } from '../../src/util/exec.js';
import type { DiskQemu } from '../storage/mirror-helpers.js';

async function holds(args: string[], offset: number, bytes: number, pattern: number): Promise<boolean> {
  const r = await run('qemu-io', [...args, '-c', `read -P ${pattern} ${offset} ${bytes}`], { allowFailure: true, timeoutMs: 10_000 });
  return r.code === 0 && r.stdout.startsWith('read ') && !/Pattern verification failed|failed/.test(r.stdout + r.stderr);
}

/**
 * True if the copy's qcow2 file holds `pattern` over the range. `-U`: qemu-nbd has the image open (and locked);
 * what it flushed is in the file, which is all a commit promises.
 */
export function copyFileHolds(copy: string, offset: number, bytes: number, pattern: number): Promise<boolean> {
  return holds(['-U', '-r', '-f', 'qcow2', copy], offset, bytes, pattern);
}

/** True if a read through the epoch disk's NBD server (a second client beside the mirror) shows `pattern`. */
export function serverHolds(dir: string, vm: string, offset: number, bytes: number, pattern: number): Promise<boolean> {
  return holds(['-r', '-f', 'raw', `nbd+unix:///${vm}?socket=${path.join(dir, 'ft.sock')}`], offset, bytes, pattern);
}

/** A guest zero write (`write -z`: a write-zeroes request through the disk's device, as a guest's WRITE_ZEROES). */
export async function guestZero(q: DiskQemu, offset: number, bytes: number): Promise<void> {
  const result = q.ioResults.next();
  const answer = await q.qmp.execute<string>('human-monitor-command', {
    'command-line': `qemu-io -d /machine/peripheral/vda/virtio-backend "write -z ${offset} ${bytes}"`,
  });
  if (answer.trim() !== '') throw new Error(`qemu-io refused the zero write: ${answer.trim()}`);
  const line = await result;
  if (!line.startsWith('wrote ')) throw new Error(`guest zero write of ${bytes} at ${offset} failed: ${line}`);
}
