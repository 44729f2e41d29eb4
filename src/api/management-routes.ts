/**
 * The management API's own routes: its OpenAPI document, sessions (login, logout, one's own password), the
 * live event stream and metrics; with the accounts routes (`account-routes.ts`: setup, users, groups, audit,
 * shared with the local socket) and the resource routes of `src/daemon/api.ts` they make the table the HTTPS
 * server serves under `/api`. Paths here are below `/api`.
 */
import { LockstepError } from '../util/errors.js';
import type { ApiContext } from '../daemon/api.js';
import { RESOURCE_ROUTES } from '../daemon/api.js';
import type { AuditLog } from '../audit/audit-log.js';
import { addressKey, userKey, type LoginLimiter } from '../users/login-limiter.js';
import { ROLES, type Role } from '../users/roles.js';
import { PASSWORD_LENGTH_MAX, type UserStore } from '../users/user-store.js';
import type { Route } from './routes.js';
import type { Schema } from './schema.js';
import type { EventStream } from './event-stream.js';
import { METRICS_CONTENT_TYPE, metricsView, renderMetrics } from './metrics.js';
import { ACCOUNT_ROUTES, PASSWORD, USER_SCHEMA } from './account-routes.js';

/** The cookie that carries the session token in a browser (the same token works as `Authorization: Bearer`). */
export const SESSION_COOKIE = 'lockstep_session';

/** What the management server's handlers work with: the daemon, the stores, and this request's caller. */
export interface ManagementDeps {
  api: ApiContext;
  users: UserStore;
  audit: AuditLog;
  limiter: LoginLimiter;
  /** The session's absolute lifetime: the cookie's Max-Age. */
  sessionMaxMs: number;
  openApi(): unknown;
  stream: EventStream;
  /** `managementApi.metricsToken`: a bearer `/metrics` accepts besides a session; null when not configured. */
  metricsToken: string | null;
}

export interface RequestContext {
  deps: ManagementDeps;
  client: string;
  /** The caller's session, when the request carried a valid one. */
  session: { user: string; role: Role | null; tokenHash: string } | null;
  /** Who the audit log names for a request that had no session: the user a login or setup was for. */
  actingUser: string | null;
}

/** A password being checked rather than set: any length the API accepts (a shorter one just fails). */
const PASSWORD_GIVEN: Schema = { type: 'string', minLength: 1, maxLength: PASSWORD_LENGTH_MAX, writeOnly: true, format: 'password' };
const SESSION_SCHEMA: Schema = {
  type: 'object',
  required: ['user', 'role', 'client', 'createdAt', 'lastSeenAt', 'expiresAt'],
  properties: {
    user: { type: 'string' },
    role: { type: ['string', 'null'], enum: [...ROLES, null] },
    client: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    lastSeenAt: { type: 'string', format: 'date-time' },
    expiresAt: { type: 'string', format: 'date-time', description: 'when the session ends if idle from now (capped by its absolute end)' },
  },
};

function cookie(token: string, maxAgeS: number): string {
  return `${SESSION_COOKIE}=${token}; Path=/api; Max-Age=${maxAgeS}; HttpOnly; Secure; SameSite=Strict`;
}

function sessionOf(rc: RequestContext): { user: string; role: Role | null; tokenHash: string } {
  if (rc.session === null) throw new LockstepError('NOT_AUTHENTICATED', 'log in first', {});
  return rc.session;
}

