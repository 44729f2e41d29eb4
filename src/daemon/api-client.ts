/** A client of lockstepd's local API (unix socket, JSON), with errors that keep the daemon's code. */
import http from 'node:http';
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

function toError(parsed: unknown, method: string, path: string, status: number): LockstepError {
  const err = (parsed as { error?: { code?: string; message?: string; fields?: Record<string, unknown> } } | null)?.error;
  const code = err?.code && err.code in ERROR_CODES ? (err.code as ErrorCode) : 'DAEMON_ERROR';
  return new LockstepError(code, err?.message ?? `lockstepd answered ${method} ${path} with HTTP ${status}`, { ...(err?.fields ?? {}), status });
}
