/**
 * The wire schema of the messages the two hosts' decision cores exchange over the A-Link (`PeerMessage`
 * in `src/core/types.ts`): an envelope with a protocol version, and a parser that checks every field and
 * builds a fresh value from the checked fields only, so nothing the peer sent reaches the core unchecked.
 *
 * A message that does not fit throws `INVALID_MESSAGE` naming the field (`vms.web1.owner.epoch`). Unknown
 * fields are ignored and not passed on: adding an optional field is compatible within a version; changing
 * the meaning of one needs a new version.
 *
 * Every collection is bounded, so the largest valid message has a known size (well under the A-Link's
 * frame limit, see `largestHeartbeat` in the tests).
 */
import {
  HEALTH_COMPONENTS,
  HOST_STATES,
  type Authority,
  type ComponentState,
  type HealthComponent,
  type HealthSnapshot,
  type Heartbeat,
  type HostState,
  type PairAccept,
  type PairPropose,
  type MirrorState,
  type PeerMessage,
  type ProtectionLevel,
  type VmRecord,
} from '../core/types.js';
import { LockstepError } from '../util/errors.js';
import type { NetworkStatus } from '../daemon/networks.js';

/** The version of the peer message schema this build speaks. */
export const PEER_PROTOCOL_VERSION = 2;

export const PEER_LIMITS = {
  /** Most VMs one pair protects: bounds `vms` and `running`. */
  vmsMax: 1024,
  /** Most quorum servers named in one message (a pair has at most two). */
  quorumServersMax: 8,
  /** Health scores are 0..100 (`src/core/health.ts`). */
  healthMax: 100,
  /** A migration's multifd connections: QEMU 7.2 takes at most 255. */
  multifdChannelsMax: 255,
  /** A VM's hardware definition, as JSON (the daemon validates its fields when it starts the VM). */
  hardwareBytesMax: 8 * 1024,
} as const;

/** Host and VM names: the same rule as VM definitions and the daemon's config. */
export const NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;
/** Replication stream ids, as the owner's core names them: `<host>.<incarnation>.<n>`. */
export const STREAM_ID_RE = /^[a-z][a-z0-9-]{0,30}\.\d{1,15}\.\d{1,15}$/;
/** Quorum server ids: names, host names or address:port, so a little wider than host names. */
export const QUORUM_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

export const PEER_MESSAGE_KINDS = ['heartbeat', 'pair-propose', 'pair-accept'] as const satisfies readonly PeerMessage['kind'][];
const AUTHORITIES = ['none', 'pair', 'quorum', 'tiebreak'] as const satisfies readonly Authority[];
const PROTECTIONS = ['none', 'ha', 'ft'] as const satisfies readonly ProtectionLevel[];
const DESIRED = ['running', 'stopped'] as const;
const MIRROR_STATES = ['syncing', 'ready', 'stalled'] as const satisfies readonly MirrorState[];

/** A message as it travels: the version, the kind, and the message's other fields. */
export interface PeerEnvelope {
  v: number;
  kind: PeerMessage['kind'];
  body: Record<string, unknown>;
}

export function toPeerEnvelope(msg: PeerMessage): PeerEnvelope {
  const { kind, ...body } = msg;
  return { v: PEER_PROTOCOL_VERSION, kind, body };
}

/** Checks the envelope's version and kind, then the body; throws `INVALID_MESSAGE`. */
export function parsePeerEnvelope(raw: unknown): PeerMessage {
  const env = object(raw, 'envelope');
  if (env['v'] !== PEER_PROTOCOL_VERSION) {
    throw invalid('v', `is ${JSON.stringify(env['v'])}: this host speaks version ${PEER_PROTOCOL_VERSION}`, { version: env['v'] });
  }
  const kind = oneOf(env['kind'], 'kind', PEER_MESSAGE_KINDS);
  const body = object(env['body'], 'body');
  return parseBody(kind, body);
}

