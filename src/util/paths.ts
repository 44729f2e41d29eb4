/** Where Lockstep's own files are: the repository (for guest sources), caches and lab state. */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import os from 'node:os';

/** The repository root: this file is at `<root>/src/util/paths.ts`, compiled to `<root>/dist/src/util/paths.js`. */
export function repoRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const parts = here.split(path.sep);
  const distAt = parts.lastIndexOf('dist');
  const srcAt = parts.lastIndexOf('src');
  const cut = distAt >= 0 ? distAt : srcAt;
  return parts.slice(0, cut).join(path.sep) || path.sep;
}

/** Content-addressed build cache (guest images, compiled helpers); `LOCKSTEP_CACHE` overrides it. */
export function cacheDir(): string {
  return process.env['LOCKSTEP_CACHE'] ?? path.join(os.homedir(), '.cache', 'lockstep');
}
