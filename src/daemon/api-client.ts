/** A client of lockstepd's local API (unix socket, JSON), with errors that keep the daemon's code. */
import http from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
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
export async function daemonUpload<T>(socketPath: string, path: string, file: string, contentType: string, idleMs = 60_000): Promise<T> {
  const { size } = await stat(file).catch((e: NodeJS.ErrnoException) => {
    throw new LockstepError('INVALID_ARGUMENT', `cannot read ${file}: ${e.message}`, { file });
  });
  return new Promise<T>((resolve, reject) => {
    let answered = false;
    const headers = { 'content-type': contentType, 'content-length': size, expect: '100-continue' };
    const req = http.request({ socketPath, method: 'PUT', path, headers, timeout: idleMs }, (res) => {
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
          reject(new LockstepError('DAEMON_ERROR', `lockstepd answered PUT ${path} with invalid JSON`, { status: res.statusCode }));
          return;
        }
        if ((res.statusCode ?? 500) >= 400) reject(toError(parsed, 'PUT', path, res.statusCode ?? 500));
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

function toError(parsed: unknown, method: string, path: string, status: number): LockstepError {
  const err = (parsed as { error?: { code?: string; message?: string; fields?: Record<string, unknown> } } | null)?.error;
  const code = err?.code && err.code in ERROR_CODES ? (err.code as ErrorCode) : 'DAEMON_ERROR';
  return new LockstepError(code, err?.message ?? `lockstepd answered ${method} ${path} with HTTP ${status}`, { ...(err?.fields ?? {}), status });
}