/** Checks a message (an object with its `kind`) field by field; throws `INVALID_MESSAGE`. */
export function parsePeerMessage(raw: unknown): PeerMessage {
  const o = object(raw, 'message');
  return parseBody(oneOf(o['kind'], 'kind', PEER_MESSAGE_KINDS), o);
}

function parseBody(kind: PeerMessage['kind'], o: Record<string, unknown>): PeerMessage {
  switch (kind) {
    case 'heartbeat':
      return parseHeartbeat(o);
    case 'pair-propose':
      return parsePairPropose(o);
    case 'pair-accept':
      return parsePairAccept(o);
  }
}

function parseHeartbeat(o: Record<string, unknown>): Heartbeat {
  const echo = object(o['echo'], 'echo');
  return {
    kind: 'heartbeat',
    from: name(o['from'], 'from'),
    incarnation: count(o['incarnation'], 'incarnation'),
    seq: count(o['seq'], 'seq'),
    // -1: nothing heard from the peer yet (the core's initial value).
    echo: { incarnation: count(echo['incarnation'], 'echo.incarnation', -1), seq: count(echo['seq'], 'echo.seq') },
    epoch: count(o['epoch'], 'epoch'),
    authority: oneOf(o['authority'], 'authority', AUTHORITIES),
    hostState: hostState(o['hostState'], 'hostState'),
    health: health(o['health'], 'health'),
    quorumReachable: list(o['quorumReachable'], 'quorumReachable', PEER_LIMITS.quorumServersMax, quorumId),
    activeQuorum: o['activeQuorum'] === null ? null : quorumId(o['activeQuorum'], 'activeQuorum'),
    // Optional: a host that predates it sends none (a rolling upgrade); 0 asks nothing of the pair.
    quorumEpoch: o['quorumEpoch'] === undefined ? 0 : count(o['quorumEpoch'], 'quorumEpoch'),
    vms: vmRecords(o['vms'], 'vms'),
    running: list(o['running'], 'running', PEER_LIMITS.vmsMax, name),
    mirrors: byVm(o['mirrors'], 'mirrors', (m, at) => ({ stream: streamId(m['stream'], `${at}.stream`), state: oneOf(m['state'], `${at}.state`, MIRROR_STATES) })),
    copies: byVm(o['copies'], 'copies', (c, at) => ({
      serving: bool(c['serving'], `${at}.serving`),
      stream: c['stream'] === null ? null : streamId(c['stream'], `${at}.stream`),
      current: bool(c['current'], `${at}.current`),
    })),
    // Optional: a host that predates it sends none (a rolling upgrade): it has room for every FT VM.
    ftRoomShort: o['ftRoomShort'] === undefined ? [] : list(o['ftRoomShort'], 'ftRoomShort', PEER_LIMITS.vmsMax, name),
    // `multifd` optional in both: a host that predates it migrates over one stream (0).
    migrations: byVm(o['migrations'], 'migrations', (m, at) => ({ id: streamId(m['id'], `${at}.id`), multifd: multifdChannels(m['multifd'], `${at}.multifd`) })),
    incoming: byVm(o['incoming'], 'incoming', (i, at) => ({
      id: streamId(i['id'], `${at}.id`),
      ready: bool(i['ready'], `${at}.ready`),
      port: i['port'] === null ? null : port(i['port'], `${at}.port`),
      multifd: multifdChannels(i['multifd'], `${at}.multifd`),
      failed: bool(i['failed'], `${at}.failed`),
    })),
  };
}

/** A map from VM name to an object of one shape, bounded like `vms`. */
function byVm<T>(raw: unknown, field: string, item: (o: Record<string, unknown>, at: string) => T): Record<string, T> {
  const o = object(raw, field);
  const keys = Object.keys(o);
  if (keys.length > PEER_LIMITS.vmsMax) throw invalid(field, `has ${keys.length} VMs; at most ${PEER_LIMITS.vmsMax}`);
  const out: Record<string, T> = {};
  for (const key of keys) {
    const at = `${field}.${printable(key)}`;
    if (!NAME_RE.test(key)) throw invalid(at, 'is not a VM name ([a-z][a-z0-9-]{0,30})');
    out[key] = item(object(o[key], at), at);
  }
  return out;
}

