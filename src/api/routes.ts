/**
 * The route table's shape and the request handling both of lockstepd's servers share: the local API on the
 * unix socket (`src/daemon/api.ts`, root's access, no users) and the management API over HTTPS
 * (`src/api/management-server.ts`, users, roles, audit). A route says its method and path, what it needs
 * (`access`), the schemas of its path parameters, query and body, and what it answers; the servers match,
 * validate and call the handler, and `src/api/openapi.ts` documents the same objects.
 */
import type http from 'node:http';
import { createReadStream } from 'node:fs';
import { LockstepError, isLockstepError, type ErrorCode } from '../util/errors.js';
import { checkSchema, parseQuery, scalarOf, validate, type Schema } from './schema.js';
import type { Role } from '../users/roles.js';

/** Who may call a route on the management API: anyone, any logged-in user, or users with at least a role. */
export type Access = 'public' | 'session' | Role;

export type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

export interface Reply {
  status: number;
  /** Sent as JSON; with `contentType`, a string or a Buffer sent as it is. */
  body: unknown;
  headers?: Record<string, string | string[]>;
  contentType?: string;
  /** A file streamed as the body (a snapshot's image), of `bytes`, sent as `contentType`; `body` is then unused. */
  file?: { path: string; bytes: number };
}

export interface RouteRequest {
  params: Record<string, string>;
  query: Record<string, unknown>;
  body: unknown;
  /** An upload route's body, unread: the handler streams it (absent on every other route). */
  upload?: Upload;
}

/** A raw request body as an upload route receives it: its declared size, and the bytes as they arrive. */
export interface Upload {
  /** The `Content-Length`: what the client said it sends, checked against the route's limit before a byte is read. */
  bytes: number;
  stream: AsyncIterable<Buffer>;
}

export interface Route<C> {
  /** The OpenAPI operationId and the audit log's name of the operation. */
  operationId: string;
  method: Method;
  /** Below the API's prefix (`/v1` on the socket, `/api/v1` on the management network), `{name}` for a parameter. */
  path: string;
  /** The path is from the server's root, not below the prefix: `/metrics`, where Prometheus looks by default. */
  root?: true;
  /** The management API also takes its configured `metricsToken` as the bearer, for a scraper without a session. */
  metricsToken?: true;
  tag: string;
  summary: string;
  description?: string;
  access: Access;
  params?: Readonly<Record<string, Schema>>;
  /** An object schema of scalar properties. */
  query?: Schema;
  /** Absent: the route takes no body (one sent is ignored). */
  body?: Schema;
  /** The code of a body that fails its schema (default `INVALID_ARGUMENT`). */
  bodyError?: ErrorCode;
  /**
   * The route takes its body raw and streams it (an ISO image): not read as JSON, not held in memory, not
   * under the JSON limit but under its own `bytesMax`; sent as `contentType` with a `Content-Length`.
   */
  upload?: { contentType: string; bytesMax: number; description: string };
  /** `contentType`: what the answer is when not JSON (its schema then describes the text). */
  response: { status: number; description: string; schema?: Schema; contentType?: string };
  /** What the audit log names as the target when the path names none (a preference setter: its section). */
  auditTarget?: string;
  /** The error codes the handler itself raises, for the documentation. */
  errors?: readonly ErrorCode[];
  handler(ctx: C, req: RouteRequest): Promise<Reply>;
}

