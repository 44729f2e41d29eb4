/**
 * One JSON POST over HTTP or HTTPS, as webhooks and Call Home send it. Accepted means a 2xx status; every
 * other answer (a redirect included: it is not followed, since the alert's receiver is what the operator
 * configured, not where it points) is a failure quoting the status and the start of the body.
 *
 * HTTPS verifies the server's certificate: against the configured CA file when there is one (a private
 * endpoint), else the system's CAs. Time is bounded for the whole exchange.
 */
import http from 'node:http';
import https from 'node:https';
import { delivered, failed, REPLY_CHARS_MAX, type DeliveryOutcome } from './outcome.js';

export const HTTP_TIMEOUT_MS = 30_000;
/** A response body is read only this far: for the error message, never for its content. */
const BODY_BYTES_MAX = 4096;

export interface PostOptions {
  /** PEM CA certificate(s) for an HTTPS endpoint with a private CA. */
  ca?: string | null;
  headers?: Record<string, string>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export async function postJson(url: string, body: unknown, opts: PostOptions = {}): Promise<DeliveryOutcome> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return failed('url', `${JSON.stringify(url)} is not a URL`);
  }
  const payload = Buffer.from(JSON.stringify(body), 'utf8');
  const secure = target.protocol === 'https:';
  const lib = secure ? https : http;
  const timeoutMs = opts.timeoutMs ?? HTTP_TIMEOUT_MS;
  return new Promise<DeliveryOutcome>((resolve) => {
    let step = 'connect';
    let settled = false;
    const finish = (o: DeliveryOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(o);
    };
    const req = lib.request(target, {
      method: 'POST',
      headers: {
        'content-type': 'application/json; charset=utf-8',
        'content-length': String(payload.length),
        'user-agent': 'lockstep-notify/1',
        ...opts.headers,
      },
      ...(secure && opts.ca ? { ca: opts.ca } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      // A fresh connection per delivery: an alert is rare, and a kept-alive socket to a receiver that
      // restarted meanwhile is one more way to fail.
      agent: false,
    });
    const timer = setTimeout(() => {
      finish(failed(step, `no answer from ${target.host} within ${timeoutMs} ms`));
      req.destroy();
    }, timeoutMs);
    req.on('socket', (sock) => {
      sock.once(secure ? 'secureConnect' : 'connect', () => (step = 'request'));
      if (secure) sock.once('connect', () => (step = 'TLS handshake'));
    });
    req.on('error', (e) => finish(failed(step, `POST ${redacted(target)} failed: ${e.message}`)));
    req.on('response', (res) => {
      step = 'HTTP status';
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < BODY_BYTES_MAX) chunks.push(c);
        size += c.length;
      });
      res.on('error', (e) => finish(failed('response', e.message)));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        const text = Buffer.concat(chunks).toString('utf8').slice(0, REPLY_CHARS_MAX);
        if (status >= 200 && status < 300) finish(delivered(`HTTP ${status}`));
        else {
          const where = status >= 300 && status < 400 && res.headers.location ? ` to ${res.headers.location} (redirects are not followed)` : '';
          finish(failed('HTTP status', `${redacted(target)} answered ${status} ${res.statusMessage ?? ''}${where}`.trim(), text === '' ? `HTTP ${status}` : `HTTP ${status}: ${text}`));
        }
      });
    });
    req.end(payload);
  });
}

/** The URL as logs may show it: without a password (user:secret@ in the URL). */
export function redacted(u: URL): string {
  if (u.password === '') return u.href;
  const copy = new URL(u.href);
  copy.password = '***';
  return copy.href;
}
