/**
 * A gzip'd tar archive of in-memory files (POSIX ustar), for the support bundle (src/daemon/support-bundle.ts):
 * every support engineer opens it with `tar xzf`, on any system, without a Lockstep tool. Regular files only,
 * each held in memory (the bundle's parts are bounded tails and views), names of at most 100 bytes.
 */
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { LockstepError } from './errors.js';

const gzipAsync = promisify(gzip);
const BLOCK = 512;
const NAME_BYTES_MAX = 100;
/** ustar's size field holds 11 octal digits. */
const SIZE_MAX = 8 ** 11 - 1;

export interface TarEntry {
  /** A relative path with `/` separators, no `..`, at most 100 bytes. */
  name: string;
  data: Buffer;
  /** Modification time, whole seconds since the epoch. */
  mtime: number;
}

/** The entries as a `.tar.gz`. Throws `INVALID_ARGUMENT` for a name or size ustar cannot hold. */
export async function tarGz(entries: readonly TarEntry[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(header(e));
    parts.push(e.data);
    const pad = (BLOCK - (e.data.length % BLOCK)) % BLOCK;
    if (pad > 0) parts.push(Buffer.alloc(pad));
  }
  // The end of an archive: two zero blocks.
  parts.push(Buffer.alloc(2 * BLOCK));
  return gzipAsync(Buffer.concat(parts));
}

function header(e: TarEntry): Buffer {
  const name = Buffer.from(e.name, 'utf8');
  if (name.length === 0 || name.length > NAME_BYTES_MAX || e.name.startsWith('/') || e.name.split('/').some((p) => p === '..' || p === '') || /[\0\n]/.test(e.name)) {
    throw new LockstepError('INVALID_ARGUMENT', `a tar entry's name must be a relative path of 1–${NAME_BYTES_MAX} bytes without '..': ${JSON.stringify(e.name)}`, { field: 'name' });
  }
  if (e.data.length > SIZE_MAX) throw new LockstepError('INVALID_ARGUMENT', `tar entry ${e.name} is over ${SIZE_MAX} bytes`, { field: 'data' });
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0);
  octal(h, 100, 8, 0o644); // mode
  octal(h, 108, 8, 0); // uid
  octal(h, 116, 8, 0); // gid
  octal(h, 124, 12, e.data.length);
  octal(h, 136, 12, Math.max(0, Math.floor(e.mtime)));
  h.fill(' ', 148, 156); // the checksum counts its own field as spaces
  h.write('0', 156, 'latin1'); // a regular file
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

/** A zero-padded octal number ending in NUL, filling `width` bytes at `at`. */
function octal(h: Buffer, at: number, width: number, value: number): void {
  h.write(`${value.toString(8).padStart(width - 1, '0')}\0`, at, 'latin1');
}