/** The HTTP status of each error code an API answers with; any other code is the server's failure (500). */
export const HTTP_STATUS_OF: Partial<Record<ErrorCode, number>> = {
  INVALID_SPEC: 400,
  INVALID_ARGUMENT: 400,
  NOT_AUTHENTICATED: 401,
  LOGIN_FAILED: 401,
  FORBIDDEN: 403,
  WRONG_PASSWORD: 403,
  UNKNOWN_VM: 404,
  UNKNOWN_VOLUME: 404,
  UNKNOWN_STORAGE_GROUP: 404,
  UNKNOWN_USER: 404,
  UNKNOWN_GROUP: 404,
  UNKNOWN_RECEIVER: 404,
  UNKNOWN_VCD: 404,
  VCD_NOT_ISO: 400,
  VCD_UPLOAD: 400,
  VCD_EXISTS: 409,
  VCD_IN_USE: 409,
  UNKNOWN_SNAPSHOT: 404,
  SNAPSHOT_FAILED: 500,
  SNAPSHOT_REFUSED: 409,
  IMAGE_INVALID: 400,
  SNAPSHOT_IN_USE: 409,
  STORAGE_GROUP_FULL: 409,
  UNKNOWN_ENDPOINT: 404,
  METHOD_NOT_ALLOWED: 405,
  COMMAND_REFUSED: 409,
  NIC_IN_USE: 409,
  SETUP_DONE: 409,
  USER_EXISTS: 409,
  GROUP_EXISTS: 409,
  BUILTIN_GROUP: 409,
  LAST_ADMINISTRATOR: 409,
  NOTIFICATIONS_OFF: 409,
  CONFIG_CHANGED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UPGRADE_REQUIRED: 426,
  RATE_LIMITED: 429,
  NOT_PAIRED: 503,
  NOTIFY_OUTBOX: 503,
  CONSOLE_LOG_UNREADABLE: 503,
  TOO_MANY_STREAMS: 503,
  CONSOLE_UNAVAILABLE: 503,
};

export const BODY_BYTES_MAX = 1024 * 1024;

interface Compiled<C> {
  route: Route<C>;
  pattern: RegExp;
  names: string[];
}

/** A route table made ready for matching; every schema is checked once here (an unknown keyword is a bug). */
export class RouteTable<C> {
  private readonly compiled: Compiled<C>[];

  constructor(readonly routes: readonly Route<C>[]) {
    this.compiled = routes.map((route) => {
      const names: string[] = [];
      const source = route.path
        .split('/')
        .map((part) => {
          const m = /^\{([a-zA-Z]+)\}$/.exec(part);
          if (!m) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
          names.push(m[1]!);
          return '([^/]+)';
        })
        .join('/');
      for (const name of names) if (!route.params?.[name]) throw new Error(`route ${route.operationId}: path parameter '${name}' has no schema`);
      for (const s of Object.values(route.params ?? {})) checkSchema(s);
      if (route.query) checkSchema(route.query);
      if (route.body) checkSchema(route.body);
      if (route.response.schema) checkSchema(route.response.schema);
      return { route, pattern: new RegExp(`^${source}$`), names };
    });
    const ids = routes.map((r) => r.operationId);
    if (new Set(ids).size !== ids.length) throw new Error('route table: an operationId is used twice');
  }

