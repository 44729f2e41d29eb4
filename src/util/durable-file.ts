/** Files that survive a power loss whole or not at all: write a temporary file, fsync it, rename, fsync the folder. */
import { open, rename, mkdir } from 'node:fs/promises';
import path from 'node:path';

export async function writeFileDurably(file: string, content: string | Buffer): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w');
  try {
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
