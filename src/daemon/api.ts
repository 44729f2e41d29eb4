/**
 * lockstepd's local API: HTTP with JSON bodies on a unix socket in the host's run directory. The lab and the
 * CLI use it; the management-network API (TLS, users, the console) is built on the same handlers later.
 * Every change goes through the decision core as an operator command: the API never starts or stops a VM
 * itself, it asks, and answers with the core's verdict.
 */
import http from 'node:http';
import { rm } from 'node:fs/promises';
import { LockstepError, isLockstepError, type ErrorCode } from '../util/errors.js';
import type { OperatorCommand } from '../core/types.js';
import { hardwareOf, parseVmDefinition, PROTECTION_LEVELS, type ProtectionLevel } from './vm-definition.js';
import type { CoreDriver, CoreView } from './core-driver.js';
import type { LastExit, RunningVm } from './vm-runner.js';
import type { LogEntry } from './state-db.js';

const BODY_BYTES_MAX = 1024 * 1024;
const LOG_LIMIT_MAX = 1000;

/** What the API reads from the running daemon; `driver` is null until the host is paired. */
export interface ApiContext {
  host: string;
  startedAt: string;
  incarnation: number;
  pairing(): { state: 'pairing' | 'paired'; lastError: string | null };
  driver(): CoreDriver | null;
  running(): RunningVm[];
  lastExit(vm: string): LastExit | null;
  alink(): unknown;
  health(): unknown;
  pairCaPem(): Promise<string | null>;
  recentLog(opts: { limit: number; beforeId?: number; kind?: 'event' | 'alert' }): (LogEntry & { id: number })[];
}

/** A VM as the API shows it: the pair's record (from the core) and, when it runs here, its process. */
export interface VmStatus {
  name: string;
  owner: string;
  protection: string;
  desired: string;
  state: string;
  hardware: unknown;
  /** This host's QEMU for the VM, if any. */
  local: RunningVm | null;
  lastExit: LastExit | null;
}

type Handler = (ctx: ApiContext, params: string[], body: unknown, query: URLSearchParams) => Promise<{ status: number; body: unknown }>;

const routes: { method: string; pattern: RegExp; handler: Handler }[] = [
  {
    method: 'GET',
    pattern: /^\/v1\/status$/,
    handler: async (ctx) => {
      const core = ctx.driver()?.view() ?? null;
      return {
        status: 200,
        body: {
          host: ctx.host,
          pid: process.pid,
          startedAt: ctx.startedAt,
          incarnation: ctx.incarnation,
          pairing: ctx.pairing(),
          core: core === null ? null : { ...core, vms: undefined },
          alink: ctx.alink(),
          health: ctx.health(),
          vms: vmStatuses(ctx, core),
        },
      };
    },
  },
  { method: 'GET', pattern: /^\/v1\/vms$/, handler: async (ctx) => ({ status: 200, body: vmStatuses(ctx, ctx.driver()?.view() ?? null) }) },
  {
    method: 'GET',
    pattern: /^\/v1\/vms\/([^/]+)$/,
    handler: async (ctx, [name]) => {
      const vm = vmStatuses(ctx, ctx.driver()?.view() ?? null).find((v) => v.name === name);
      if (!vm) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}'`, { vm: name });
      return { status: 200, body: vm };
    },
  },
  {
    method: 'POST',
    pattern: /^\/v1\/vms$/,
    handler: async (ctx, _, body) => {
      const def = parseVmDefinition(body);
      await command(ctx, { kind: 'define-vm', name: def.name, protection: def.protection, desired: def.desired, hardware: { ...hardwareOf(def) } });
      return { status: 201, body: vmStatus(ctx, def.name) };
    },
  },
  { method: 'POST', pattern: /^\/v1\/vms\/([^/]+)\/start$/, handler: async (ctx, [name]) => desired(ctx, name!, 'running') },
  { method: 'POST', pattern: /^\/v1\/vms\/([^/]+)\/stop$/, handler: async (ctx, [name]) => desired(ctx, name!, 'stopped') },
  {
    // Live migration to the peer; only the host that runs the VM accepts it (COMMAND_REFUSED names the owner).
    method: 'POST',
    pattern: /^\/v1\/vms\/([^/]+)\/migrate$/,
    handler: async (ctx, [name]) => {
      await command(ctx, { kind: 'migrate-vm', name: name! });
      return { status: 202, body: vmStatus(ctx, name!) };
    },
  },
  {
    method: 'POST',
    pattern: /^\/v1\/vms\/([^/]+)\/protection$/,
    handler: async (ctx, [name], body) => {
      const level = (body as { protection?: unknown } | undefined)?.protection;
      if (typeof level !== 'string' || !(PROTECTION_LEVELS as readonly string[]).includes(level)) {
        throw new LockstepError('INVALID_ARGUMENT', `'protection' must be one of ${PROTECTION_LEVELS.join(', ')}`, { field: 'protection' });
      }
      await command(ctx, { kind: 'set-protection', name: name!, protection: level as ProtectionLevel });
      return { status: 200, body: vmStatus(ctx, name!) };
    },
  },
  {
    method: 'DELETE',
    pattern: /^\/v1\/vms\/([^/]+)$/,
    handler: async (ctx, [name]) => {
      await command(ctx, { kind: 'remove-vm', name: name! });
      return { status: 204, body: null };
    },
  },
  {
    method: 'POST',
    pattern: /^\/v1\/host\/maintenance$/,
    handler: async (ctx, _, body) => {
      const on = (body as { on?: unknown } | undefined)?.on;
      if (typeof on !== 'boolean') throw new LockstepError('INVALID_ARGUMENT', `'on' must be true or false`, { field: 'on' });
      await command(ctx, { kind: 'maintenance', on });
      return { status: 200, body: ctx.driver()?.view() ?? null };
    },
  },
  {
    method: 'POST',
    pattern: /^\/v1\/host\/force-takeover$/,
    handler: async (ctx) => {
      await command(ctx, { kind: 'force-takeover' });
      return { status: 200, body: ctx.driver()?.view() ?? null };
    },
  },
  {
    method: 'POST',
    pattern: /^\/v1\/host\/repaired$/,
    handler: async (ctx) => {
      await command(ctx, { kind: 'mark-repaired' });
      return { status: 200, body: ctx.driver()?.view() ?? null };
    },
  },
  {
    method: 'GET',
    pattern: /^\/v1\/pair\/ca$/,
    handler: async (ctx) => {
      const pem = await ctx.pairCaPem();
      if (pem === null) throw new LockstepError('NOT_PAIRED', `${ctx.host} is not paired yet: it has no pair CA`, { host: ctx.host });
      return { status: 200, body: { pem } };
    },
  },
  {
    method: 'GET',
    pattern: /^\/v1\/events$/,
    handler: async (ctx, _, __, query) => {
      const limit = intParam(query, 'limit', 100, 1, LOG_LIMIT_MAX);
      const beforeId = query.has('before') ? intParam(query, 'before', 0, 1, Number.MAX_SAFE_INTEGER) : undefined;
      const kind = query.get('kind');
      if (kind !== null && kind !== 'event' && kind !== 'alert') throw new LockstepError('INVALID_ARGUMENT', `'kind' must be event or alert`, { field: 'kind' });
      return { status: 200, body: ctx.recentLog({ limit, ...(beforeId !== undefined ? { beforeId } : {}), ...(kind !== null ? { kind } : {}) }) };
    },
  },
];

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  INVALID_SPEC: 400,
  INVALID_ARGUMENT: 400,
  UNKNOWN_VM: 404,
  COMMAND_REFUSED: 409,
  NOT_PAIRED: 503,
};

