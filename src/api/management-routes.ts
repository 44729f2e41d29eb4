/**
 * The management API's own routes: first-run setup, sessions (login, logout, one's own password), users and
 * groups (administrators), and the audit log; with the resource routes of `src/daemon/api.ts` they make the
 * table the HTTPS server serves under `/api`. Paths here are below `/api`.
 */
import { LockstepError } from '../util/errors.js';
import type { ApiContext } from '../daemon/api.js';
import { RESOURCE_ROUTES } from '../daemon/api.js';
import type { AuditLog } from '../audit/audit-log.js';
import { AUDIT_KINDS, AUDIT_PAGE_MAX, AUDIT_RESULTS } from '../audit/audit-log.js';
import { addressKey, userKey, type LoginLimiter } from '../users/login-limiter.js';
import { ROLES, type Role } from '../users/roles.js';
import { FULL_NAME_LENGTH_MAX, NAME_PATTERN, PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN, type UserStore } from '../users/user-store.js';
import type { Reply, Route } from './routes.js';
import type { Schema } from './schema.js';
import type { EventStream } from './event-stream.js';
import { METRICS_CONTENT_TYPE, metricsView, renderMetrics } from './metrics.js';

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

const NAME: Schema = { type: 'string', pattern: NAME_PATTERN, description: 'lowercase letters, digits, . _ -, starting with a letter; at most 32' };
const PASSWORD: Schema = { type: 'string', minLength: PASSWORD_LENGTH_MIN, maxLength: PASSWORD_LENGTH_MAX, writeOnly: true, format: 'password' };
/** A password being checked rather than set: any length the API accepts (a shorter one just fails). */
const PASSWORD_GIVEN: Schema = { type: 'string', minLength: 1, maxLength: PASSWORD_LENGTH_MAX, writeOnly: true, format: 'password' };
const FULL_NAME: Schema = { type: 'string', maxLength: FULL_NAME_LENGTH_MAX };
const ROLE: Schema = { type: 'string', enum: ROLES };
const GROUP_LIST: Schema = { type: 'array', items: NAME, maxItems: 64, uniqueItems: true };
const DESCRIPTION: Schema = { type: 'string', maxLength: 256 };

const USER_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'fullName', 'groups', 'role', 'createdAt', 'passwordChangedAt'],
  properties: {
    name: { type: 'string' },
    fullName: { type: 'string' },
    groups: { type: 'array', items: { type: 'string' } },
    role: { type: ['string', 'null'], enum: [...ROLES, null], description: "the highest role of the user's groups" },
    createdAt: { type: 'string', format: 'date-time' },
    passwordChangedAt: { type: 'string', format: 'date-time' },
  },
};

const GROUP_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'role', 'description', 'builtin', 'members'],
  properties: {
    name: { type: 'string' },
    role: ROLE,
    description: { type: 'string' },
    builtin: { type: 'boolean', description: 'one of the three groups every user database has: never deleted, role fixed' },
    members: { type: 'array', items: { type: 'string' } },
  },
};

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

const AUDIT_ENTRY_SCHEMA: Schema = {
  type: 'object',
  required: ['id', 'kind', 'at', 'wallMs', 'host', 'user', 'client', 'operation', 'target', 'result', 'status', 'severity', 'code', 'message', 'cause'],
  properties: {
    id: { type: 'string', description: 'u<n>: a user action; c<n>: an entry of the core event log' },
    kind: { type: 'string', enum: AUDIT_KINDS },
    at: { type: 'string', format: 'date-time' },
    wallMs: { type: 'integer' },
    host: { type: 'string' },
    user: { type: ['string', 'null'] },
    client: { type: ['string', 'null'], description: "the client's address" },
    operation: { type: ['string', 'null'], description: 'the operationId of the API call' },
    method: { type: ['string', 'null'] },
    path: { type: ['string', 'null'] },
    target: { type: ['string', 'null'], description: 'the VM, user or group acted on' },
    result: { type: ['string', 'null'], enum: [...AUDIT_RESULTS, null] },
    status: { type: ['integer', 'null'] },
    severity: { type: ['string', 'null'], enum: ['info', 'warning', 'critical', null] },
    code: { type: ['string', 'null'], description: "the error code of a failed or denied action; an alert's code" },
    message: { type: ['string', 'null'] },
    cause: { type: ['string', 'null'], description: 'what caused a core event' },
  },
};