  /** The route for `method` on `path` (below the prefix) and its raw parameters; else the 404 or 405 error. */
  match(method: string, path: string): { route: Route<C>; raw: string[]; names: string[] } {
    let allowed: string[] = [];
    for (const c of this.compiled) {
      const m = c.pattern.exec(path);
      if (!m) continue;
      if (c.route.method === method) return { route: c.route, raw: m.slice(1), names: c.names };
      allowed.push(c.route.method);
    }
    allowed = [...new Set(allowed)];
    if (allowed.length > 0) throw new LockstepError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}: use ${allowed.join(', ')}`, { allow: allowed });
    throw new LockstepError('UNKNOWN_ENDPOINT', `no such endpoint: ${method} ${path}`, { method, path });
  }
}

/** Path parameters decoded and checked, the query parsed and checked, the body checked (when the route takes one). */
export function prepareRequest<C>(route: Route<C>, raw: string[], names: string[], query: URLSearchParams, body: unknown): RouteRequest {
  const params: Record<string, string> = {};
  names.forEach((name, i) => {
    let value: string;
    try {
      value = decodeURIComponent(raw[i]!);
    } catch {
      throw new LockstepError('INVALID_ARGUMENT', `path parameter '${name}' is not valid percent-encoding`, { field: name });
    }
    const schema = route.params![name]!;
    validate(schema, scalarOf(value, schema), 'INVALID_ARGUMENT', name);
    params[name] = value;
  });
  const parsedQuery = parseQuery(route.query, query, 'INVALID_ARGUMENT');
  if (route.body) {
    if (body === undefined) throw new LockstepError(route.bodyError ?? 'INVALID_ARGUMENT', 'the request needs a JSON body', { field: '' });
    validate(route.body, body, route.bodyError ?? 'INVALID_ARGUMENT');
  }
  return { params, query: parsedQuery, body: route.body ? body : undefined };
}

/**
 * An upload route's body as its handler gets it, checked before a byte of it is read: its declared length
 * (a stream of unknown length could not be checked against the limit or the free space) within the route's
 * limit. The body is left unread until the handler reads it, and a client that asked to wait
 * (`Expect: 100-continue`, as lockstep's own client does) is told to send it only then: a refusal before
 * that (a name taken, no room) costs it no byte. A refusal reads the rest for a moment at most before it is
 * answered (`sendRefusal`): a refused body of gigabytes is not read to its end.
 */
export function prepareUpload<C>(route: Route<C>, req: http.IncomingMessage, res: http.ServerResponse): Upload {
  const limit = route.upload!.bytesMax;
  const declared = req.headers['content-length'];
  if (declared === undefined || !/^\d{1,16}$/.test(declared)) {
    throw new LockstepError('INVALID_ARGUMENT', `${route.operationId} needs the body's size as Content-Length (a chunked body is refused)`, { field: 'content-length' });
  }
  const bytes = Number(declared);
  if (bytes > limit) throw new LockstepError('PAYLOAD_TOO_LARGE', `request body of ${bytes} bytes is over this endpoint's limit of ${limit} bytes`, { limit, bytes });
  const body = req as AsyncIterable<Buffer>;
  return {
    bytes,
    stream: {
      [Symbol.asyncIterator]() {
        allowBody(req, res);
        return body[Symbol.asyncIterator]();
      },
    },
  };
}

/**
 * Tells a client that sent `Expect: 100-continue` to send its body: called once, just before the body is
 * read, after the checks that can refuse the request without it. The servers handle `checkContinue`
 * themselves so that these checks come first.
 */
export function allowBody(req: http.IncomingMessage, res: http.ServerResponse): void {
  bodyAllowed.add(req);
  if ((req.headers.expect ?? '').toLowerCase() === '100-continue' && !res.headersSent) res.writeContinue();
}

/** The path parameters as the audit log names the target, before they are checked (a refused call has one too). */
export function rawParams(names: string[], raw: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  names.forEach((name, i) => {
    try {
      out[name] = decodeURIComponent(raw[i]!);
    } catch {
      out[name] = raw[i]!;
    }
  });
  return out;
}

/** A thrown value as an answer: an operational error by its code; anything else is a bug, logged, 500. */
export function errorReply(e: unknown, what: string, log: (line: string) => void): Reply {
  if (isLockstepError(e)) {
    const status = HTTP_STATUS_OF[e.code] ?? 500;
    if (status >= 500 && e.code !== 'NOT_PAIRED' && e.code !== 'TOO_MANY_STREAMS' && e.code !== 'CONSOLE_UNAVAILABLE') log(`API ${what} failed: ${e.code}: ${e.message}`);
    const headers: Record<string, string> = {};
    if (e.code === 'METHOD_NOT_ALLOWED') headers['allow'] = (e.fields['allow'] as string[]).join(', ');
    if (e.code === 'UPGRADE_REQUIRED') headers['upgrade'] = 'websocket';
    if (e.code === 'RATE_LIMITED') headers['retry-after'] = String(Math.max(1, Math.ceil(Number(e.fields['retryAfterMs']) / 1000)));
    return { status, body: { error: e.toJSON() }, headers };
  }
  log(`API ${what} failed: ${(e as Error).stack ?? String(e)}`);
  return { status: 500, body: { error: { code: 'DAEMON_ERROR', message: (e as Error).message, fields: {} } } };
}

