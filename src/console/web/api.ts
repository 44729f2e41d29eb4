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

/** `timeoutMs`: longer for a call the host answers only once its work is done (taking a snapshot). */
export async function call<T>(method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<ApiResult<T>> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) };
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

/** An upload's progress: bytes sent of the whole. */
export type UploadProgress = (sentBytes: number, totalBytes: number) => void;

/**
 * A file as the raw body of an upload route (`PUT /v1/vcds/NAME`, `POST /v1/images`), streamed by the browser from disk, with
 * its progress (XHR: fetch reports none). No overall timeout: an image takes as long as it takes. A host
 * that refuses an upload before its end closes the connection, which the browser may report as no answer
 * (`NETWORK`): the caller can read the audit log for why.
 */
export function upload<T>(path: string, file: Blob, onProgress: UploadProgress, method: 'PUT' | 'POST' = 'PUT'): Promise<ApiResult<T>> {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, `/api${path}`);
    xhr.withCredentials = true;
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.setRequestHeader('accept', 'application/json');
    xhr.upload.addEventListener('progress', (ev) => onProgress(ev.loaded, ev.total));
    xhr.addEventListener('error', () => resolve({ ok: false, status: 0, code: 'NETWORK', message: `${method} ${path}: the host closed the upload without an answer`, fields: {} }));
    xhr.addEventListener('load', () => {
      let parsed: unknown = null;
      try {
        parsed = xhr.responseText === '' ? null : JSON.parse(xhr.responseText);
      } catch {
        resolve({ ok: false, status: xhr.status, code: 'BAD_ANSWER', message: `${method} ${path}: the answer is not JSON (${xhr.status})`, fields: {} });
        return;
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve({ ok: true, status: xhr.status, body: parsed as T });
      const err = (parsed as { error?: { code?: string; message?: string; fields?: Record<string, unknown> } } | null)?.error;
      if (xhr.status === 401 && onSessionLost !== null) onSessionLost();
      resolve({ ok: false, status: xhr.status, code: err?.code ?? `HTTP_${xhr.status}`, message: err?.message ?? `${method} ${path} answered ${xhr.status}`, fields: err?.fields ?? {} });
    });
    xhr.send(file);
  });
}

/** A file the host made for this request (a support bundle), saved by the browser under `fileName`. */
export interface Downloaded {
  fileName: string;
  bytes: number;
}

/**
 * A route whose answer is a file rather than JSON (`POST /v1/support/bundle`): fetched with the session's
 * cookie, then handed to the browser's own download under the name the host gave (Content-Disposition).
 * A POST cannot be a plain link, hence the object URL. Errors come as JSON, as every call's.
 */
export async function download(method: 'GET' | 'POST', path: string, timeoutMs: number): Promise<ApiResult<Downloaded>> {
  let res: Response;
  try {
    res = await fetch(`/api${path}`, { method, credentials: 'same-origin', headers: { accept: 'application/json, application/gzip, application/octet-stream' }, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    return { ok: false, status: 0, code: 'NETWORK', message: `${method} ${path}: no answer from the host (${(e as Error).message})`, fields: {} };
  }
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    let err: { code?: string; message?: string; fields?: Record<string, unknown> } | undefined;
    try {
      err = (JSON.parse(text) as { error?: typeof err }).error;
    } catch {
      err = undefined;
    }
    if (res.status === 401 && onSessionLost !== null) onSessionLost();
    return { ok: false, status: res.status, code: err?.code ?? `HTTP_${res.status}`, message: err?.message ?? `${method} ${path} answered ${res.status}`, fields: err?.fields ?? {} };
  }
  const blob = await res.blob();
  const fileName = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') ?? '')?.[1] ?? 'download';
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  // The browser has taken the file by the time the click returns; the URL can go.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { ok: true, status: res.status, body: { fileName, bytes: blob.size } };
}

/**
 * Why the host refused an upload it closed without an answer the browser got (a refusal before the rest of
 * the body, which the host does not read): the caller's newest audit entry of `operation` on `target` says;
 * any other result is returned as it is.
 */
export async function explainClosedUpload<T>(r: ApiResult<T>, user: string, operation: string, target: string | null): Promise<ApiResult<T>> {
  if (r.ok || r.code !== 'NETWORK') return r;
  const audit = await call<{ entries: { operation: string; target: string | null; code: string | null; message: string | null }[] }>('GET', `/v1/audit?kind=user&user=${encodeURIComponent(user)}&limit=20`);
  const entry = audit.ok ? audit.body.entries.find((e) => e.operation === operation && e.target === target) : undefined;
  return entry?.code ? { ok: false, status: 0, code: entry.code, message: entry.message ?? '', fields: {} } : r;
}
