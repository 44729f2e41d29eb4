/**
 * The last bytes of a VM's serial log (`serial.log` in its run directory, `run-dir.ts`), as text
 * (`console-text.ts`). QEMU appends to it while the guest runs and truncates it when the next instance
 * starts; in between it stays, so a stopped VM's last words can still be read.
 *
 * A log can grow without bound over a long run: only the tail asked for is read, at its offset, never the
 * whole file.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { LockstepError, describeError } from '../util/errors.js';
import { tailText } from './console-text.js';

export interface ConsoleLogTail {
  /** The log's size when read. */
  size: number;
  /** How many of its last bytes `text` is made of (at most those asked for, less a partial first line). */
  bytes: number;
  /** Whether `text` leaves out the log's beginning. */
  truncated: boolean;
  text: string;
}

/** The last `maxBytes` of the serial log `file`, from a line start; null when there is no such file. */
export async function readConsoleLog(file: string, maxBytes: number): Promise<ConsoleLogTail | null> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw unreadable(file, e);
  }
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - maxBytes);
    const tail = Buffer.alloc(size - start);
    // Fewer bytes when QEMU truncated it meanwhile (a new instance): what was there is what is shown.
    const { bytesRead } = await fh.read(tail, 0, tail.length, start);
    // The byte before the tail says whether it begins a line: read apart, so no more than asked is held.
    let atLineStart = start === 0;
    if (!atLineStart) {
      const before = Buffer.alloc(1);
      atLineStart = (await fh.read(before, 0, 1, start - 1)).bytesRead === 1 && before[0] === 0x0a;
    }
    const { text, droppedBytes } = tailText(tail.subarray(0, bytesRead), atLineStart);
    return { size, bytes: bytesRead - droppedBytes, truncated: start > 0, text };
  } catch (e) {
    throw unreadable(file, e);
  } finally {
    await fh.close();
  }
}

function unreadable(file: string, cause: unknown): LockstepError {
  return new LockstepError('CONSOLE_LOG_UNREADABLE', `cannot read the console log ${file}: ${describeError(cause)}`, { path: file, errno: (cause as NodeJS.ErrnoException).code ?? null }, { cause });
}
