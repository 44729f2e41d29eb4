/**
 * The support bundle: what a support engineer asks for first, gathered by this host's lockstepd into one
 * `.tar.gz` (everRun's "diagnostic file"). Made of what the API itself answers — the same views, so no
 * secret is in it by construction (the preferences view carries no pairing secret, password, SNMP
 * community or webhook token: preference-routes.ts) — plus what only the host has: its daemon's recent log
 * lines, its VMs' console logs here, and the versions it runs. Each part that cannot be read becomes a note
 * in the bundle, never a failed bundle: a support case is when things are broken.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Route } from '../api/routes.js';
import { readConsoleLog } from '../qemu/console-log.js';
import { run } from '../util/exec.js';
import { describeError } from '../util/errors.js';
import { repoRoot } from '../util/paths.js';
import { tarGz, type TarEntry } from '../util/tar.js';
import type { ApiContext } from './api.js';

/**
 * The read routes whose answers go in, by operationId, with the query each is asked with: the host and its
 * VMs, storage, networks, sensors, virtual CDs, the preferences and notifications, the event log.
 */
export const BUNDLE_VIEWS: Readonly<Record<string, Record<string, unknown>>> = {
  getStatus: {},
  listVms: {},
  listVolumes: {},
  listStorageGroups: {},
  listNetworks: {},
  getHostSensors: {},
  listVcds: {},
  getPreferences: {},
  listNotifications: {},
  listEvents: { limit: 1000 },
};

/** Each VM's console log: its last bytes here, enough for a boot and what came before a crash. */
const CONSOLE_LOG_BYTES = 256 * 1024;
const VERSION_COMMAND_TIMEOUT_MS = 5000;

export interface SupportBundle {
  /** The archive's file name, and the directory everything in it is under. */
  name: string;
  data: Buffer;
  /** The files in it, as listed in its MANIFEST. */
  files: string[];
}

/** Gathers the bundle. `routes` are the daemon's resource routes (the views are their answers). */
export async function makeSupportBundle(ctx: ApiContext, routes: readonly Route<ApiContext>[], daemonLog: string, now = new Date()): Promise<SupportBundle> {
  const name = `lockstep-support-${ctx.host}-${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
  const mtime = Math.floor(now.getTime() / 1000);
  const parts: { file: string; text: string }[] = [];
  const notes: string[] = [];
  const add = (file: string, text: string): void => void parts.push({ file, text });
  const failed = (what: string, e: unknown): void => void notes.push(`${what}: ${describeError(e)}`);

  for (const [operationId, query] of Object.entries(BUNDLE_VIEWS)) {
    const route = routes.find((r) => r.operationId === operationId);
    if (!route) {
      notes.push(`api/${operationId}: no such route in this lockstepd`);
      continue;
    }
    try {
      const reply = await route.handler(ctx, { params: {}, query, body: undefined });
      add(`api/${operationId}.json`, `${JSON.stringify(reply.body, null, 2)}\n`);
    } catch (e) {
      failed(`api/${operationId}`, e);
    }
  }
  add('lockstepd.log', daemonLog);
  for (const vm of ctx.driver()?.view().vms ?? []) {
    try {
      const tail = await readConsoleLog(ctx.consoleLogFile(vm.name), CONSOLE_LOG_BYTES);
      if (tail !== null) add(`vms/${vm.name}/console-log.txt`, tail.text);
    } catch (e) {
      failed(`vms/${vm.name}/console-log.txt`, e);
    }
  }
  add('system.json', `${JSON.stringify(await system(ctx, notes), null, 2)}\n`);
  add(
    'MANIFEST.txt',
    [
      `Lockstep support bundle of ${ctx.host}, made ${now.toISOString()} by its lockstepd (pid ${process.pid}, incarnation ${ctx.incarnation}).`,
      'api/*.json are the answers of the API routes of the same names (docs/api.md); lockstepd.log its most recent log lines;',
      "vms/NAME/console-log.txt each VM's serial console here; system.json the versions and the machine.",
      'It holds no secret: no pairing secret, password, SNMP community or token.',
      '',
      'Files:',
      ...parts.map((p) => `  ${p.file}`),
      ...(notes.length > 0 ? ['', 'Not included:', ...notes.map((n) => `  ${n}`)] : []),
      '',
    ].join('\n'),
  );
  const entries: TarEntry[] = parts.map((p) => ({ name: `${name}/${p.file}`, data: Buffer.from(p.text, 'utf8'), mtime }));
  return { name: `${name}.tar.gz`, data: await tarGz(entries), files: parts.map((p) => p.file) };
}

/** The software and the machine: what a support engineer compares against known problems. */
async function system(ctx: ApiContext, notes: string[]): Promise<Record<string, unknown>> {
  const version = async (cmd: string): Promise<string | null> => {
    try {
      return (await run(cmd, ['--version'], { timeoutMs: VERSION_COMMAND_TIMEOUT_MS })).stdout.split('\n')[0]!.trim();
    } catch (e) {
      notes.push(`${cmd} --version: ${describeError(e)}`);
      return null;
    }
  };
  let lockstep: string | null = null;
  try {
    lockstep = (JSON.parse(readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch (e) {
    notes.push(`lockstep version: ${describeError(e)}`);
  }
  return {
    host: ctx.host,
    lockstep,
    node: process.version,
    qemu: await version('qemu-system-x86_64'),
    qemuImg: await version('qemu-img'),
    kernel: `${os.type()} ${os.release()} ${os.version()}`,
    arch: os.arch(),
    cpus: os.cpus().length,
    memoryBytes: os.totalmem(),
    freeMemoryBytes: os.freemem(),
    loadAverage: os.loadavg(),
    uptimeSeconds: Math.round(os.uptime()),
    daemonStartedAt: ctx.startedAt,
  };
}
