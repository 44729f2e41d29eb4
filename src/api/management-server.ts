/**
 * The management API: HTTPS on the management network, served by lockstepd next to its local socket API.
 * Each request, in order:
 *   1. matched against the route table (`MANAGEMENT_ROUTES`: the daemon's resources and the API's own);
 *   2. its caller found: a session token as `Authorization: Bearer` or the session cookie; a route that is
 *      not public needs one (401), a route that names a role needs a user with it (403);
 *   3. its body read (JSON only, at most 1 MiB) and its parameters, query and body checked against the
 *      route's schemas (400); an upload route's body (a VCD's ISO image) is not read here but streamed by
 *      its handler, within the route's own limit;
 *   4. handled; every call that changes something (any method but GET) is written to the audit log with
 *      who, from where, what, on what and how it ended — refused ones included.
 * Errors answer `{"error":{code,message,fields}}` with the code's status; a bug answers 500 and is logged.
 * Two routes differ: `/metrics` is at the root, where Prometheus looks, and takes the configured metrics
 * token too; the live event stream (`/api/v1/events/stream`) is a WebSocket upgrade, authenticated the same
 * way before the handshake (src/api/event-stream.ts). Besides the API, the server answers `/` and
 * `/console/…` with the Availability Console's files (src/console/console-assets.ts), under their own
 * Content-Security-Policy; they are public, like a login page: the data they show comes through the API.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import https from 'node:https';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import { LockstepError, isLockstepError } from '../util/errors.js';
import type { ApiContext } from '../daemon/api.js';
import type { AuditLog } from '../audit/audit-log.js';
import { auditedAction } from './audit-action.js';
import { LoginLimiter, type LimiterOptions } from '../users/login-limiter.js';
import { roleAllows } from '../users/roles.js';
import type { UserStore } from '../users/user-store.js';
import { MANAGEMENT_ROUTES, SESSION_COOKIE, type ManagementDeps, type RequestContext } from './management-routes.js';
import { openApiDocument } from './openapi.js';
import { DEFAULT_STREAM_LIMITS, EventStream, type StreamLimits } from './event-stream.js';
import { consoleReply, isConsolePath, loadConsoleAssets, type ConsoleAssets } from '../console/console-assets.js';
import { RouteTable, allowBody, errorReply, prepareRequest, prepareUpload, rawParams, readJsonBody, requestUrl, send, sendRefusal, type Reply, type Route, type Upload } from './routes.js';

const PREFIX = '/api';
/** Limits on what one client can hold: connections, header time, request time. */
const CONNECTIONS_MAX = 256;
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/**
 * The slowest an upload may arrive: its deadline is the request timeout plus its size at this rate (a
 * 16 GiB image gets some 4.5 hours), so a client that trickles bytes cannot hold a connection for ever.
 */
const UPLOAD_BYTES_PER_SEC_MIN = 1024 * 1024;
const KEEP_ALIVE_TIMEOUT_MS = 5000;

const SECURITY_HEADERS: Record<string, string> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

export interface ManagementServerOptions {
  address: string;
  /** 0: any free port (tests; see `port()`). */
  port: number;
  tls: { cert: string | Buffer; key: string | Buffer };
  api: ApiContext;
  users: UserStore;
  audit: AuditLog;
  /** The session's absolute lifetime, for the cookie (the store enforces it). */
  sessionMaxMs: number;
  now?: () => number;
  limiter?: LimiterOptions;
  /** `managementApi.metricsToken`: a bearer `/metrics` accepts besides a session. */
  metricsToken?: string | null;
  /** The event stream's limits (tests make them small). */
  streamLimits?: Partial<StreamLimits>;
  /** The console's files; default: loaded from this checkout (src/console/web and its compiled scripts). */
  console?: ConsoleAssets;
  log: (line: string) => void;
}