async function command(ctx: ApiContext, cmd: OperatorCommand): Promise<void> {
  const driver = ctx.driver();
  if (!driver) throw new LockstepError('NOT_PAIRED', `${ctx.host} is not paired yet: commands wait for the pair`, { host: ctx.host });
  if ('name' in cmd && cmd.kind !== 'define-vm' && !driver.view().vms.some((v) => v.name === cmd.name)) {
    throw new LockstepError('UNKNOWN_VM', `no VM named '${cmd.name}'`, { vm: cmd.name });
  }
  const result = await driver.command(cmd);
  if (!result.ok) throw new LockstepError('COMMAND_REFUSED', result.reason, { command: cmd.kind });
}

async function desired(ctx: ApiContext, name: string, want: 'running' | 'stopped'): Promise<{ status: number; body: unknown }> {
  await command(ctx, { kind: 'set-desired', name, desired: want });
  return { status: 200, body: vmStatus(ctx, name) };
}

function vmStatus(ctx: ApiContext, name: string): VmStatus | null {
  return vmStatuses(ctx, ctx.driver()?.view() ?? null).find((v) => v.name === name) ?? null;
}

function vmStatuses(ctx: ApiContext, core: CoreView | null): VmStatus[] {
  const running = new Map(ctx.running().map((r) => [r.name, r]));
  return (core?.vms ?? []).map((v) => ({ ...v, local: running.get(v.name) ?? null, lastExit: ctx.lastExit(v.name) }));
}

function intParam(q: URLSearchParams, key: string, fallback: number, min: number, max: number): number {
  const raw = q.get(key);
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new LockstepError('INVALID_ARGUMENT', `'${key}' must be an integer from ${min} to ${max}`, { field: key });
  return n;
}

export async function startApiServer(socketPath: string, ctx: ApiContext, log: (line: string) => void): Promise<http.Server> {
  await rm(socketPath, { force: true });
  const server = http.createServer((req, res) => {
    void handle(ctx, req, log).then(({ status, body }) => {
      const text = body === null ? '' : JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return server;
}

async function handle(ctx: ApiContext, req: http.IncomingMessage, log: (line: string) => void): Promise<{ status: number; body: unknown }> {
  try {
    const url = new URL(req.url ?? '/', 'http://lockstepd');
    const body = await readJsonBody(req);
    for (const route of routes) {
      const m = route.method === req.method ? route.pattern.exec(url.pathname) : null;
      if (m) return await route.handler(ctx, m.slice(1).map(decodeURIComponent), body, url.searchParams);
    }
    return errorBody(404, 'INVALID_ARGUMENT', `no such endpoint: ${req.method} ${url.pathname}`);
  } catch (e) {
    if (isLockstepError(e)) return { status: STATUS_OF[e.code] ?? 500, body: { error: e.toJSON() } };
    log(`API request ${req.method} ${req.url} failed: ${(e as Error).stack ?? String(e)}`);
    return errorBody(500, 'DAEMON_ERROR', (e as Error).message);
  }
}

function errorBody(status: number, code: ErrorCode, message: string): { status: number; body: unknown } {
  return { status, body: { error: { code, message, fields: {} } } };
}

async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > BODY_BYTES_MAX) throw new LockstepError('INVALID_ARGUMENT', `request body over ${BODY_BYTES_MAX} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new LockstepError('INVALID_ARGUMENT', 'request body is not valid JSON');
  }
}