const OWN_ROUTES: readonly Route<RequestContext>[] = [
  {
    operationId: 'getOpenApi',
    method: 'GET',
    path: '/openapi.json',
    tag: 'meta',
    summary: 'this document: every endpoint, its role, parameters, body schema and answers',
    access: 'public',
    response: { status: 200, description: 'an OpenAPI 3.1 document', schema: { type: 'object' } },
    handler: async (rc) => ({ status: 200, body: rc.deps.openApi() }),
  },
  {
    operationId: 'login',
    method: 'POST',
    path: '/v1/session',
    tag: 'session',
    summary: 'log in: a session token, also set as an HttpOnly cookie',
    description: 'use the token as `Authorization: Bearer TOKEN` or let the browser send the cookie; 5 failures per user or per address close them for a window that doubles with each further failure (429, Retry-After)',
    access: 'public',
    body: { type: 'object', required: ['name', 'password'], additionalProperties: false, properties: { name: { type: 'string', minLength: 1, maxLength: 64 }, password: PASSWORD_GIVEN } },
    response: {
      status: 201,
      description: 'logged in',
      schema: { type: 'object', required: ['token', 'user', 'session'], properties: { token: { type: 'string' }, user: USER_SCHEMA, session: SESSION_SCHEMA } },
    },
    errors: ['LOGIN_FAILED', 'RATE_LIMITED'],
    handler: async (rc, { body }) => {
      const { name, password } = body as { name: string; password: string };
      const { users, limiter } = rc.deps;
      const keys = [userKey(name), addressKey(rc.client)];
      const verdict = limiter.begin(keys);
      if (!verdict.ok) throw new LockstepError('RATE_LIMITED', `too many failed logins: try again in ${Math.ceil(verdict.retryAfterMs / 1000)} s`, { retryAfterMs: verdict.retryAfterMs });
      const user = await users.authenticate(name, password);
      if (user === null) throw new LockstepError('LOGIN_FAILED', 'wrong user name or password', {});
      limiter.succeeded(verdict.prior, keys[0]!, keys[1]!);
      const { token, session } = users.createSession(user.name, rc.client);
      rc.actingUser = user.name;
      return { status: 201, body: { token, user, session }, headers: { 'set-cookie': cookie(token, Math.floor(rc.deps.sessionMaxMs / 1000)) } };
    },
  },
  {
    operationId: 'getSession',
    method: 'GET',
    path: '/v1/session',
    tag: 'session',
    summary: 'the caller: user, role, when the session ends',
    access: 'session',
    response: { status: 200, description: 'the session', schema: { type: 'object', required: ['user', 'session'], properties: { user: USER_SCHEMA, session: SESSION_SCHEMA } } },
    handler: async (rc) => {
      const s = sessionOf(rc);
      const { users } = rc.deps;
      const lookup = users.sessionByHash(s.tokenHash);
      if (lookup === null) throw new LockstepError('NOT_AUTHENTICATED', 'the session has ended', {});
      return { status: 200, body: { user: users.user(s.user), session: lookup } };
    },
  },
  {
    operationId: 'logout',
    method: 'DELETE',
    path: '/v1/session',
    tag: 'session',
    summary: 'log out: the session ends and its cookie is cleared',
    access: 'session',
    response: { status: 204, description: 'logged out' },
    handler: async (rc) => {
      rc.deps.users.endSession(sessionOf(rc).tokenHash);
      return { status: 204, body: null, headers: { 'set-cookie': cookie('', 0) } };
    },
  },
  {
    operationId: 'changeOwnPassword',
    method: 'POST',
    path: '/v1/session/password',
    tag: 'session',
    summary: "change one's own password",
    description: "the user's other sessions end; rate limited like a login",
    access: 'session',
    body: { type: 'object', required: ['currentPassword', 'newPassword'], additionalProperties: false, properties: { currentPassword: PASSWORD_GIVEN, newPassword: PASSWORD } },
    response: { status: 204, description: 'changed' },
    errors: ['WRONG_PASSWORD', 'RATE_LIMITED'],
    handler: async (rc, { body }) => {
      const s = sessionOf(rc);
      const { currentPassword, newPassword } = body as { currentPassword: string; newPassword: string };
      const keys = [userKey(s.user), addressKey(rc.client)];
      const verdict = rc.deps.limiter.begin(keys);
      if (!verdict.ok) throw new LockstepError('RATE_LIMITED', `too many wrong passwords: try again in ${Math.ceil(verdict.retryAfterMs / 1000)} s`, { retryAfterMs: verdict.retryAfterMs });
      if (!(await rc.deps.users.changeOwnPassword(s.user, currentPassword, newPassword, s.tokenHash))) {
        throw new LockstepError('WRONG_PASSWORD', 'the current password is wrong', {});
      }
      rc.deps.limiter.succeeded(verdict.prior, keys[0]!, keys[1]!);
      return { status: 204, body: null };
    },
  },
  {
    // Served by the server's upgrade handler; a plain GET reaches this handler only to be told to upgrade.
    operationId: 'streamEvents',
    method: 'GET',
    path: '/v1/events/stream',
    tag: 'events',
    summary: 'live events: a WebSocket of status changes, event log entries and audit entries',
    description:
      'Connect with a WebSocket (RFC 6455) and the session as for any call (cookie or Authorization: Bearer). The server sends JSON text messages: ' +
      '{"type":"status","status":…} (as GET /v1/status; on connect and whenever it changes, checked every 500 ms), ' +
      '{"type":"log","entry":…} (each new event log entry, as GET /v1/events), {"type":"audit","entry":…} (each new user action, as GET /v1/audit), ' +
      'and on resume {"type":"gap","after","before"} when more than 1000 entries were missed. after=ID replays the entries newer than that log id first. ' +
      'Client frames must be masked text, ping, pong or close, unfragmented, at most 64 KiB; others close the connection (1002, 1003, 1007, 1009). ' +
      'The server pings every 15 s and drops a client silent for as long; a client that lets more than 1 MiB queue up is closed with 1008, ' +
      'as is a stream whose session ends, expires or loses its role.',
    access: 'read-only',
    query: {
      type: 'object',
      additionalProperties: false,
      properties: { after: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'replay the event log entries newer than this id (the id of the last entry received)' } },
    },
    response: { status: 101, description: 'switching to the WebSocket protocol' },
    errors: ['UPGRADE_REQUIRED', 'TOO_MANY_STREAMS'],
    handler: async () => {
      throw new LockstepError('UPGRADE_REQUIRED', 'the event stream is a WebSocket: connect with Upgrade: websocket', {});
    },
  },
  {
    operationId: 'getMetrics',
    method: 'GET',
    path: '/metrics',
    root: true,
    metricsToken: true,
    tag: 'meta',
    summary: 'Prometheus metrics of this host and its VMs (text exposition format 0.0.4)',
    description:
      'A read-only session, or the configured managementApi.metricsToken as Authorization: Bearer (for a scraper). States are gauges with one series per state (1 for the current one); counters count since lockstepd started.',
    access: 'read-only',
    response: { status: 200, description: 'the metrics', contentType: METRICS_CONTENT_TYPE, schema: { type: 'string' } },
    handler: async (rc) => ({ status: 200, body: renderMetrics(metricsView(rc.deps.api, rc.deps.stream.clientCount())), contentType: METRICS_CONTENT_TYPE }),
  },
];

/** Every route of the management API, paths below `/api`: its own, the accounts routes, then the daemon's resources under `/v1`. */
export const MANAGEMENT_ROUTES: readonly Route<RequestContext>[] = [
  ...OWN_ROUTES,
  ...ACCOUNT_ROUTES,
  ...RESOURCE_ROUTES.map((r): Route<RequestContext> => ({ ...r, path: `/v1${r.path}`, handler: (rc, req) => r.handler(rc.deps.api, req) })),
];