const table = new RouteTable(MANAGEMENT_ROUTES.filter((r) => !r.root));
const rootTable = new RouteTable(MANAGEMENT_ROUTES.filter((r) => r.root));
const STREAM_PATH = '/v1/events/stream';
let openApiCache: unknown = null;

/** The management API's OpenAPI document (made once from the route table). */
export function managementOpenApi(): unknown {
  openApiCache ??= openApiDocument(MANAGEMENT_ROUTES as readonly Route<unknown>[], { title: 'Lockstep management API', version: '1' });
  return openApiCache;
}

export class ManagementServer {
  /** Every connection, HTTP or not (a refused CONNECT's socket is no longer the HTTP server's): closed with the server. */
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: https.Server,
    private readonly stream: EventStream,
    private readonly unfollowAudit: () => void,
  ) {
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  static async start(opts: ManagementServerOptions): Promise<ManagementServer> {
    const now = opts.now ?? Date.now;
    const consoleAssets = opts.console ?? (await loadConsoleAssets());
    // The API works without the console: its absence is said once here and at `/` (503) to whoever asks.
    if (!consoleAssets.ok) opts.log(`management API: ${consoleAssets.error.message}`);
    const stream = new EventStream(opts.api, opts.users, now, { ...DEFAULT_STREAM_LIMITS, ...opts.streamLimits }, opts.log);
    const deps: ManagementDeps = {
      api: opts.api,
      users: opts.users,
      audit: opts.audit,
      limiter: new LoginLimiter(now, opts.limiter),
      sessionMaxMs: opts.sessionMaxMs,
      openApi: managementOpenApi,
      stream,
      metricsToken: opts.metricsToken ?? null,
    };
    const server = https.createServer({
      cert: opts.tls.cert,
      key: opts.tls.key,
      minVersion: 'TLSv1.2',
      headersTimeout: HEADERS_TIMEOUT_MS,
      // Node's own request timeout covers the whole body and cannot be lifted for one route: an ISO upload
      // takes longer than 30 s. Each request's deadline is armed by `handle` instead (`armDeadline`).
      requestTimeout: 0,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    });
    server.maxConnections = CONNECTIONS_MAX;
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      void handle(deps, consoleAssets, req, res, now, opts.log)
        .then(({ reply, close }) => (close ? sendRefusal(req, res, reply, SECURITY_HEADERS) : send(res, reply, SECURITY_HEADERS)))
        .catch((e: unknown) => {
          opts.log(`management API: answering ${req.method} ${req.url} failed: ${(e as Error).stack ?? String(e)}`);
          res.destroy();
        });
    };
    server.on('request', onRequest);
    // A client waiting for `100 Continue` is answered by the request's own checks first (`allowBody`).
    server.on('checkContinue', onRequest);
    // CONNECT (a proxy's method) is no API's, nor any upgrade but the event stream's: a 4xx answer, then the
    // connection closes.
    server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
      rawReply(socket, errorReply(new LockstepError('METHOD_NOT_ALLOWED', 'CONNECT is not an API method', { allow: ['GET', 'POST', 'PATCH', 'PUT', 'DELETE'] }), 'CONNECT', opts.log));
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy());
      try {
        upgrade(deps, stream, req, socket, head);
      } catch (e) {
        rawReply(socket, errorReply(e, `upgrade ${req.method} ${req.url}`, opts.log));
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.address, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => opts.log(`management API: ${(e as Error).message}`));
    // Every audited action, through this server or the local socket, goes to the live streams; and every way
    // a session ends early (logout, password change, user deleted, role taken) is an audited change.
    const unfollowAudit = opts.audit.onAppended((entry) => {
      stream.audited(entry);
      stream.recheckSessions();
    });
    return new ManagementServer(server, stream, unfollowAudit);
  }

  port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.unfollowAudit();
    this.stream.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      for (const socket of this.sockets) socket.destroy();
    });
  }
}

