/** Files that survive a power loss whole or not at all: write a temporary file, fsync it, rename, fsync the folder. */
import { open, rename, mkdir } from 'node:fs/promises';
import path from 'node:path';

export interface DurableWriteOptions {
  /**
   * Permission bits of the file (e.g. `0o600` for a private key). The temporary file has them from its
   * creation on, so the content is never readable by others, not even for a moment.
   */
  mode?: number;
}

export async function writeFileDurably(file: string, content: string | Buffer, opts: DurableWriteOptions = {}): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w', opts.mode ?? 0o666);
  try {
    // A leftover temporary file keeps its old mode on open: set it explicitly before writing.
    if (opts.mode !== undefined) await fh.chmod(opts.mode);
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
