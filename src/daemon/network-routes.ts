/**
 * `GET /v1/networks`: the pair's networks, a resource route like those of api.ts, served on the local socket
 * and the management API alike: this host's (src/daemon/networks.ts), read now, and the peer's section, its
 * own view asked over the A-Link (src/daemon/peer-report.ts), or why it is unavailable.
 */
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import type { ApiContext } from './api.js';
import { NETWORK_STATES, type NetworkStatus } from './networks.js';
import { peerSection, type PeerSection } from './peer-report.js';

const NULLABLE_INTEGER: Schema = { type: ['integer', 'null'] };

const NETWORK_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'role', 'host', 'interface', 'bridge', 'state', 'detail', 'health', 'operstate', 'adminUp', 'carrier', 'speedMbps', 'mac', 'mtu', 'rxBytes', 'txBytes', 'bandwidth', 'alink'],
  properties: {
    name: { type: 'string', enum: ['alink1', 'alink2', 'mgmt', 'business'], description: 'the network, named as its health component' },
    role: { type: 'string', enum: ['alink', 'management', 'business'] },
    host: { type: 'string', description: "the host whose network it is: the interface and its figures are that host's own (the peer's in the peer section, as it reads them)" },
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

/** `GET /v1/networks`' answer: this host's networks and the peer's section. */
export interface PairNetworks {
  host: string;
  networks: NetworkStatus[];
  peer: PeerSection<{ networks: NetworkStatus[] }>;
}

/**
 * The schema of a peer section (`PeerSection`): `field` holds what the route shows of the peer's report.
 * Closed (no other field), so that nothing of the report a route does not document leaks into its answer.
 */
export function peerSectionSchema(what: string, field: string, items: Schema): Schema {
  return {
    type: 'object',
    required: ['host', 'state'],
    additionalProperties: false,
    description: `the peer's own ${what}, asked over the A-Link when this request came (an answer within 2 s), or why it is unavailable`,
    properties: {
      host: { type: 'string', description: 'the peer' },
      state: { type: 'string', enum: ['available', 'unavailable'] },
      reason: { type: 'string', description: 'unavailable: why (not paired yet, no A-Link path up, no answer within 2 s, an invalid answer)' },
      takenAt: { type: 'string', format: 'date-time', description: 'available: when the peer read it' },
      receivedAt: { type: 'string', format: 'date-time', description: 'available: when this host received it' },
      [field]: items,
    },
  };
}

const NETWORKS_SCHEMA: Schema = {
  type: 'object',
  required: ['host', 'networks', 'peer'],
  properties: {
    host: { type: 'string', description: 'this host, the one that answered' },
    networks: { type: 'array', items: NETWORK_SCHEMA, description: "this host's networks, A-Link paths first" },
    peer: peerSectionSchema('networks', 'networks', { type: 'array', items: NETWORK_SCHEMA, description: "available: the peer's networks, each naming the peer as its host" }),
  },
};

export const NETWORK_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'listNetworks',
    method: 'GET',
    path: '/networks',
    tag: 'networks',
    summary: "the pair's networks: each host's A-Link paths, management and business network",
    description:
      "this host's, read now, each with its interface's state, carrier, speed, MAC, MTU and bandwidth in use and an A-Link path with its round trip; and the peer's section: the same of the peer's, as the peer reads them, asked over the A-Link, or why they are unavailable",
    access: 'read-only',
    response: { status: 200, description: "this host's networks and the peer's section", schema: NETWORKS_SCHEMA },
    handler: async (ctx) => {
      const [networks, peer] = await Promise.all([ctx.networks(), ctx.peer()]);
      const body: PairNetworks = { host: ctx.host, networks, peer: peerSection(peer, (r) => ({ networks: r.networks })) };
      return { status: 200, body };
    },
  },
];