async function handle(deps: ManagementDeps, consoleAssets: ConsoleAssets, req: http.IncomingMessage, res: http.ServerResponse, now: () => number, log: (line: string) => void): Promise<{ reply: Reply; close: boolean }> {
  const rc: RequestContext = { deps, client: req.socket.remoteAddress ?? 'unknown', session: null, actingUser: null };
  let route: Route<RequestContext> | null = null;
  let params: Record<string, string> = {};
  let rawBody: unknown;
  let upload: Upload | undefined;
  let pathname = '';
  let reply: Reply;
  const deadline = armDeadline(req);
  try {
    const url = requestUrl(req);
    pathname = url.pathname;
    // The console's files are no route of the API: nothing to authenticate, validate or audit.
    if (isConsolePath(pathname)) return { reply: consoleReply(consoleAssets, req.method ?? 'GET', pathname), close: false };
    const match = pathname.startsWith(`${PREFIX}/`) ? table.match(req.method ?? 'GET', pathname.slice(PREFIX.length)) : rootTable.match(req.method ?? 'GET', pathname);
    route = match.route;
    params = rawParams(match.names, match.raw);
    authenticate(rc, req, route);
    if (route.upload) {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== route.upload.contentType) throw new LockstepError('UNSUPPORTED_MEDIA_TYPE', `the body must be sent as Content-Type: ${route.upload.contentType}`, { contentType: type });
      upload = prepareUpload(route, req, res);
      deadline.extendForUpload(upload.bytes);
    } else if (route.body) {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      const hasBody = (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'] !== undefined;
      if (hasBody && type !== 'application/json') throw new LockstepError('UNSUPPORTED_MEDIA_TYPE', 'the body must be JSON (Content-Type: application/json)', { contentType: type });
      allowBody(req, res);
      rawBody = await readJsonBody(req);
    }
    const prepared = prepareRequest(route, match.raw, match.names, url.searchParams, rawBody);
    params = prepared.params;
    reply = await route.handler(rc, upload ? { ...prepared, upload } : prepared);
  } catch (e) {
    reply = errorReply(e, `${req.method} ${req.url}`, log);
  }
  if (route !== null && route.method !== 'GET') record(deps, rc, req, route, params, rawBody, pathname, reply, now, log);
  // A refused upload's body may be gigabytes: closing beats reading it all to keep the connection.
  return { reply, close: isPayloadTooLarge(reply) || (route?.upload !== undefined && reply.status >= 400) };
}

/**
 * The request's deadline, as Node's `requestTimeout` keeps it: for the request to arrive whole (headers and
 * body, whether the handler reads the body or it is discarded after the answer), not for the handler's
 * work. Armed when the request arrives; an upload route's caller, once authenticated, gets time for its
 * size (`extendForUpload`). A request still arriving past it loses its connection, which is what Node does
 * after its 408.
 */
function armDeadline(req: http.IncomingMessage): { extendForUpload(bytes: number): void } {
  const arm = (ms: number): NodeJS.Timeout =>
    setTimeout(() => {
      if (!req.complete) req.socket.destroy();
    }, ms).unref();
  let timer = arm(REQUEST_TIMEOUT_MS);
  req.once('close', () => clearTimeout(timer));
  return {
    extendForUpload(bytes) {
      clearTimeout(timer);
      timer = arm(REQUEST_TIMEOUT_MS + (bytes / UPLOAD_BYTES_PER_SEC_MIN) * 1000);
    },
  };
}

/**
 * The event stream's upgrade: only at its path; the caller authenticated and its role checked as for any
 * route, its query checked, then the handshake (src/api/event-stream.ts). Throws the error to answer.
 */