function port(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw invalid(field, 'must be a TCP port (1–65535)');
  return v;
}

function multifdChannels(v: unknown, field: string): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > PEER_LIMITS.multifdChannelsMax) {
    throw invalid(field, `must be 0 (one stream) to ${PEER_LIMITS.multifdChannelsMax} multifd connections`);
  }
  return v;
}

function streamId(v: unknown, field: string): string {
  if (typeof v !== 'string' || !STREAM_ID_RE.test(v)) throw invalid(field, 'must be a stream id <host>.<incarnation>.<n>');
  return v;
}

function parsePairPropose(o: Record<string, unknown>): PairPropose {
  const p: PairPropose = {
    kind: 'pair-propose',
    from: name(o['from'], 'from'),
    epoch: count(o['epoch'], 'epoch'),
    activeQuorum: o['activeQuorum'] === null ? null : quorumId(o['activeQuorum'], 'activeQuorum'),
    vms: vmRecords(o['vms'], 'vms'),
  };
  // Optional: a host that predates it sends none (a rolling upgrade).
  if (o['echo'] !== undefined) {
    const echo = object(o['echo'], 'echo');
    p.echo = { incarnation: count(echo['incarnation'], 'echo.incarnation', -1), seq: count(echo['seq'], 'echo.seq') };
  }
  return p;
}

function parsePairAccept(o: Record<string, unknown>): PairAccept {
  return { kind: 'pair-accept', from: name(o['from'], 'from'), epoch: count(o['epoch'], 'epoch') };
}

function vmRecords(raw: unknown, field: string): Record<string, VmRecord> {
  const o = object(raw, field);
  const keys = Object.keys(o);
  if (keys.length > PEER_LIMITS.vmsMax) throw invalid(field, `has ${keys.length} VMs; at most ${PEER_LIMITS.vmsMax}`);
  const out: Record<string, VmRecord> = {};
  for (const key of keys) {
    const at = `${field}.${printable(key)}`;
    if (!NAME_RE.test(key)) throw invalid(at, 'is not a VM name ([a-z][a-z0-9-]{0,30})');
    const rec = object(o[key], at);
    const config = object(rec['config'], `${at}.config`);
    const owner = object(rec['owner'], `${at}.owner`);
    const vmName = name(config['name'], `${at}.config.name`);
    if (vmName !== key) throw invalid(`${at}.config.name`, `is ${vmName}, not the record's key`);
    out[key] = {
      config: {
        name: vmName,
        desired: oneOf(config['desired'], `${at}.config.desired`, DESIRED),
        protection: oneOf(config['protection'], `${at}.config.protection`, PROTECTIONS),
        version: count(config['version'], `${at}.config.version`),
        by: name(config['by'], `${at}.config.by`),
        removed: bool(config['removed'], `${at}.config.removed`),
        hardware: hardware(config['hardware'], `${at}.config.hardware`),
      },
      owner: {
        host: name(owner['host'], `${at}.owner.host`),
        epoch: count(owner['epoch'], `${at}.owner.epoch`),
        seq: count(owner['seq'], `${at}.owner.seq`),
      },
    };
  }
  return out;
}

// ── field checkers ─────────────────────────────────────────────────────────────────────────────────────

function invalid(field: string, why: string, extra: Record<string, unknown> = {}): LockstepError {
  return new LockstepError('INVALID_MESSAGE', `peer message: '${field}' ${why}`, { field, ...extra });
}

/** Keys from the wire may be anything: keep error messages short and on one line. */
function printable(s: string): string {
  const cut = s.length > 40 ? `${s.slice(0, 40)}…` : s;
  return JSON.stringify(cut).slice(1, -1);
}

function object(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(field, 'must be an object');
  return v as Record<string, unknown>;
}

function hardware(v: unknown, field: string): Record<string, unknown> {
  const o = object(v, field);
  const bytes = Buffer.byteLength(JSON.stringify(o));
  if (bytes > PEER_LIMITS.hardwareBytesMax) throw invalid(field, `is ${bytes} bytes of JSON; at most ${PEER_LIMITS.hardwareBytesMax}`);
  return o;
}

