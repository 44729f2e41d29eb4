/**
 * `GET /v1/networks`: this host's networks (src/daemon/networks.ts), a resource route like those of api.ts,
 * served on the local socket and the management API alike. Only this host's: the peer's interfaces are
 * not in its heartbeats, and its own lockstepd answers for them.
 */
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import type { ApiContext } from './api.js';
import { NETWORK_STATES } from './networks.js';

const NULLABLE_INTEGER: Schema = { type: ['integer', 'null'] };

const NETWORK_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'role', 'host', 'interface', 'bridge', 'state', 'detail', 'health', 'operstate', 'adminUp', 'carrier', 'speedMbps', 'mac', 'mtu', 'rxBytes', 'txBytes', 'bandwidth', 'alink'],
  properties: {
    name: { type: 'string', enum: ['alink1', 'alink2', 'mgmt', 'business'], description: 'the network, named as its health component' },
    role: { type: 'string', enum: ['alink', 'management', 'business'] },
    host: { type: 'string', description: 'the host that answered: the interface and its figures are its own' },
    interface: { type: ['string', 'null'], description: "the interface on this host (an A-Link's: the one holding its local address); null: none configured or found" },
    bridge: { type: ['string', 'null'], description: "the business network: the bridge the guests' taps join, beside its uplink (the interface)" },
    state: {
      type: 'string',
      enum: NETWORK_STATES,
      description: 'up: administratively up with carrier; down: admin down, no carrier or another operstate; missing: no such interface here; not-configured; unreadable: sysfs (or, for an A-Link, the address lookup) could not be read',
    },
    detail: { type: 'string', description: 'why, in a few words' },
    health: { type: ['string', 'null'], enum: ['ok', 'degraded', 'failed', null], description: 'its health component as last checked' },
    operstate: { type: ['string', 'null'], description: "the kernel's RFC 2863 operstate" },
    adminUp: { type: ['boolean', 'null'] },
    carrier: { type: ['boolean', 'null'], description: 'null: the kernel does not say (admin down)' },
    speedMbps: { ...NULLABLE_INTEGER, description: 'Mb/s; null: the kernel does not know' },
    mac: { type: ['string', 'null'] },
    mtu: NULLABLE_INTEGER,
    rxBytes: { ...NULLABLE_INTEGER, description: "the interface's counters since it was made" },
    txBytes: NULLABLE_INTEGER,
    bandwidth: {
      type: 'object',
      required: ['rxBytesPerSec', 'txBytesPerSec', 'overMs', 'sampledAt', 'reason'],
      description: 'in use: bytes per second between the last two samples of the counters (taken each health round, once paired); null figures with the reason',
      properties: {
        rxBytesPerSec: NULLABLE_INTEGER,
        txBytesPerSec: NULLABLE_INTEGER,
        overMs: { ...NULLABLE_INTEGER, description: 'the time between the two samples' },
        sampledAt: { type: ['string', 'null'], format: 'date-time' },
        reason: { type: ['string', 'null'], description: 'why there is no figure' },
      },
    },
    alink: {
      type: ['object', 'null'],
      required: ['localAddress', 'peerAddress', 'connected', 'rttMs', 'lastError'],
      description: "an A-Link path: its addresses and the A-Link's view of it (connected, smoothed round trip); null for other networks",
      properties: {
        localAddress: { type: 'string' },
        peerAddress: { type: 'string' },
        connected: { type: ['boolean', 'null'], description: 'null before pairing' },
        rttMs: { type: ['number', 'null'] },
        lastError: { type: ['string', 'null'] },
      },
    },
  },
};

export const NETWORK_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'listNetworks',
    method: 'GET',
    path: '/networks',
    tag: 'networks',
    summary: "this host's networks: the A-Link paths, the management and the business network",
    description: "each with its interface's state, carrier, speed, MAC, MTU and bandwidth in use; an A-Link path with its round trip. Only this host's: ask the peer's lockstepd for its own",
    access: 'read-only',
    response: { status: 200, description: 'the networks, A-Link paths first', schema: { type: 'array', items: NETWORK_SCHEMA } },
    handler: async (ctx) => ({ status: 200, body: await ctx.networks() }),
  },
];
