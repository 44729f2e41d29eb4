/**
 * The bench guest whose RAM holds data: the lab guest's kernel, and its initramfs with a second archive
 * appended (the kernel unpacks both, in order) that adds `/bench-init` and a static memory filler. Booted
 * with `rdinit=/bench-init`, it fills its free RAM with pseudo-random pages and idles.
 *
 * Cached like the lab image, by the hash of everything that goes in, under `<cache>/bench/fill-guest/`.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { ensureGuestImage } from '../src/lab/guest-image.js';
import { run } from '../src/util/exec.js';
import { cacheDir, repoRoot } from '../src/util/paths.js';

export interface FillGuest {
  kernel: string;
  initrd: string;
  cmdline: string;
}

/** The console line the filler prints once RAM is full: `lockstep-bench: filled <MiB> MiB in <ms> ms`. */
export const FILLED_RE = /lockstep-bench: filled (\d+) MiB in (\d+) ms/;

export async function ensureFillGuest(): Promise<FillGuest> {
  const lab = await ensureGuestImage();
  const sources = path.join(repoRoot(), 'bench', 'guest');
  const init = await fs.readFile(path.join(sources, 'bench-init'));
  const filler = await fs.readFile(path.join(sources, 'fill-memory.c'));
  const hash = createHash('sha256').update(lab.hash).update('\0').update(init).update('\0').update(filler).digest('hex').slice(0, 20);
  const dir = path.join(cacheDir(), 'bench', 'fill-guest', hash);
  const guest = { kernel: lab.kernel, initrd: path.join(dir, 'initrd.img'), cmdline: 'console=ttyS0 quiet panic=-1 rdinit=/bench-init' };
  if (await fs.access(guest.initrd).then(() => true, () => false)) return guest;

  await fs.mkdir(path.dirname(dir), { recursive: true });
  const work = await fs.mkdtemp(`${dir}.tmp-`);
  try {
    const tree = path.join(work, 'tree');
    await fs.mkdir(path.join(tree, 'bin'), { recursive: true });
    await fs.writeFile(path.join(tree, 'bench-init'), init, { mode: 0o755 });
    await run('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-o', path.join(tree, 'bin', 'fill-memory'), path.join(sources, 'fill-memory.c')]);
    // cpio writes a file: `run` decodes stdout as UTF-8, which would mangle the archive.
    const archive = path.join(work, 'overlay.cpio');
    await run('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--quiet', '-O', archive], { cwd: tree, input: 'bench-init\nbin\nbin/fill-memory\n' });
    const overlay = await promisify(gzip)(await fs.readFile(archive));
    await fs.mkdir(path.join(work, 'image'));
    await fs.writeFile(path.join(work, 'image', 'initrd.img'), Buffer.concat([await fs.readFile(lab.initrd), overlay]));
    await fs.rename(path.join(work, 'image'), dir).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST' && e.code !== 'ENOTEMPTY') throw e; // another run built the same bytes first
    });
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  return guest;
}