function upgrade(deps: ManagementDeps, stream: EventStream, req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  const url = requestUrl(req);
  if (url.pathname !== `${PREFIX}${STREAM_PATH}`) {
    throw new LockstepError('UNKNOWN_ENDPOINT', `no protocol upgrade at ${url.pathname}: the management API has one, at ${PREFIX}${STREAM_PATH}`, { path: url.pathname });
  }
  const { route, raw, names } = table.match(req.method ?? 'GET', STREAM_PATH);
  const rc: RequestContext = { deps, client: req.socket.remoteAddress ?? 'unknown', session: null, actingUser: null };
  authenticate(rc, req, route);
  const { query } = prepareRequest(route, raw, names, url.searchParams, undefined);
  stream.accept(req, socket, head, rc.session!, (query as { after?: number }).after);
}

/** An error answer written on a socket the HTTP server no longer handles (an upgrade, a CONNECT); then it closes. */
function rawReply(socket: Duplex, reply: Reply): void {
  const text = JSON.stringify(reply.body);
  const headers = { ...SECURITY_HEADERS, ...(reply.headers ?? {}), 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), connection: 'close' };
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`);
  socket.on('error', () => socket.destroy());
  socket.end(`HTTP/1.1 ${reply.status} ${http.STATUS_CODES[reply.status]}\r\n${head.join('\r\n')}\r\n\r\n${text}`, () => socket.destroy());
}

function isPayloadTooLarge(reply: Reply): boolean {
  return reply.status === 413;
}

/** Finds the caller's session; refuses a route the caller may not call (401 without a session, 403 without the role). */
function authenticate(rc: RequestContext, req: http.IncomingMessage, route: Route<RequestContext>): void {
  const token = tokenOf(req);
  // The scraper's static token stands for no user: the request has no session, and the route needs none.
  if (route.metricsToken && rc.deps.metricsToken !== null && token !== null && sameSecret(token, rc.deps.metricsToken)) return;
  if (token !== null) {
    const found = rc.deps.users.session(token);
    if (found.ok) rc.session = { user: found.session.user, role: found.session.role, tokenHash: found.tokenHash };
    else if (route.access !== 'public') {
      throw new LockstepError('NOT_AUTHENTICATED', found.why === 'expired' ? 'the session has expired: log in again' : 'not a valid session: log in again', { reason: found.why });
    }
  }
  if (route.access === 'public') return;
  if (rc.session === null) throw new LockstepError('NOT_AUTHENTICATED', 'log in first (POST /api/v1/session)', { reason: 'none' });
  if (route.access === 'session') return;
  if (!roleAllows(rc.session.role, route.access)) {
    throw new LockstepError('FORBIDDEN', `${route.operationId} needs the role ${route.access}; ${rc.session.user} has ${rc.session.role ?? 'none'}`, {
      needs: route.access,
      has: rc.session.role,
    });
  }
}

/** Constant-time comparison of two secrets (through their hashes, so that lengths do not matter either). */
function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** The session token: `Authorization: Bearer …` first, else the session cookie; null when neither. */
function tokenOf(req: http.IncomingMessage): string | null {
  const auth = req.headers.authorization;
  if (auth !== undefined) {
    const m = /^Bearer\s+([A-Za-z0-9_-]{1,128})\s*$/i.exec(auth);
    return m ? m[1]! : 'invalid';
  }
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) {
      const value = part.slice(eq + 1).trim();
      return value === '' ? null : value;
    }
  }
  return null;
}

function record(
  deps: ManagementDeps,
  rc: RequestContext,
  req: http.IncomingMessage,
  route: Route<RequestContext>,
  params: Record<string, string>,
  body: unknown,
  pathname: string,
  reply: Reply,
  now: () => number,
  log: (line: string) => void,
): void {
  try {
    // The entry reaches the live event stream through the log's own listener (the socket's actions too).
    deps.audit.append(auditedAction(route, params, body, reply, { wallMs: now(), user: rc.actingUser ?? rc.session?.user ?? null, client: rc.client, method: req.method ?? '', path: pathname }));
  } catch (e) {
    // The action has happened; its answer still goes out. The failure is the daemon's to report.
    log(`management API: ${isLockstepError(e) ? `${e.code}: ` : ''}${(e as Error).message}`);
    deps.stream.recheckSessions();
  }
}