function count(v: unknown, field: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw invalid(field, `must be a safe integer ≥ ${min} (got ${printable(JSON.stringify(v) ?? String(v))})`);
  }
  return v;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw invalid(field, 'must be true or false');
  return v;
}

function name(v: unknown, field: string): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) throw invalid(field, 'must be a name matching [a-z][a-z0-9-]{0,30}');
  return v;
}

function quorumId(v: unknown, field: string): string {
  if (typeof v !== 'string' || !QUORUM_ID_RE.test(v)) throw invalid(field, 'must be a quorum server id ([A-Za-z0-9][A-Za-z0-9._:-]{0,63})');
  return v;
}

function oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw invalid(field, `must be one of ${allowed.join(', ')}`);
  return v as T;
}

function hostState(v: unknown, field: string): HostState {
  if (typeof v !== 'string' || !Object.prototype.hasOwnProperty.call(HOST_STATES, v)) {
    throw invalid(field, `must be one of ${Object.keys(HOST_STATES).join(', ')}`);
  }
  return v as HostState;
}

function health(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > PEER_LIMITS.healthMax) {
    throw invalid(field, `must be a number from 0 to ${PEER_LIMITS.healthMax}`);
  }
  return v;
}

function list<T>(v: unknown, field: string, max: number, item: (x: unknown, field: string) => T): T[] {
  if (!Array.isArray(v)) throw invalid(field, 'must be an array');
  if (v.length > max) throw invalid(field, `has ${v.length} items; at most ${max}`);
  return v.map((x, i) => item(x, `${field}[${i}]`));
}

// ── the daemons' own messages: host reports ────────────────────────────────────────────────────────────
//
// Not the core's: lockstepd asks its peer for the peer's own view of its networks and health components,
// so that either host's API answers for the pair. They travel in the same envelope on the same A-Link and
// are checked as strictly, but the Alink hands them to the daemon (`daemon-message`), never to the core.
// A peer built before them drops a request as an unknown kind (and logs it); the asker's request times out.

export const DAEMON_MESSAGE_KINDS = ['host-report-request', 'host-report'] as const;
export type DaemonMessageKind = (typeof DAEMON_MESSAGE_KINDS)[number];

export const REPORT_LIMITS = {
  /** A host has at most two A-Link paths, a management and a business network. */
  networksMax: 8,
  /** Interface names (IFNAMSIZ is 16), MACs and addresses are short; this leaves room. */
  shortChars: 64,
  /** `detail`, `lastError`, a bandwidth `reason`: a sentence. */
  textChars: 500,
  /** The whole report as JSON: a report of the largest valid fields is well under it (see the tests). */
  reportBytesMax: 64 * 1024,
} as const;

/** One network as the peer reports it: the fields of `GET /v1/networks`' `NetworkStatus`. */
export type ReportedNetwork = NetworkStatus;

/** Asks the peer's daemon for its host report; `id` pairs the answer with the question. */
export interface HostReportRequest {
  kind: 'host-report-request';
  from: string;
  id: number;
}

/** The answer: the sender's own networks, as its `GET /v1/networks` shows them, and its health components. */
export interface HostReport {
  kind: 'host-report';
  from: string;
  id: number;
  /** When the sender read it (ISO 8601). */
  takenAt: string;
  networks: ReportedNetwork[];
  /** Its health components as last checked; null before its first check. */
  health: HealthSnapshot | null;
}

export type DaemonMessage = HostReportRequest | HostReport;

/** Any message the A-Link carries: the core's, or the daemons' own. */
export type WireMessage = PeerMessage | DaemonMessage;

export function isDaemonMessage(m: WireMessage): m is DaemonMessage {
  return (DAEMON_MESSAGE_KINDS as readonly string[]).includes(m.kind);
}

export function toWireEnvelope(msg: WireMessage): { v: number; kind: WireMessage['kind']; body: Record<string, unknown> } {
  const { kind, ...body } = msg;
  return { v: PEER_PROTOCOL_VERSION, kind, body };
}