const USER_PARAMS = { name: { ...NAME, description: "the user's name" } } as const;
const GROUP_PARAMS = { name: { ...NAME, description: "the group's name" } } as const;

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
    operationId: 'getSetup',
    method: 'GET',
    path: '/v1/setup',
    tag: 'session',
    summary: 'whether the first administrator still has to be made',
    access: 'public',
    response: { status: 200, description: 'the answer', schema: { type: 'object', required: ['needed'], properties: { needed: { type: 'boolean' } } } },
    handler: async (rc) => ({ status: 200, body: { needed: rc.deps.users.userCount() === 0 } }),
  },
  {
    operationId: 'setup',
    method: 'POST',
    path: '/v1/setup',
    tag: 'session',
    summary: 'make the first administrator (only while no user exists)',
    description: 'there is no default account: the first call makes an administrator; every later call is refused with SETUP_DONE',
    access: 'public',
    body: { type: 'object', required: ['name', 'password'], additionalProperties: false, properties: { name: NAME, password: PASSWORD, fullName: FULL_NAME } },
    response: { status: 201, description: 'the administrator', schema: USER_SCHEMA },
    errors: ['SETUP_DONE'],
    handler: async (rc, { body }) => {
      const b = body as { name: string; password: string; fullName?: string };
      const user = await rc.deps.users.setup(b);
      rc.actingUser = user.name;
      return { status: 201, body: user };
    },
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
    operationId: 'listUsers',
    method: 'GET',
    path: '/v1/users',
    tag: 'users',
    summary: 'every user',
    access: 'administrator',
    response: { status: 200, description: 'the users, by name', schema: { type: 'array', items: USER_SCHEMA } },
    handler: async (rc) => ({ status: 200, body: rc.deps.users.listUsers() }),
  },
  {
    operationId: 'createUser',
    method: 'POST',
    path: '/v1/users',
    tag: 'users',
    summary: 'make a user',
    access: 'administrator',
    body: {
      type: 'object',
      required: ['name', 'password'],
      additionalProperties: false,
      properties: { name: NAME, password: PASSWORD, fullName: FULL_NAME, groups: { ...GROUP_LIST, description: 'the groups it joins (its role is their highest)' } },
    },
    response: { status: 201, description: 'the user', schema: USER_SCHEMA },
    errors: ['USER_EXISTS', 'UNKNOWN_GROUP'],
    handler: async (rc, { body }) => ({ status: 201, body: await rc.deps.users.createUser(body as { name: string; password: string }) }),
  },
  {
    operationId: 'getUser',
    method: 'GET',
    path: '/v1/users/{name}',
    tag: 'users',
    summary: 'one user',
    access: 'administrator',
    params: USER_PARAMS,
    response: { status: 200, description: 'the user', schema: USER_SCHEMA },
    errors: ['UNKNOWN_USER'],
    handler: async (rc, { params }) => ({ status: 200, body: rc.deps.users.user(params['name']!) }),
  },
  {
    operationId: 'updateUser',
    method: 'PATCH',
    path: '/v1/users/{name}',
    tag: 'users',
    summary: "change a user's full name, groups or password",
    description: "a new password ends the user's sessions; refused with LAST_ADMINISTRATOR if no administrator would be left",
    access: 'administrator',
    params: USER_PARAMS,
    body: { type: 'object', additionalProperties: false, properties: { fullName: FULL_NAME, groups: GROUP_LIST, password: PASSWORD } },
    response: { status: 200, description: 'the user', schema: USER_SCHEMA },
    errors: ['UNKNOWN_USER', 'UNKNOWN_GROUP', 'LAST_ADMINISTRATOR'],
    handler: async (rc, { params, body }) => ({ status: 200, body: await rc.deps.users.updateUser(params['name']!, body as { fullName?: string }) }),
  },
  {
    operationId: 'deleteUser',
    method: 'DELETE',
    path: '/v1/users/{name}',
    tag: 'users',
    summary: 'delete a user (and end its sessions)',
    access: 'administrator',
    params: USER_PARAMS,
    response: { status: 204, description: 'deleted' },
    errors: ['UNKNOWN_USER', 'LAST_ADMINISTRATOR'],
    handler: async (rc, { params }) => {
      rc.deps.users.deleteUser(params['name']!);
      return { status: 204, body: null };
    },
  },
  {
    operationId: 'listGroups',
    method: 'GET',
    path: '/v1/groups',
    tag: 'users',
    summary: 'every group, with its role and members',
    access: 'administrator',
    response: { status: 200, description: 'the groups, by name', schema: { type: 'array', items: GROUP_SCHEMA } },
    handler: async (rc) => ({ status: 200, body: rc.deps.users.listGroups() }),
  },
  {
    operationId: 'createGroup',
    method: 'POST',
    path: '/v1/groups',
    tag: 'users',
    summary: 'make a group with a role',
    access: 'administrator',
    body: { type: 'object', required: ['name', 'role'], additionalProperties: false, properties: { name: NAME, role: ROLE, description: DESCRIPTION } },
    response: { status: 201, description: 'the group', schema: GROUP_SCHEMA },
    errors: ['GROUP_EXISTS'],
    handler: async (rc, { body }) => ({ status: 201, body: rc.deps.users.createGroup(body as { name: string; role: Role }) }),
  },
  {
    operationId: 'getGroup',
    method: 'GET',
    path: '/v1/groups/{name}',
    tag: 'users',
    summary: 'one group',
    access: 'administrator',
    params: GROUP_PARAMS,
    response: { status: 200, description: 'the group', schema: GROUP_SCHEMA },
    errors: ['UNKNOWN_GROUP'],
    handler: async (rc, { params }) => ({ status: 200, body: rc.deps.users.group(params['name']!) }),
  },
  {
    operationId: 'updateGroup',
    method: 'PATCH',
    path: '/v1/groups/{name}',
    tag: 'users',
    summary: "change a group's role or description",
    description: "a built-in group's role is fixed (BUILTIN_GROUP)",
    access: 'administrator',
    params: GROUP_PARAMS,
    body: { type: 'object', additionalProperties: false, properties: { role: ROLE, description: DESCRIPTION } },
    response: { status: 200, description: 'the group', schema: GROUP_SCHEMA },
    errors: ['UNKNOWN_GROUP', 'BUILTIN_GROUP', 'LAST_ADMINISTRATOR'],
    handler: async (rc, { params, body }) => ({ status: 200, body: rc.deps.users.updateGroup(params['name']!, body as { role?: Role }) }),
  },
  {
    operationId: 'deleteGroup',
    method: 'DELETE',
    path: '/v1/groups/{name}',
    tag: 'users',
    summary: 'delete a group (its members leave it)',
    access: 'administrator',
    params: GROUP_PARAMS,
    response: { status: 204, description: 'deleted' },
    errors: ['UNKNOWN_GROUP', 'BUILTIN_GROUP', 'LAST_ADMINISTRATOR'],
    handler: async (rc, { params }) => {
      rc.deps.users.deleteGroup(params['name']!);
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
  {
    operationId: 'listAudit',
    method: 'GET',
    path: '/v1/audit',
    tag: 'audit',
    summary: "the audit log: users' actions and the platform's own events and alerts, newest first",
    description: 'read only: the API has no way to change or remove an entry. A page may hold fewer entries than asked (the text filter examines a bounded number of core entries per page): go on while next is not null',
    access: 'read-only',
    query: {
      type: 'object',
      additionalProperties: false,
      properties: {
        limit: { type: 'integer', minimum: 1, maximum: AUDIT_PAGE_MAX, default: 50 },
        before: { type: 'string', pattern: '^\\d{0,16}\\.\\d{0,16}$', description: 'the next cursor of the previous page' },
        kind: { type: 'string', enum: AUDIT_KINDS, description: "user: users' actions; event, alert: the core's" },
        user: { ...NAME, description: "only this user's actions" },
        text: { type: 'string', minLength: 1, maxLength: 200, description: 'case-insensitive text anywhere in the entry' },
      },
    },
    response: {
      status: 200,
      description: 'a page of entries',
      schema: { type: 'object', required: ['entries', 'next'], properties: { entries: { type: 'array', items: AUDIT_ENTRY_SCHEMA }, next: { type: ['string', 'null'] } } },
    },
    handler: async (rc, { query }): Promise<Reply> => {
      const q = query as { limit?: number; before?: string; kind?: (typeof AUDIT_KINDS)[number]; user?: string; text?: string };
      return { status: 200, body: rc.deps.audit.query({ limit: q.limit ?? 50, cursor: q.before, kind: q.kind, user: q.user, text: q.text }) };
    },
  },
];

/** Every route of the management API, paths below `/api`: its own, then the daemon's resources under `/v1`. */
export const MANAGEMENT_ROUTES: readonly Route<RequestContext>[] = [
  ...OWN_ROUTES,
  ...RESOURCE_ROUTES.map((r): Route<RequestContext> => ({ ...r, path: `/v1${r.path}`, handler: (rc, req) => r.handler(rc.deps.api, req) })),
];
