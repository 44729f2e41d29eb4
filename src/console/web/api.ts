/**
 * The management API from the browser: same origin, the session in its HttpOnly cookie (the page never sees
 * the token). Every answer is a value: the body, or the API's error (`{code, message, fields}`) — or
 * `NETWORK` when no answer came — so a page shows what went wrong instead of throwing.
 */

export type ApiResult<T> =
  | { ok: true; status: number; body: T }
  | { ok: false; status: number; code: string; message: string; fields: Record<string, unknown> };

/** Told of every 401 on a call that needed a session: the console then shows the login page. */
let onSessionLost: (() => void) | null = null;
export function whenSessionLost(f: () => void): void {
  onSessionLost = f;
}

/** A request never waits longer than this: the page says the host did not answer. */
const REQUEST_TIMEOUT_MS = 20_000;

export async function call<T>(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<ApiResult<T>> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
  if (body !== undefined) {
    init.headers = { ...init.headers, 'content-type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  let res: Response;
  try {
    res = await fetch(`/api${path}`, init);
  } catch (e) {
    return { ok: false, status: 0, code: 'NETWORK', message: `${method} ${path}: no answer from the host (${(e as Error).message})`, fields: {} };
  }
  const text = await res.text().catch(() => '');
  let parsed: unknown = null;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    return { ok: false, status: res.status, code: 'BAD_ANSWER', message: `${method} ${path}: the answer is not JSON (${res.status})`, fields: {} };
  }
  if (res.ok) return { ok: true, status: res.status, body: parsed as T };
  const err = (parsed as { error?: { code?: string; message?: string; fields?: Record<string, unknown> } } | null)?.error;
  const result = { ok: false as const, status: res.status, code: err?.code ?? `HTTP_${res.status}`, message: err?.message ?? `${method} ${path} answered ${res.status}`, fields: err?.fields ?? {} };
  if (res.status === 401 && path !== '/v1/session' && onSessionLost !== null) onSessionLost();
  return result;
}

/** An error result as one line for the page: the code, then the API's message. */
export function describe(r: { code: string; message: string }): string {
  return `${r.code}: ${r.message}`;
}