const WIRE_KINDS = [...PEER_MESSAGE_KINDS, ...DAEMON_MESSAGE_KINDS] as const;

/** `parsePeerEnvelope` for every kind the A-Link carries, the daemons' included; throws `INVALID_MESSAGE`. */
export function parseWireEnvelope(raw: unknown): WireMessage {
  const env = object(raw, 'envelope');
  if (env['v'] !== PEER_PROTOCOL_VERSION) {
    throw invalid('v', `is ${JSON.stringify(env['v'])}: this host speaks version ${PEER_PROTOCOL_VERSION}`, { version: env['v'] });
  }
  const kind = oneOf(env['kind'], 'kind', WIRE_KINDS);
  const body = object(env['body'], 'body');
  return (DAEMON_MESSAGE_KINDS as readonly string[]).includes(kind) ? parseDaemonBody(kind as DaemonMessageKind, body) : parseBody(kind as PeerMessage['kind'], body);
}

/** `parsePeerMessage` for every kind the A-Link carries; throws `INVALID_MESSAGE`. */
export function parseWireMessage(raw: unknown): WireMessage {
  const o = object(raw, 'message');
  const kind = oneOf(o['kind'], 'kind', WIRE_KINDS);
  return (DAEMON_MESSAGE_KINDS as readonly string[]).includes(kind) ? parseDaemonBody(kind as DaemonMessageKind, o) : parseBody(kind as PeerMessage['kind'], o);
}

/** Checks a daemon message field by field; throws `INVALID_MESSAGE`. */
export function parseDaemonMessage(raw: unknown): DaemonMessage {
  const o = object(raw, 'message');
  return parseDaemonBody(oneOf(o['kind'], 'kind', DAEMON_MESSAGE_KINDS), o);
}

function parseDaemonBody(kind: DaemonMessageKind, o: Record<string, unknown>): DaemonMessage {
  const from = name(o['from'], 'from');
  const id = count(o['id'], 'id');
  if (kind === 'host-report-request') return { kind, from, id };
  // Bounded before any field is read: a report's every field is short, so its whole size has a limit.
  const bytes = Buffer.byteLength(JSON.stringify(o));
  if (bytes > REPORT_LIMITS.reportBytesMax) throw invalid('report', `is ${bytes} bytes of JSON; at most ${REPORT_LIMITS.reportBytesMax}`, { bytes });
  const takenAt = o['takenAt'];
  if (typeof takenAt !== 'string' || takenAt.length > REPORT_LIMITS.shortChars || !ISO_TIME_RE.test(takenAt) || Number.isNaN(Date.parse(takenAt))) {
    throw invalid('takenAt', 'must be an ISO 8601 time (2026-01-02T03:04:05.678Z)');
  }
  const networks = list(o['networks'], 'networks', REPORT_LIMITS.networksMax, network);
  const seen = new Set<string>();
  networks.forEach((n, i) => {
    if (seen.has(n.name)) throw invalid(`networks[${i}].name`, `repeats ${n.name}`);
    seen.add(n.name);
    if (n.host !== from) throw invalid(`networks[${i}].host`, `is ${n.host}, not the sender ${from}`);
  });
  return { kind, from, id, takenAt, networks, health: o['health'] === null ? null : healthSnapshot(o['health'], 'health') };
}

const ISO_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const NETWORK_NAMES = ['alink1', 'alink2', 'mgmt', 'business'] as const satisfies readonly NetworkStatus['name'][];
const NETWORK_ROLES = ['alink', 'management', 'business'] as const satisfies readonly NetworkStatus['role'][];
const NETWORK_STATE_VALUES = ['up', 'down', 'missing', 'not-configured', 'unreadable'] as const satisfies readonly NetworkStatus['state'][];
const COMPONENT_STATES = ['ok', 'degraded', 'failed'] as const satisfies readonly ComponentState[];

