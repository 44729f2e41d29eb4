/**
 * `GET /v1/host/sensors`: this host's hardware sensors as its kernel reports them (src/health/sensors.ts),
 * read at each request (a few small sysfs files). Only this host's: the peer's lockstepd answers for its own.
 *
 * `GET /v1/host/health`: the pair's health components: this host's as last checked (src/health/monitor.ts)
 * and the peer's own, asked over the A-Link (src/daemon/peer-report.ts), or why they are unavailable.
 */
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import type { ApiContext } from './api.js';
import { HEALTH_COMPONENTS, type HealthSnapshot } from '../core/types.js';
import { peerSectionSchema } from './network-routes.js';
import { peerSection, type PeerSection } from './peer-report.js';

const NULLABLE_NUMBER: Schema = { type: ['number', 'null'] };

const SENSORS_SCHEMA: Schema = {
  type: 'object',
  required: ['host', 'sensors', 'note'],
  properties: {
    host: { type: 'string', description: 'the host that answered: the sensors are its own' },
    note: { type: ['string', 'null'], description: 'why there are none, or what could not be read; null when every sensor was read' },
    sensors: {
      type: 'array',
      items: {
        type: 'object',
        required: ['chip', 'id', 'label', 'kind', 'value', 'min', 'max', 'critical', 'state'],
        properties: {
          chip: { type: 'string', description: "the hwmon driver's name, or the thermal zone's type" },
          id: { type: 'string', description: 'where it was read: hwmonN/tempM, thermal_zoneN' },
          label: { type: 'string' },
          kind: { type: 'string', enum: ['temperature', 'fan', 'voltage'] },
          value: { type: 'number', description: '°C, RPM or V' },
          min: { ...NULLABLE_NUMBER, description: "a fan's or a voltage's minimum, as the driver gives it" },
          max: NULLABLE_NUMBER,
          critical: NULLABLE_NUMBER,
          state: { type: 'string', enum: ['ok', 'warning', 'critical'], description: 'critical at or past the critical limit; warning past the maximum or below the minimum' },
        },
      },
    },
  },
};

const COMPONENTS_SCHEMA: Schema = {
  type: ['object', 'null'],
  description: 'each health component (alink1, alink2, mgmt, business, disk, qemu, power-supply) and its state; null before the first check',
  properties: Object.fromEntries(HEALTH_COMPONENTS.map((c) => [c, { type: 'string', enum: ['ok', 'degraded', 'failed'] }])),
};

/** `GET /v1/host/health`'s answer: this host's components (null before its first check) and the peer's section. */
export interface PairHealth {
  host: string;
  components: HealthSnapshot | null;
  peer: PeerSection<{ components: HealthSnapshot | null }>;
}

const HEALTH_SCHEMA: Schema = {
  type: 'object',
  required: ['host', 'components', 'peer'],
  properties: {
    host: { type: 'string', description: 'this host, the one that answered' },
    components: COMPONENTS_SCHEMA,
    peer: peerSectionSchema('health components', 'components', COMPONENTS_SCHEMA),
  },
};

export const SENSOR_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'getHostSensors',
    method: 'GET',
    path: '/host/sensors',
    tag: 'host',
    summary: "this host's hardware sensors: temperatures, fans, voltages",
    description: "read from the kernel's hwmon drivers and thermal zones now, each with its limits and a state; an empty list with a note on a machine that has none (a virtual machine)",
    access: 'read-only',
    response: { status: 200, description: 'the sensors', schema: SENSORS_SCHEMA },
    handler: async (ctx) => ({ status: 200, body: { host: ctx.host, ...(await ctx.sensors()) } }),
  },
  {
    operationId: 'getHostHealth',
    method: 'GET',
    path: '/host/health',
    tag: 'host',
    summary: "the pair's health components: this host's and the peer's",
    description:
      "this host's components as its last health check found them (the same as GET /v1/status's health), and the peer's section: the peer's own, asked over the A-Link, or why they are unavailable",
    access: 'read-only',
    response: { status: 200, description: "this host's components and the peer's section", schema: HEALTH_SCHEMA },
    handler: async (ctx) => {
      const peer = await ctx.peer();
      const body: PairHealth = { host: ctx.host, components: ctx.health(), peer: peerSection(peer, (r) => ({ components: r.health })) };
      return { status: 200, body };
    },
  },
];
