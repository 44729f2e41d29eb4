/**
 * The accounts routes: first-run setup, users and groups, and the audit log. Both of lockstepd's servers
 * serve these very objects (schemas, handlers): the management API under `/api/v1`, to users with the role
 * each route names, and the local socket under `/v1`, where root on the host is its administrator (the
 * socket has no users: docs/daemon.md). Paths here are below the `/api` or local prefix.
 */
import { LockstepError } from '../util/errors.js';
import type { AuditLog } from '../audit/audit-log.js';
import { AUDIT_KINDS, AUDIT_PAGE_MAX, AUDIT_RESULTS } from '../audit/audit-log.js';
import { ROLES, type Role } from '../users/roles.js';
import { FULL_NAME_LENGTH_MAX, NAME_PATTERN, PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN, type UserStore } from '../users/user-store.js';
import type { Reply, Route } from './routes.js';
import type { Schema } from './schema.js';

/** What the accounts routes work with: the host's user database and audit log, and who a setup was for. */
export interface AccountsContext {
  deps: { users: UserStore; audit: AuditLog };
  /** Set by setup to the user it made: who the management API's audit log names for a call without a session. */
  actingUser: string | null;
}

/** Who acted, as the audit log names it: a user, or root on a host through its local socket (`root@host1`). */
export const AUDIT_USER_PATTERN = '^([a-z][a-z0-9._-]{0,31}|root@[a-z][a-z0-9-]{0,30})$';

export const NAME: Schema = { type: 'string', pattern: NAME_PATTERN, description: 'lowercase letters, digits, . _ -, starting with a letter; at most 32' };
export const PASSWORD: Schema = { type: 'string', minLength: PASSWORD_LENGTH_MIN, maxLength: PASSWORD_LENGTH_MAX, writeOnly: true, format: 'password' };
const FULL_NAME: Schema = { type: 'string', maxLength: FULL_NAME_LENGTH_MAX };
const ROLE: Schema = { type: 'string', enum: ROLES };
const GROUP_LIST: Schema = { type: 'array', items: NAME, maxItems: 64, uniqueItems: true };
const DESCRIPTION: Schema = { type: 'string', maxLength: 256 };

export const USER_SCHEMA: Schema = {
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

export const ACCOUNT_ROUTES: readonly Route<AccountsContext>[] = [
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
        user: { type: 'string', pattern: AUDIT_USER_PATTERN, description: "only this user's actions: a user's name, or root@<host> for the local socket's" },
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
