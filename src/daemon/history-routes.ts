/**
 * The resource history as API routes: this host's CPU, memory, storage and network over the last hour
 * (`GET /host/history`) and one VM's QEMU CPU, resident memory and volume allocation while it ran here
 * (`GET /vms/{name}/history`), from the daemon's sampler (`src/history/sampler.ts`). Part of the resource
 * table (`RESOURCE_ROUTES` in `api.ts`), so served on the local socket and the management API alike.
 *
 * `since` makes a follower cheap: the console asks once for the hour, then only for the points newer than
 * the newest it has. `series` picks families (`cpu,memory`), all by default.
 */
import { LockstepError } from '../util/errors.js';
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import { HOST_FAMILIES, VM_FAMILIES, type VmFamily } from '../history/sampler.js';
import type { ApiContext } from './api.js';

/** A comma-separated list of `families`, each at most once or more (repeats are harmless). */
function familiesParam(families: readonly string[], what: string): Schema {
  const one = `(${families.join('|')})`;
  return { type: 'string', pattern: `^${one}(,${one})*$`, maxLength: 200, description: `${what}, comma-separated (default: all): ${families.join(', ')}`, examples: [families.slice(0, 2).join(',')] };
}

const SINCE: Schema = {
  type: 'integer',
  minimum: 0,
  maximum: Number.MAX_SAFE_INTEGER,
  description: "only the points newer than this wall-clock time (ms since the epoch): the previous answer's newest point's time; default: all kept",
};

const POINT: Schema = { type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 2, description: '[wall-clock ms since the epoch, value]' };

const SERIES_SCHEMA: Schema = {
  type: 'object',
  required: ['id', 'family', 'unit', 'label', 'limit', 'error', 'points'],
  properties: {
    id: { type: 'string', description: 'stable on this host: cpu, memory, storage.<group>, network.<network>.rx or .tx (host); cpu, memory, disk (VM)' },
    family: { type: 'string', enum: [...new Set<string>([...HOST_FAMILIES, ...VM_FAMILIES])] },
    unit: {
      type: 'string',
      enum: ['ratio', 'cores', 'bytes', 'bytes/s'],
      description: "ratio: a share from 0 to 1 (the host's CPU busy, all cores); cores: CPU seconds per second (a VM's QEMU: 1 is one core busy); bytes; bytes/s",
    },
    label: { type: 'string', description: 'what it measures, for a person: "business (br-biz) received"' },
    limit: { type: ['number', 'null'], description: "its ceiling as last measured: 1 (host CPU), the host's memory, a group's capacity, a VM's cores, guest memory or disk size; null: none" },
    error: { type: ['string', 'null'], description: 'why the newest round has no value (a file that could not be read, an interface not there); null: it has one' },
    points: { type: 'array', items: POINT, maxItems: 100_000, description: 'oldest first; a round without a value is no point, so a gap longer than intervalMs is a time it was not measured' },
  },
};

const HISTORY_PROPERTIES: Readonly<Record<string, Schema>> = {
  host: { type: 'string', description: 'the host that measured' },
  intervalMs: { type: 'integer', description: 'time between two rounds' },
  keptMs: { type: 'integer', description: 'how far back the history reaches when full (older points are dropped)' },
  series: { type: 'array', items: SERIES_SCHEMA },
};

const HOST_QUERY: Schema = { type: 'object', additionalProperties: false, properties: { since: SINCE, series: familiesParam(HOST_FAMILIES, 'the families') } };
const VM_QUERY: Schema = { type: 'object', additionalProperties: false, properties: { since: SINCE, series: familiesParam(VM_FAMILIES, 'the families') } };

function familiesOf<F extends string>(raw: unknown, all: readonly F[]): F[] {
  if (typeof raw !== 'string') return [...all];
  const asked = new Set(raw.split(','));
  return all.filter((f) => asked.has(f));
}

export const HISTORY_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'getHostHistory',
    method: 'GET',
    path: '/host/history',
    tag: 'host',
    summary: "this host's CPU, memory, storage and network over time",
    description:
      'one round every intervalMs (5 s), an hour kept: the CPU busy (/proc/stat), memory used (MemTotal less MemAvailable), each storage group used (its volumes\' allocation), and each configured network\'s bytes received and sent per second (mgmt, business, each A-Link)',
    access: 'read-only',
    query: HOST_QUERY,
    response: { status: 200, description: 'the series', schema: { type: 'object', required: ['host', 'intervalMs', 'keptMs', 'series'], properties: HISTORY_PROPERTIES } },
    handler: async (ctx, { query }) => {
      const h = ctx.history.host(sinceOf(query), familiesOf(query['series'], HOST_FAMILIES));
      return { status: 200, body: { host: ctx.host, ...h } };
    },
  },
  {
    operationId: 'getVmHistory',
    method: 'GET',
    path: '/vms/{name}/history',
    tag: 'vms',
    summary: "one VM's CPU, memory and disk over time, while it ran on this host",
    description:
      "its QEMU's CPU (utime + stime, in cores), resident memory (VmRSS) and its volume's allocation on this host, every intervalMs while it runs here; kept an hour after it last ran here. No series (here false) when it has not run here in that time: the host that runs it has them",
    access: 'read-only',
    params: { name: { type: 'string', minLength: 1, maxLength: 64, description: "the VM's name" } },
    query: VM_QUERY,
    response: {
      status: 200,
      description: 'the series',
      schema: {
        type: 'object',
        required: ['host', 'vm', 'here', 'intervalMs', 'keptMs', 'series'],
        properties: { ...HISTORY_PROPERTIES, vm: { type: 'string' }, here: { type: 'boolean', description: "whether the VM's QEMU ran here at the last round" } },
      },
    },
    errors: ['UNKNOWN_VM'],
    handler: async (ctx, { params, query }) => {
      const name = params['name']!;
      const h = ctx.history.vm(name, sinceOf(query), familiesOf<VmFamily>(query['series'], VM_FAMILIES));
      const known = ctx.driver()?.view().vms.some((v) => v.name === name) ?? false;
      // A VM removed from the pair keeps the history it made here, until it leaves the window.
      if (h === null && !known) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}'`, { vm: name });
      return { status: 200, body: { host: ctx.host, vm: name, ...(h ?? { ...ctx.history.window(), here: false, series: [] }) } };
    },
  },
];

function sinceOf(query: Record<string, unknown>): number {
  return typeof query['since'] === 'number' ? query['since'] : Number.NEGATIVE_INFINITY;
}
