/**
 * lockstepd's local API: HTTP with JSON bodies on a unix socket in the host's run directory. The lab and the
 * CLI use it; the management-network API (TLS, users, the console) is built on the same handlers later.
 */
import http from 'node:http';
import { rm } from 'node:fs/promises';
import { LockstepError, isLockstepError, type ErrorCode } from '../util/errors.js';
import { parseVmDefinition } from './vm-definition.js';
import type { HostVms } from './host-vms.js';

const BODY_BYTES_MAX = 1024 * 1024;

export interface ApiContext {
  host: string;
  startedAt: string;
  vms: HostVms;
}

type Handler = (ctx: ApiContext, params: string[], body: unknown) => Promise<{ status: number; body: unknown }>;

const routes: { method: string; pattern: RegExp; handler: Handler }[] = [
  {
    method: 'GET',
    pattern: /^\/v1\/status$/,
    handler: async (ctx) => ({ status: 200, body: { host: ctx.host, pid: process.pid, startedAt: ctx.startedAt, vms: ctx.vms.list() } }),
  },
  { method: 'GET', pattern: /^\/v1\/vms$/, handler: async (ctx) => ({ status: 200, body: ctx.vms.list() }) },
  { method: 'GET', pattern: /^\/v1\/vms\/([^/]+)$/, handler: async (ctx, [name]) => ({ status: 200, body: ctx.vms.status(name!) }) },
  {
    method: 'POST',
    pattern: /^\/v1\/vms$/,
    handler: async (ctx, _, body) => ({ status: 201, body: await ctx.vms.define(parseVmDefinition(body)) }),
  },
  { method: 'POST', pattern: /^\/v1\/vms\/([^/]+)\/start$/, handler: async (ctx, [name]) => ({ status: 200, body: await ctx.vms.start(name!) }) },
  { method: 'POST', pattern: /^\/v1\/vms\/([^/]+)\/stop$/, handler: async (ctx, [name]) => ({ status: 200, body: await ctx.vms.stop(name!) }) },
  {
    method: 'DELETE',
    pattern: /^\/v1\/vms\/([^/]+)$/,
    handler: async (ctx, [name]) => {
      await ctx.vms.remove(name!);
      return { status: 204, body: null };
    },
  },
];

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  INVALID_SPEC: 400,
  INVALID_ARGUMENT: 400,
  UNKNOWN_VM: 404,
  VM_ALREADY_EXISTS: 409,
  VM_NOT_RUNNING: 409,
};

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
      if (m) return await route.handler(ctx, m.slice(1).map(decodeURIComponent), body);
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
