/**
 * The Availability Console's files, as the management server serves them: the page (`/`), its style sheet
 * and icon (`/console/…`, from `src/console/web/`) and its scripts (`/console/….js`, the browser modules
 * tsc compiles from `src/console/web/` into `dist/src/console/web/`). Everything is read once, at start, into
 * a fixed table: a request can only ever name a file in it, so no path from the network reaches the file
 * system. The console has its own Content-Security-Policy: scripts, styles, images and connections
 * (`fetch` and the event stream's `wss:`) from this origin only; no inline script or style, nothing from
 * anywhere else (the management network has no internet, and a console must not load code it did not serve).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';
import { LockstepError } from '../util/errors.js';
import type { Reply } from '../api/routes.js';

/** Under this path prefix the console's files are served; `/` is its page. */
export const CONSOLE_PREFIX = '/console/';

/**
 * The console's policy. `connect-src 'self'` covers `wss:` to this host and port (CSP Level 3 matches the
 * WebSocket schemes of a secure origin), which is how the page reaches the event stream.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The headers of every console file; they replace the API's (whose CSP allows nothing at all). */
export const CONSOLE_HEADERS: Record<string, string> = {
  // `no-cache`: the browser may keep a copy but asks each time, so a lockstepd upgraded in place serves its new console.
  'cache-control': 'no-cache',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': CONSOLE_CSP,
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** The static files beside the sources (tsc does not copy them): the page, its style, its icon. */
const STATIC_FILES = ['index.html', 'style.css', 'icon.svg'] as const;

/** Bounds on what is loaded: a console is a few dozen small modules. */
const FILES_MAX = 200;
const FILE_BYTES_MAX = 512 * 1024;

export interface ConsoleDirs {
  /** `index.html`, `style.css`, `icon.svg`. */
  staticDir: string;
  /** The compiled browser modules (`*.js`, in subfolders too). */
  scriptDir: string;
}

/** Where a checkout keeps them: the sources' folder and tsc's output of it. */
export function defaultConsoleDirs(): ConsoleDirs {
  const root = repoRoot();
  return { staticDir: path.join(root, 'src', 'console', 'web'), scriptDir: path.join(root, 'dist', 'src', 'console', 'web') };
}

interface Asset {
  type: string;
  body: string;
}

/** The console's files by request path, or why there are none (the server then says so at `/`). */
export type ConsoleAssets = { ok: true; files: ReadonlyMap<string, Asset> } | { ok: false; error: LockstepError };

/** Reads every console file into memory; a missing page or a build without the scripts is an error value. */
export async function loadConsoleAssets(dirs: ConsoleDirs = defaultConsoleDirs()): Promise<ConsoleAssets> {
  const files = new Map<string, Asset>();
  try {
    for (const name of STATIC_FILES) files.set(name === 'index.html' ? '/' : `${CONSOLE_PREFIX}${name}`, await asset(path.join(dirs.staticDir, name)));
    const scripts = await scriptsUnder(dirs.scriptDir);
    if (!scripts.includes('main.js')) throw new Error(`no main.js in ${dirs.scriptDir}: build the console with tsc -p .`);
    for (const rel of scripts) files.set(`${CONSOLE_PREFIX}${rel}`, await asset(path.join(dirs.scriptDir, rel)));
  } catch (e) {
    return { ok: false, error: new LockstepError('CONSOLE_UNAVAILABLE', `the console's files could not be loaded: ${(e as Error).message}`, { ...dirs }) };
  }
  if (files.size > FILES_MAX) return { ok: false, error: new LockstepError('CONSOLE_UNAVAILABLE', `the console has ${files.size} files, more than ${FILES_MAX}`, { ...dirs }) };
  return { ok: true, files };
}

async function asset(file: string): Promise<Asset> {
  const type = TYPES[path.extname(file)];
  if (type === undefined) throw new Error(`${file}: not a type the console serves`);
  const body = await readFile(file, 'utf8');
  if (Buffer.byteLength(body) > FILE_BYTES_MAX) throw new Error(`${file} is over ${FILE_BYTES_MAX} bytes`);
  return { type, body };
}

/** The `.js` files below `dir`, relative, with `/` separators. */
async function scriptsUnder(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel === '' ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) out.push(...(await scriptsUnder(dir, r)));
    else if (entry.isFile() && entry.name.endsWith('.js')) out.push(r);
    if (out.length > FILES_MAX) throw new Error(`more than ${FILES_MAX} scripts under ${dir}`);
  }
  return out.sort();
}

/** Whether a request path is the console's rather than the API's: `/` and everything below `/console/`. */
export function isConsolePath(pathname: string): boolean {
  return pathname === '/' || pathname.startsWith(CONSOLE_PREFIX);
}

/** The answer to a request for a console path: the file, or the error to answer (404, 405, 503). */
export function consoleReply(assets: ConsoleAssets, method: string, pathname: string): Reply {
  if (method !== 'GET') throw new LockstepError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${pathname}: the console's files are read with GET`, { allow: ['GET'] });
  if (!assets.ok) throw assets.error;
  const file = assets.files.get(pathname);
  if (file === undefined) throw new LockstepError('UNKNOWN_ENDPOINT', `the console has no file ${pathname}`, { method, path: pathname });
  return { status: 200, body: file.body, contentType: file.type, headers: CONSOLE_HEADERS };
}
