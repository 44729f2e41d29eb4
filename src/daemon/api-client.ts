/** A client of lockstepd's local API (unix socket, JSON), with errors that keep the daemon's code. */
import http from 'node:http';
import { createReadStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { LockstepError, type ErrorCode, ERROR_CODES } from '../util/errors.js';

export async function daemonRequest<T>(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
  const text = body === undefined ? '' : JSON.stringify(body);
  return new Promise<T>((resolve, reject) => {
    const req = http.request(
      { socketPath, method, path, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = null;
          try {
            parsed = raw === '' ? null : JSON.parse(raw);
          } catch {
            reject(new LockstepError('DAEMON_ERROR', `lockstepd answered ${method} ${path} with invalid JSON`, { status: res.statusCode }));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) reject(toError(parsed, method, path, res.statusCode ?? 500));
          else resolve(parsed as T);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) =>
      reject(new LockstepError('DAEMON_UNREACHABLE', `lockstepd at ${socketPath} did not answer: ${e.message}`, { socketPath }, { cause: e })),
    );
    req.end(text);
  });
}

/**
 * Streams a file as the raw body of an upload route (`PUT /v1/vcds/NAME`), never holding it in memory; the
 * answer as `daemonRequest`'s. It asks to wait (`Expect: 100-continue`), so a refusal that needs no body
 * (a name taken, no room) comes before a byte is sent. No timeout on the whole: an image takes as long as it
 * takes, but a daemon silent for `idleMs` (nothing read, nothing answered) ends it.
 */
export async function daemonUpload<T>(socketPath: string, path: string, file: string, contentType: string, idleMs = 60_000, method: 'PUT' | 'POST' = 'PUT'): Promise<T> {
  const { size } = await stat(file).catch((e: NodeJS.ErrnoException) => {
    throw new LockstepError('INVALID_ARGUMENT', `cannot read ${file}: ${e.message}`, { file });
  });
  return new Promise<T>((resolve, reject) => {
    let answered = false;
    const headers = { 'content-type': contentType, 'content-length': size, expect: '100-continue' };
    const req = http.request({ socketPath, method, path, headers, timeout: idleMs }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      // `close`, not `end`: an answer cut off by the connection's close is still settled (as invalid JSON).
      res.on('close', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = null;
        try {
          parsed = raw === '' ? null : JSON.parse(raw);
        } catch {
          reject(new LockstepError('DAEMON_ERROR', `lockstepd answered ${method} ${path} with invalid JSON`, { status: res.statusCode }));
          return;
        }
        if ((res.statusCode ?? 500) >= 400) reject(toError(parsed, method, path, res.statusCode ?? 500));
        else resolve(parsed as T);
      });
    });
    req.on('continue', () => {
      const body = createReadStream(file);
      body.on('error', (e) => req.destroy(e));
      body.pipe(req);
    });
    req.on('timeout', () => req.destroy(new Error(`nothing moved for ${idleMs} ms`)));
    // A refusal mid-body closes the connection while the rest is still being sent: its answer, once in, is what counts.
    req.on('error', (e) => {
      if (!answered) reject(new LockstepError('DAEMON_UNREACHABLE', `lockstepd at ${socketPath} did not take the upload: ${e.message}`, { socketPath }, { cause: e }));
    });
    req.flushHeaders();
  });
}

/**
 * Downloads a route's file answer (`GET /v1/snapshots/ID/image`, `POST /v1/support/bundle`) into a file,
 * streamed: into a hidden name beside it, renamed once every byte its `Content-Length` announced is in, so a
 * cut-off download leaves nothing at the file. Refuses to overwrite an existing file. `file` is the path, or
 * chooses it from the name the answer's `Content-Disposition` suggests (null when it names none), once the
 * answer has come. Resolves with the bytes written; `onProgress` hears of every chunk (the CLI's progress line).
 */
export async function daemonDownload(
  socketPath: string,
  path: string,
  file: string | ((suggested: string | null) => Promise<string>),
  opts: { method?: 'GET' | 'POST'; idleMs?: number; onProgress?: (receivedBytes: number, totalBytes: number) => void } = {},
): Promise<number> {
  const idleMs = opts.idleMs ?? 60_000;
  const method = opts.method ?? 'GET';
  if (typeof file === 'string') await refuseExisting(file);
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({ socketPath, method, path, timeout: idleMs }, resolve);
    req.on('timeout', () => req.destroy(new Error(`nothing moved for ${idleMs} ms`)));
    req.on('error', (e) => reject(new LockstepError('DAEMON_UNREACHABLE', `lockstepd at ${socketPath} did not answer: ${e.message}`, { socketPath }, { cause: e })));
    req.end();
  });
  if ((res.statusCode ?? 500) >= 400) {
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      parsed = null;
    }
    throw toError(parsed, method, path, res.statusCode ?? 500);
  }
  let target: string;
  if (typeof file === 'string') target = file;
  else {
    try {
      target = await file(/filename="([^"]+)"/.exec(String(res.headers['content-disposition'] ?? ''))?.[1] ?? null);
      await refuseExisting(target);
    } catch (e) {
      res.destroy();
      throw e;
    }
  }
  const tmp = `${target}.part`;
  const expected = Number(res.headers['content-length']);
  let received = 0;
  res.on('data', (c: Buffer) => {
    received += c.length;
    opts.onProgress?.(received, expected);
  });
  try {
    await pipeline(res, createWriteStream(tmp, { flags: 'wx' }));
    if (received !== expected) throw new LockstepError('DAEMON_ERROR', `the download of ${path} ended after ${received} of ${expected} bytes`, { receivedBytes: received, bytes: expected });
    await rename(tmp, target);
    return received;
  } catch (e) {
    await rm(tmp, { force: true });
    if (e instanceof LockstepError) throw e;
    throw new LockstepError('DAEMON_UNREACHABLE', `the download of ${path} broke: ${(e as Error).message}`, { socketPath }, { cause: e });
  }
}

async function refuseExisting(file: string): Promise<void> {
  if (await stat(file).then(() => true, () => false)) throw new LockstepError('INVALID_ARGUMENT', `${file} exists already: it is not overwritten`, { file });
}

function toError(parsed: unknown, method: string, path: string, status: number): LockstepError {
  const err = (parsed as { error?: { code?: string; message?: string; fields?: Record<string, unknown> } } | null)?.error;
  const code = err?.code && err.code in ERROR_CODES ? (err.code as ErrorCode) : 'DAEMON_ERROR';
  return new LockstepError(code, err?.message ?? `lockstepd answered ${method} ${path} with HTTP ${status}`, { ...(err?.fields ?? {}), status });
}