function network(raw: unknown, at: string): ReportedNetwork {
  const o = object(raw, at);
  // Checked in the order of the fields, so the error names the first wrong one.
  const head = {
    name: oneOf(o['name'], `${at}.name`, NETWORK_NAMES),
    role: oneOf(o['role'], `${at}.role`, NETWORK_ROLES),
    host: name(o['host'], `${at}.host`),
    interface: nullable(o['interface'], `${at}.interface`, short),
    bridge: nullable(o['bridge'], `${at}.bridge`, short),
    state: oneOf(o['state'], `${at}.state`, NETWORK_STATE_VALUES),
    detail: text(o['detail'], `${at}.detail`),
    health: nullable(o['health'], `${at}.health`, (v, f) => oneOf(v, f, COMPONENT_STATES)),
    operstate: nullable(o['operstate'], `${at}.operstate`, short),
    adminUp: nullable(o['adminUp'], `${at}.adminUp`, bool),
    carrier: nullable(o['carrier'], `${at}.carrier`, bool),
    speedMbps: nullable(o['speedMbps'], `${at}.speedMbps`, count),
    mac: nullable(o['mac'], `${at}.mac`, short),
    mtu: nullable(o['mtu'], `${at}.mtu`, count),
    rxBytes: nullable(o['rxBytes'], `${at}.rxBytes`, count),
    txBytes: nullable(o['txBytes'], `${at}.txBytes`, count),
  };
  const bw = object(o['bandwidth'], `${at}.bandwidth`);
  const bandwidth = {
    rxBytesPerSec: nullable(bw['rxBytesPerSec'], `${at}.bandwidth.rxBytesPerSec`, count),
    txBytesPerSec: nullable(bw['txBytesPerSec'], `${at}.bandwidth.txBytesPerSec`, count),
    overMs: nullable(bw['overMs'], `${at}.bandwidth.overMs`, count),
    sampledAt: nullable(bw['sampledAt'], `${at}.bandwidth.sampledAt`, short),
    reason: nullable(bw['reason'], `${at}.bandwidth.reason`, text),
  };
  const al = o['alink'] === null ? null : object(o['alink'], `${at}.alink`);
  const alink = al && {
    localAddress: short(al['localAddress'], `${at}.alink.localAddress`),
    peerAddress: short(al['peerAddress'], `${at}.alink.peerAddress`),
    connected: nullable(al['connected'], `${at}.alink.connected`, bool),
    rttMs: nullable(al['rttMs'], `${at}.alink.rttMs`, milliseconds),
    lastError: nullable(al['lastError'], `${at}.alink.lastError`, text),
  };
  return { ...head, bandwidth, alink };
}

function healthSnapshot(raw: unknown, field: string): HealthSnapshot {
  const o = object(raw, field);
  for (const key of Object.keys(o)) {
    if (!(HEALTH_COMPONENTS as readonly string[]).includes(key)) throw invalid(`${field}.${printable(key)}`, `is not a health component (${HEALTH_COMPONENTS.join(', ')})`);
  }
  const out: Partial<Record<HealthComponent, ComponentState>> = {};
  for (const c of HEALTH_COMPONENTS) out[c] = oneOf(o[c], `${field}.${c}`, COMPONENT_STATES);
  return out as HealthSnapshot;
}

function nullable<T>(v: unknown, field: string, check: (v: unknown, field: string) => T): T | null {
  return v === null ? null : check(v, field);
}

function stringOf(v: unknown, field: string, max: number): string {
  if (typeof v !== 'string') throw invalid(field, 'must be a string');
  if (v.length > max) throw invalid(field, `is ${v.length} characters; at most ${max}`);
  // Shown in tables and logs: no control characters from the wire.
  if (/[\u0000-\u001f\u007f]/.test(v)) throw invalid(field, 'must not hold control characters');
  return v;
}

function short(v: unknown, field: string): string {
  return stringOf(v, field, REPORT_LIMITS.shortChars);
}

function text(v: unknown, field: string): string {
  return stringOf(v, field, REPORT_LIMITS.textChars);
}

function milliseconds(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw invalid(field, 'must be a number of ms ≥ 0');
  return v;
}