/** The request's URL; a target that is no URL is the client's error. */
export function requestUrl(req: http.IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://lockstepd');
  } catch {
    throw new LockstepError('INVALID_ARGUMENT', 'the request target is not a valid URL', { field: '' });
  }
}

/** The request's JSON body (undefined when empty); at most `BODY_BYTES_MAX` bytes are read. */
export async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > BODY_BYTES_MAX) throw new LockstepError('PAYLOAD_TOO_LARGE', `request body over ${BODY_BYTES_MAX} bytes`, { limit: BODY_BYTES_MAX });
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new LockstepError('INVALID_ARGUMENT', 'request body is not valid JSON', { field: '' });
  }
}

/** How long the rest of a refused request's body is read and dropped before it is answered (`sendRefusal`). */
const UNREAD_BODY_DRAIN_MS = 1000;

/** Requests told to send their body (`allowBody`): a client that asked to wait sends none otherwise. */
const bodyAllowed = new WeakSet<http.IncomingMessage>();

/**
 * Answers a request refused with its body unread (a refused upload, a body over the limit). The rest of the
 * body is read and dropped first, for a moment at most: a body that ends within it is answered on a
 * connection left clean for the client's next request; one that does not (gigabytes still coming) is
 * answered with `Connection: close`. Answering and closing while the client still writes is what this
 * avoids: the close fails its next write (EPIPE), and Node's client — lockstep's CLI among them — then
 * reports that failure and drops the answer already on its way. A client that asked to wait and was never
 * told to send (`Expect: 100-continue`) sends nothing: it is answered at once, and the connection closes.
 */
export function sendRefusal(req: http.IncomingMessage, res: http.ServerResponse, reply: Reply, extraHeaders: Record<string, string> = {}): void {
  const waiting = (req.headers.expect ?? '').toLowerCase() === '100-continue' && !bodyAllowed.has(req);
  if (req.readableEnded || waiting || req.destroyed) {
    send(res, reply, req.readableEnded ? extraHeaders : { ...extraHeaders, connection: 'close' });
    return;
  }
  let answered = false;
  const answer = (ended: boolean): void => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    req.off('readable', drop);
    send(res, reply, ended ? extraHeaders : { ...extraHeaders, connection: 'close' });
  };
  const drop = (): void => {
    while (req.read() !== null);
  };
  const timer = setTimeout(() => answer(false), UNREAD_BODY_DRAIN_MS);
  req.on('readable', drop);
  req.once('end', () => answer(true));
  req.once('error', () => answer(false));
  req.once('close', () => answer(req.readableEnded));
  drop();
}

/** Writes the answer: JSON (no body for 204 or null), or the text of a reply with its own content type. */
export function send(res: http.ServerResponse, reply: Reply, extraHeaders: Record<string, string> = {}): void {
  if (reply.file) {
    const file = reply.file;
    res.writeHead(reply.status, { ...extraHeaders, ...(reply.headers ?? {}), 'content-type': reply.contentType ?? 'application/octet-stream', 'content-length': file.bytes });
    // Streamed, never held in memory; a read that fails half-way cuts the connection, so the client sees a
    // body shorter than its Content-Length and not a whole-looking one.
    if (file.bytes === 0) {
      res.end();
      return;
    }
    const stream = createReadStream(file.path, { start: 0, end: file.bytes - 1 });
    stream.on('error', () => res.destroy());
    stream.pipe(res);
    return;
  }
  const text = reply.contentType !== undefined ? (Buffer.isBuffer(reply.body) ? reply.body : String(reply.body)) : reply.body === null || reply.status === 204 ? '' : JSON.stringify(reply.body);
  res.writeHead(reply.status, { ...extraHeaders, ...(reply.headers ?? {}), 'content-type': reply.contentType ?? 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
