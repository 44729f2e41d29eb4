/**
 * `lockstepd`'s configuration file (JSON): which host it is, where its data lives, its peer and the A-Link
 * cables to it, the pairing secret, the quorum servers, and the timing of failure detection. Both hosts of a
 * pair carry the same pair settings; each names itself. Every field is checked here, at start, with the
 * field named in the error: a daemon that starts on a wrong config fails later, and worse.
 *
 * The sections an operator may change while lockstepd runs (`LIVE_SECTIONS`: owner, notifications, resync)
 * are rewritten in the file by the preference setters (config-file.ts), and checked by this same parser
 * first: what a setter accepts is what the next start reads.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { DEFAULT_TIMING, type CoreConfig } from '../core/types.js';
import type { ResyncRate } from '../storage/resync-rate.js';
import { DEFAULT_RETRY, WEBHOOK_NAME_RE, type HttpReceiverConfig, type NotificationsConfig, type SmtpReceiverConfig, type WebhookConfig } from '../notify/receivers.js';
import { HEARTBEAT_TIMEOUT_MS_MIN, HEARTBEAT_TIMEOUT_MS_MAX } from '../qemu/vm-spec.js';
import { parseStorageGroups, type StorageGroupConfig } from '../storage/storage-group.js';

export interface AlinkPathConfig {
  /** `alink1`, `alink2`: also the health component it reports on. */
  name: 'alink1' | 'alink2';
  /** This host's address on the cable and the peer's. */
  local: string;
  peer: string;
  /** The listener's port (on the host with the larger id). */
  port: number;
  /** The cable's broadcast address: pairing discovery runs on the first A-Link (the private network). */
  broadcast: string;
}

export interface QuorumServerConfig {
  /** The server's id in the pair (its name), preferred first. */
  id: string;
  address: string;
  port: number;
  /** The server's CA certificate (from `lockstep-quorum init`), a file in this host's data directory. */
  ca: string;
}

/** Failure-detection timing: the core's own fields (see `CoreConfig` in src/core/types.ts), and the health check interval. */
export type TimingConfig = Pick<CoreConfig, 'heartbeatIntervalMs' | 'peerTimeoutMs' | 'pairLeaseMs' | 'quorumLeaseMs' | 'quorumRetryMs' | 'fenceMarginMs'> & {
  healthIntervalMs: number;
};

/** The management API (HTTPS on the management network: users, roles, audit; docs/api.md). */
export interface ManagementApiConfig {
  /** The address it listens on: this host's management address (0.0.0.0 or :: for all). */
  address: string;
  port: number;
  /** The operator's certificate and key (PEM); both null: a self-signed one made once in the state directory. */
  certFile: string | null;
  keyFile: string | null;
  /** A session ends after this long without a request, and this long after login in any case. */
  sessionIdleMs: number;
  sessionMaxMs: number;
  /** A bearer token `/metrics` accepts besides a session (a Prometheus scraper has none); null: sessions only. */
  metricsToken: string | null;
}

export interface DaemonConfig {
  /** The host's name in the pair (`host1`, `host2`, or any name an operator gives). */
  host: string;
  /** The host's own data directory: state, run files, logs (and the VM disks of the default storage group). Never another host's. */
  dataDir: string;
  /** Where this host keeps volumes (src/storage/storage-group.ts); default: `default` at `<dataDir>/disks`. */
  storageGroups: StorageGroupConfig[];
  /** The local API's unix socket (root's access; the management network has `managementApi`). */
  apiSocket: string;
  /** The bridge on this host that the guests' taps join (the business network). */
  businessBridge: string;
  /**
   * The business network's uplink (health check): the physical port, not the bridge — a bridge keeps
   * carrier while any guest's tap is up, so only the uplink shows the network is gone. Default: the bridge.
   */
  businessInterface: string;
  /** The management network interface (health check); null: not checked. */
  mgmtInterface: string | null;
  /** `auto` proves KVM works before using it, else TCG. */
  accel: 'auto' | 'kvm' | 'tcg';
  pair: {
    /** The pair's name: the quorum servers know the pair by it; the pair CA carries it. */
    id: string;
    peer: string;
    /** Shared by both hosts' configs; proves each to the other while pairing (≥ 16 characters). */
    secret: string;
    /** With no quorum server: the host that keeps its VMs when the A-Links fail (default: the smaller id). */
    tiebreakWinner: string;
  };
  alink: AlinkPathConfig[];
  quorum: QuorumServerConfig[];
  timing: TimingConfig;
  /** UDP port of pairing discovery beacons and TCP port of the pairing exchange. */
  pairingPorts: { discovery: number; exchange: number };
  /**
   * TCP ports on the A-Link addresses: disk replication streams (the owner's mirror into this host's copy),
   * incoming live migrations, and FT checkpoint streams (the owner's checkpoints into this host's store).
   */
  dataPorts: { replication: number; migration: number; checkpoint: number };
  /** FT protection (docs/ft.md). */
  ft: FtConfig;
  /** How fast a disk resync copies, and how much it yields while the guest does I/O (storage/resync-rate.ts). */
  resync: ResyncRate;
  /**
   * SplitSite: the largest A-Link round trip (ms) at which each protection level runs. The defaults are
   * everRun's (2 ms FT, 10 ms HA); a site may only raise them knowingly (the lab does: docs/lab.md).
   */
  rttLimitMs: { ft: number; ha: number };
  /** A guest that has sent heartbeats and then, while running, sends none for this long is hung (qemu/guest-heartbeat.ts). */
  guestHeartbeatTimeoutMs: number;
  /** e-Alerts, SNMP traps, Call Home and webhooks for the core's alerts (docs/notifications.md); null: none. */
  notifications: NotificationsConfig | null;
  /** The management API; null: not served (the local socket API only). */
  managementApi: ManagementApiConfig | null;
  /** Who owns and runs this system, and where it stands (everRun's owner information); null: not given. */
  owner: OwnerInfo | null;
}

/** The sections the preference setters rewrite while lockstepd runs (src/daemon/live-preferences.ts). */
export const LIVE_SECTIONS = ['owner', 'notifications', 'resync'] as const;
export type LiveSection = (typeof LIVE_SECTIONS)[number];

export interface FtConfig {
  /** How long the guest runs between two checkpoints (the pause comes on top). */
  epochMs: number;
  /**
   * Where FT VMs' RAM lives as files: the owner's guest RAM (its checkpoint engine reads it) and the
   * backup's checkpoint stores. tmpfs: a store's image becomes a resumed guest's RAM.
   */
  memoryDir: string;
}

/** 100 ms epochs: on the lab's 2 cores a cycle (pause, diff, send, commit) takes 60–80 ms (docs/ft.md). */
export const DEFAULT_FT_EPOCH_MS = 100;
export const FT_EPOCH_MS_RANGE = { min: 20, max: 2000 } as const;

/** Shown in the preferences for whoever answers an alert; every field optional but the name. */
export interface OwnerInfo {
  name: string;
  contact: string | null;
  email: string | null;
  phone: string | null;
  site: string | null;
}

const OWNER_KEYS = ['name', 'contact', 'email', 'phone', 'site'] as const;
const OWNER_TEXT_MAX = 200;

/** A resync yields to a busy guest by default, and is otherwise as fast as the link (docs/ha.md). */
export const DEFAULT_RESYNC_MIBPS = { max: null, busy: 64 } as const;

export const DEFAULT_DAEMON_TIMING: TimingConfig = {
  heartbeatIntervalMs: DEFAULT_TIMING.heartbeatIntervalMs,
  peerTimeoutMs: DEFAULT_TIMING.peerTimeoutMs,
  pairLeaseMs: DEFAULT_TIMING.pairLeaseMs,
  quorumLeaseMs: DEFAULT_TIMING.quorumLeaseMs,
  quorumRetryMs: DEFAULT_TIMING.quorumRetryMs,
  fenceMarginMs: DEFAULT_TIMING.fenceMarginMs,
  healthIntervalMs: 500,
};

const NAME = /^[a-z][a-z0-9-]{0,30}$/;
const PAIR_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export function parseDaemonConfig(raw: unknown, source = 'config'): DaemonConfig {
  const bad = (key: string, why: string, value?: unknown): never => {
    throw new LockstepError('INVALID_SPEC', `${source}: '${key}' ${why}${value === undefined ? '' : ` (got ${JSON.stringify(value)})`}`, { source, key });
  };
  const obj = (v: unknown, key: string): Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : bad(key, 'must be a JSON object');
  const str = (o: Record<string, unknown>, key: string, at: string, fallback?: string): string => {
    const v = o[key] ?? fallback;
    return typeof v === 'string' && v !== '' ? v : bad(at, 'must be a non-empty string', v);
  };
  const matching = (v: string, re: RegExp, at: string, rule: string): string => (re.test(v) ? v : bad(at, `must match ${rule}`, v));
  const port = (o: Record<string, unknown>, key: string, at: string, fallback?: number): number => {
    const v = o[key] ?? fallback;
    return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : bad(at, 'must be a TCP/UDP port (1–65535)', v);
  };
  const ms = (o: Record<string, unknown>, key: string, fallback: number): number => {
    const v = o[key] ?? fallback;
    return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 600_000 ? v : bad(`timing.${key}`, 'must be an integer number of ms from 1 to 600000', v);
  };

  const o = obj(raw, 'config');
  const host = matching(str(o, 'host', 'host'), NAME, 'host', '[a-z][a-z0-9-]{0,30}');
  const dataDir = str(o, 'dataDir', 'dataDir');
  if (!path.isAbsolute(dataDir)) bad('dataDir', 'must be an absolute path', dataDir);
  const accel = str(o, 'accel', 'accel', 'auto');
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') bad('accel', 'must be auto, kvm or tcg', accel);

  const pairRaw = obj(o['pair'], 'pair');
  const peer = matching(str(pairRaw, 'peer', 'pair.peer'), NAME, 'pair.peer', '[a-z][a-z0-9-]{0,30}');
  if (peer === host) bad('pair.peer', 'must not be this host', peer);
  const secret = str(pairRaw, 'secret', 'pair.secret');
  if (secret.length < 16) bad('pair.secret', 'must be at least 16 characters (it is all that proves the peer while pairing)');
  const tiebreakWinner = str(pairRaw, 'tiebreakWinner', 'pair.tiebreakWinner', host < peer ? host : peer);
  if (tiebreakWinner !== host && tiebreakWinner !== peer) bad('pair.tiebreakWinner', `must be ${host} or ${peer}`, tiebreakWinner);

  const alinkRaw = o['alink'];
  if (!Array.isArray(alinkRaw) || alinkRaw.length < 1 || alinkRaw.length > 2) bad('alink', 'must list one or two A-Link paths');
  const alink = (alinkRaw as unknown[]).map((p, i): AlinkPathConfig => {
    const at = `alink[${i}]`;
    const po = obj(p, at);
    const name = str(po, 'name', `${at}.name`);
    if (name !== 'alink1' && name !== 'alink2') bad(`${at}.name`, 'must be alink1 or alink2', name);
    const addr = (key: string): string => matching(str(po, key, `${at}.${key}`), IPV4, `${at}.${key}`, 'an IPv4 address');
    return { name: name as 'alink1' | 'alink2', local: addr('local'), peer: addr('peer'), port: port(po, 'port', `${at}.port`), broadcast: addr('broadcast') };
  });
  if (new Set(alink.map((a) => a.name)).size !== alink.length) bad('alink', 'names each path once');

  const quorumRaw = o['quorum'] ?? [];
  if (!Array.isArray(quorumRaw) || quorumRaw.length > 2) bad('quorum', 'must list 0, 1 or 2 quorum servers (preferred first)');
  const quorum = (quorumRaw as unknown[]).map((q, i): QuorumServerConfig => {
    const at = `quorum[${i}]`;
    const qo = obj(q, at);
    const ca = str(qo, 'ca', `${at}.ca`);
    if (!path.isAbsolute(ca)) bad(`${at}.ca`, 'must be an absolute path', ca);
    return {
      id: matching(str(qo, 'id', `${at}.id`), NAME, `${at}.id`, '[a-z][a-z0-9-]{0,30}'),
      address: str(qo, 'address', `${at}.address`),
      port: port(qo, 'port', `${at}.port`),
      ca,
    };
  });
  if (new Set(quorum.map((q) => q.id)).size !== quorum.length) bad('quorum', 'names each server once');

  const t = o['timing'] === undefined ? {} : obj(o['timing'], 'timing');
  const d = DEFAULT_DAEMON_TIMING;
  const timing: TimingConfig = {
    heartbeatIntervalMs: ms(t, 'heartbeatIntervalMs', d.heartbeatIntervalMs),
    peerTimeoutMs: ms(t, 'peerTimeoutMs', d.peerTimeoutMs),
    pairLeaseMs: ms(t, 'pairLeaseMs', d.pairLeaseMs),
    quorumLeaseMs: ms(t, 'quorumLeaseMs', d.quorumLeaseMs),
    quorumRetryMs: ms(t, 'quorumRetryMs', d.quorumRetryMs),
    fenceMarginMs: ms(t, 'fenceMarginMs', d.fenceMarginMs),
    healthIntervalMs: ms(t, 'healthIntervalMs', d.healthIntervalMs),
  };
  // The relations the core's safety argument leans on (docs/core.md): detection before the lease runs out,
  // and a fence margin that leaves room to stop.
  if (timing.heartbeatIntervalMs * 2 > timing.peerTimeoutMs) bad('timing.peerTimeoutMs', 'must be at least two heartbeat intervals', timing.peerTimeoutMs);
  if (timing.peerTimeoutMs >= timing.pairLeaseMs) bad('timing.pairLeaseMs', 'must be longer than timing.peerTimeoutMs', timing.pairLeaseMs);
  if (timing.fenceMarginMs * 2 >= timing.pairLeaseMs) bad('timing.fenceMarginMs', 'must be less than half of timing.pairLeaseMs', timing.fenceMarginMs);

  const resyncRaw = o['resync'] === undefined ? {} : obj(o['resync'], 'resync');
  const mibps = (key: 'maxMiBps' | 'busyMiBps', fallback: number | null): number | null => {
    const v = key in resyncRaw ? resyncRaw[key] : fallback;
    if (v === null) return null;
    return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= 1_000_000 ? Math.round(v * 1024 * 1024) : bad(`resync.${key}`, 'must be a number of MiB/s above 0, or null for no limit', v);
  };
  const resync: ResyncRate = { maxBytesPerSec: mibps('maxMiBps', DEFAULT_RESYNC_MIBPS.max), busyBytesPerSec: mibps('busyMiBps', DEFAULT_RESYNC_MIBPS.busy) };

  const heartbeatRaw = o['guestHeartbeatTimeoutMs'] ?? 15_000;
  const heartbeatTimeout =
    typeof heartbeatRaw === 'number' && Number.isInteger(heartbeatRaw) && heartbeatRaw >= HEARTBEAT_TIMEOUT_MS_MIN && heartbeatRaw <= HEARTBEAT_TIMEOUT_MS_MAX
      ? heartbeatRaw
      : bad('guestHeartbeatTimeoutMs', `must be an integer number of ms from ${HEARTBEAT_TIMEOUT_MS_MIN} to ${HEARTBEAT_TIMEOUT_MS_MAX}`, heartbeatRaw);

  const splitsite = o['splitsite'] === undefined ? {} : obj(o['splitsite'], 'splitsite');
  const limit = (key: 'ftRttLimitMs' | 'haRttLimitMs', fallback: number): number => {
    const v = key in splitsite ? splitsite[key] : fallback;
    return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= 10_000 ? v : bad(`splitsite.${key}`, 'must be a number of ms above 0, at most 10000', v);
  };
  for (const k of Object.keys(splitsite)) if (k !== 'ftRttLimitMs' && k !== 'haRttLimitMs') bad(`splitsite.${k}`, 'is not a field of splitsite (ftRttLimitMs, haRttLimitMs)', splitsite[k]);
  const rttLimitMs = { ft: limit('ftRttLimitMs', DEFAULT_TIMING.rttLimitMs.ft), ha: limit('haRttLimitMs', DEFAULT_TIMING.rttLimitMs.ha) };
  if (rttLimitMs.ft > rttLimitMs.ha) bad('splitsite.ftRttLimitMs', 'must not be above splitsite.haRttLimitMs (FT needs the shorter round trip)', rttLimitMs.ft);

  const pairing = o['pairingPorts'] === undefined ? {} : obj(o['pairingPorts'], 'pairingPorts');
  const data = o['dataPorts'] === undefined ? {} : obj(o['dataPorts'], 'dataPorts');
  const dataPorts = {
    replication: port(data, 'replication', 'dataPorts.replication', 7793),
    migration: port(data, 'migration', 'dataPorts.migration', 7794),
    checkpoint: port(data, 'checkpoint', 'dataPorts.checkpoint', 7795),
  };
  if (new Set(Object.values(dataPorts)).size !== 3) bad('dataPorts', 'replication, migration and checkpoint must be three different ports', data);
  return {
    host,
    dataDir,
    storageGroups: parseStorageGroups(o['storageGroups'], dataDir, bad),
    apiSocket: str(o, 'apiSocket', 'apiSocket', path.join(dataDir, 'run', 'lockstepd.sock')),
    businessBridge: str(o, 'businessBridge', 'businessBridge', 'br-biz'),
    businessInterface: str(o, 'businessInterface', 'businessInterface', str(o, 'businessBridge', 'businessBridge', 'br-biz')),
    mgmtInterface: o['mgmtInterface'] === null || o['mgmtInterface'] === undefined ? null : str(o, 'mgmtInterface', 'mgmtInterface'),
    accel: accel as DaemonConfig['accel'],
    pair: { id: matching(str(pairRaw, 'id', 'pair.id'), PAIR_ID, 'pair.id', '[a-z0-9][a-z0-9-]{0,62}'), peer, secret, tiebreakWinner },
    alink,
    quorum,
    timing,
    pairingPorts: { discovery: port(pairing, 'discovery', 'pairingPorts.discovery', 7791), exchange: port(pairing, 'exchange', 'pairingPorts.exchange', 7792) },
    dataPorts,
    ft: parseFt(o['ft'], host, bad),
    resync,
    rttLimitMs,
    guestHeartbeatTimeoutMs: heartbeatTimeout,
    notifications: parseNotifications(o['notifications'], bad),
    managementApi: parseManagementApi(o['managementApi'], bad),
    owner: parseOwner(o['owner'], bad),
  };
}

/** The `ft` section: `{epochMs?, memoryDir?}`. */
function parseFt(raw: unknown, host: string, bad: Bad): FtConfig {
  if (raw === undefined || raw === null) return { epochMs: DEFAULT_FT_EPOCH_MS, memoryDir: `/dev/shm/lockstep-${host}` };
  if (typeof raw !== 'object' || Array.isArray(raw)) return bad('ft', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'epochMs' && k !== 'memoryDir') bad(`ft.${k}`, 'is not a field of ft (epochMs, memoryDir)', o[k]);
  const epochMs = o['epochMs'] ?? DEFAULT_FT_EPOCH_MS;
  if (typeof epochMs !== 'number' || !Number.isInteger(epochMs) || epochMs < FT_EPOCH_MS_RANGE.min || epochMs > FT_EPOCH_MS_RANGE.max) {
    bad('ft.epochMs', `must be an integer number of ms from ${FT_EPOCH_MS_RANGE.min} to ${FT_EPOCH_MS_RANGE.max}`, epochMs);
  }
  const memoryDir = o['memoryDir'] ?? `/dev/shm/lockstep-${host}`;
  if (typeof memoryDir !== 'string' || !path.isAbsolute(memoryDir) || memoryDir.length > 200) bad('ft.memoryDir', 'must be an absolute path of at most 200 characters', memoryDir);
  return { epochMs: epochMs as number, memoryDir: memoryDir as string };
}

// ── notifications (src/notify/, docs/notifications.md) ─────────────────────────────────────────────────

type Bad = (key: string, why: string, value?: unknown) => never;

/** An envelope address: local@domain, nothing SMTP or a header would read as syntax (spaces, brackets, line breaks). */
const MAIL_ADDRESS = /^[^\s<>()",;:@\\]{1,64}@[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
/** A receiver's host: a DNS name or an IPv4/IPv6 address. */
const RECEIVER_HOST = /^([A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45})$/;
/** SNMP communities: printable ASCII, as agents and receivers accept them. */
const COMMUNITY = /^[\x21-\x7e]{1,64}$/;
/** Limits on lists, so that one alert makes a bounded number of deliveries. */
const NOTIFY_RECIPIENTS_MAX = 20;
const NOTIFY_TARGETS_MAX = 8;

/** The `notifications` section; absent (or null): no notifications. Unknown keys are refused (a typo would silence alerts). */
function parseNotifications(raw: unknown, bad: Bad): NotificationsConfig | null {
  if (raw === undefined || raw === null) return null;
  const obj = (v: unknown, at: string, keys: readonly string[]): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(at, 'must be a JSON object');
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!keys.includes(k)) bad(`${at}.${k}`, `is not a known field (known: ${keys.join(', ')})`);
    return o;
  };
  const str = (o: Record<string, unknown>, key: string, at: string): string => {
    const v = o[key];
    return typeof v === 'string' && v !== '' && !/[\r\n]/.test(v) ? v : bad(`${at}.${key}`, 'must be a non-empty string on one line', v);
  };
  const optional = <T>(o: Record<string, unknown>, key: string, read: () => T): T | null => (o[key] === undefined || o[key] === null ? null : read());
  const absolute = (o: Record<string, unknown>, key: string, at: string): string | null =>
    optional(o, key, () => {
      const p = str(o, key, at);
      return path.isAbsolute(p) ? p : bad(`${at}.${key}`, 'must be an absolute path', p);
    });
  const port = (o: Record<string, unknown>, at: string, fallback: number): number => {
    const v = o['port'] ?? fallback;
    return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : bad(`${at}.port`, 'must be a TCP/UDP port (1–65535)', v);
  };
  const host = (o: Record<string, unknown>, at: string): string => {
    const h = str(o, 'host', at);
    return RECEIVER_HOST.test(h) ? h : bad(`${at}.host`, 'must be a host name or an IP address', h);
  };
  const url = (o: Record<string, unknown>, at: string, protocols: readonly string[]): string => {
    // The URL is not echoed in an error: its path or query is often the receiver's token (docs/notifications.md).
    const v = o['url'];
    if (typeof v !== 'string' || v === '' || /[\r\n]/.test(v)) return bad(`${at}.url`, 'must be a non-empty string on one line');
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return bad(`${at}.url`, 'must be an absolute URL');
    }
    return protocols.includes(u.protocol) ? v : bad(`${at}.url`, `must be an ${protocols.map((p) => p.replace(':', '')).join(' or ')} URL`, u.protocol);
  };
  // Not echoed: a list of webhooks or SNMP targets holds their secrets.
  const list = (v: unknown, at: string, max: number): unknown[] => (Array.isArray(v) && v.length <= max ? v : bad(at, `must be a list of at most ${max}`));
  const ms = (o: Record<string, unknown>, key: string, fallback: number, min: number, max: number): number => {
    const v = o[key] ?? fallback;
    return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : bad(`notifications.retry.${key}`, `must be an integer number of ms from ${min} to ${max}`, v);
  };

  const n = obj(raw, 'notifications', ['minSeverity', 'smtp', 'snmp', 'callHome', 'webhooks', 'retry']);
  const minSeverity = n['minSeverity'] ?? 'info';
  if (minSeverity !== 'info' && minSeverity !== 'warning' && minSeverity !== 'critical') bad('notifications.minSeverity', 'must be info, warning or critical', minSeverity);

  const smtp = optional(n, 'smtp', (): SmtpReceiverConfig => {
    const at = 'notifications.smtp';
    const s = obj(n['smtp'], at, ['host', 'port', 'from', 'to', 'starttls', 'user', 'passwordFile', 'caFile']);
    const address = (v: unknown, key: string): string => (typeof v === 'string' && MAIL_ADDRESS.test(v) ? v : bad(key, 'must be an e-mail address (local@domain)', v));
    const to = list(s['to'], `${at}.to`, NOTIFY_RECIPIENTS_MAX).map((v, i) => address(v, `${at}.to[${i}]`));
    if (to.length === 0) bad(`${at}.to`, 'must name at least one recipient');
    if (new Set(to).size !== to.length) bad(`${at}.to`, 'names a recipient twice');
    const starttls = s['starttls'] ?? 'required';
    if (starttls !== 'required' && starttls !== 'opportunistic' && starttls !== 'off') bad(`${at}.starttls`, 'must be required, opportunistic or off', starttls);
    const user = optional(s, 'user', () => str(s, 'user', at));
    const passwordFile = absolute(s, 'passwordFile', at);
    if ((user === null) !== (passwordFile === null)) bad(`${at}.${user === null ? 'user' : 'passwordFile'}`, 'must be given with the other: AUTH needs both user and passwordFile');
    return {
      host: host(s, at),
      port: port(s, at, 25),
      from: address(s['from'], `${at}.from`),
      to,
      starttls: starttls as SmtpReceiverConfig['starttls'],
      user,
      passwordFile,
      caFile: absolute(s, 'caFile', at),
    };
  });

  const snmp = optional(n, 'snmp', (): NotificationsConfig['snmp'] => {
    const s = obj(n['snmp'], 'notifications.snmp', ['targets']);
    const targets = list(s['targets'], 'notifications.snmp.targets', NOTIFY_TARGETS_MAX).map((t, i) => {
      const at = `notifications.snmp.targets[${i}]`;
      const o = obj(t, at, ['host', 'port', 'community']);
      // The community is SNMPv2c's password: an error names the field, never echoes it.
      const community = o['community'];
      if (typeof community !== 'string' || community === '') return bad(`${at}.community`, 'must be a non-empty string');
      if (!COMMUNITY.test(community)) bad(`${at}.community`, 'must be 1–64 printable ASCII characters');
      return { host: host(o, at), port: port(o, at, 162), community };
    });
    if (targets.length === 0) bad('notifications.snmp.targets', 'must name at least one trap receiver');
    if (new Set(targets.map((t) => `${t.host}:${t.port}`)).size !== targets.length) bad('notifications.snmp.targets', 'names a receiver (host and port) twice');
    return { targets };
  });

  const httpReceiver = (v: unknown, at: string, protocols: readonly string[]): HttpReceiverConfig => {
    const o = obj(v, at, ['url', 'caFile']);
    const u = url(o, at, protocols);
    const caFile = absolute(o, 'caFile', at);
    if (caFile !== null && !u.startsWith('https:')) bad(`${at}.caFile`, 'only applies to an https URL');
    return { url: u, caFile };
  };
  // Call Home carries the system's details to the support organisation, over networks not the site's: HTTPS only.
  const callHome = optional(n, 'callHome', () => httpReceiver(n['callHome'], 'notifications.callHome', ['https:']));
  const webhooks = list(n['webhooks'] ?? [], 'notifications.webhooks', NOTIFY_TARGETS_MAX).map((w, i): WebhookConfig => {
    const at = `notifications.webhooks[${i}]`;
    const name = typeof w === 'object' && w !== null ? (w as Record<string, unknown>)['name'] : undefined;
    const { name: _checkedHere, ...rest } = obj(w, at, ['url', 'caFile', 'name']);
    const hook = httpReceiver(rest, at, ['http:', 'https:']);
    if (name === undefined) return hook;
    return typeof name === 'string' && WEBHOOK_NAME_RE.test(name) ? { ...hook, name } : bad(`${at}.name`, 'must be a letter, then letters, digits or -, at most 32 (webhook:NAME)', name);
  });
  if (new Set(webhooks.map((w) => w.url)).size !== webhooks.length) bad('notifications.webhooks', 'names a URL twice');
  const named = webhooks.flatMap((w) => (w.name === undefined ? [] : [w.name]));
  if (new Set(named).size !== named.length) bad('notifications.webhooks', 'gives a name twice');
  if (!smtp && !snmp && !callHome && webhooks.length === 0) bad('notifications', 'names no receiver: configure smtp, snmp, callHome or webhooks, or leave the section out');

  const r = n['retry'] === undefined ? {} : obj(n['retry'], 'notifications.retry', ['initialMs', 'maxMs', 'giveUpAfterMs']);
  const initialMs = ms(r, 'initialMs', DEFAULT_RETRY.initialMs, 10, 600_000);
  const maxMs = ms(r, 'maxMs', Math.max(DEFAULT_RETRY.maxMs, initialMs), initialMs, 86_400_000);
  const giveUpAfterMs = ms(r, 'giveUpAfterMs', DEFAULT_RETRY.giveUpAfterMs, maxMs, 30 * 86_400_000);
  return { minSeverity: minSeverity as NotificationsConfig['minSeverity'], smtp, snmp, callHome, webhooks, retry: { initialMs, maxMs, giveUpAfterMs } };
}

/** The `owner` section: one-line texts of printable characters, a name at least. */
function parseOwner(raw: unknown, bad: Bad): OwnerInfo | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) return bad('owner', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!(OWNER_KEYS as readonly string[]).includes(k)) bad(`owner.${k}`, `is not a known field (known: ${OWNER_KEYS.join(', ')})`);
  const text = (key: (typeof OWNER_KEYS)[number]): string | null => {
    const v = o[key];
    if (v === undefined || v === null) return key === 'name' ? bad('owner.name', 'is required in an owner section') : null;
    // Control characters would break the CLI's tables and a mail's header lines.
    return typeof v === 'string' && v.trim() !== '' && v.length <= OWNER_TEXT_MAX && !/[\x00-\x1f\x7f]/.test(v) ? v : bad(`owner.${key}`, `must be text on one line, 1 to ${OWNER_TEXT_MAX} characters`, v);
  };
  return { name: text('name')!, contact: text('contact'), email: text('email'), phone: text('phone'), site: text('site') };
}

// ── the management API (src/api/, docs/api.md) ──────────────────────────────────────────────────────────

export const DEFAULT_MANAGEMENT_PORT = 7443;
const MANAGEMENT_KEYS = ['address', 'port', 'certFile', 'keyFile', 'sessionIdleMinutes', 'sessionMaxHours', 'metricsToken'] as const;
/** Long enough that it cannot be guessed (`openssl rand -hex 32` makes one), in the characters a bearer token has. */
const METRICS_TOKEN_PATTERN = /^[A-Za-z0-9_-]{32,128}$/;

/** The `managementApi` section; absent (or null): not served. Unknown keys are refused. */
function parseManagementApi(raw: unknown, bad: (key: string, why: string, value?: unknown) => never): ManagementApiConfig | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) return bad('managementApi', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!(MANAGEMENT_KEYS as readonly string[]).includes(k)) bad(`managementApi.${k}`, `is not a known field (known: ${MANAGEMENT_KEYS.join(', ')})`);
  const address = o['address'];
  if (typeof address !== 'string' || isIP(address) === 0) bad('managementApi.address', 'must be an IPv4 or IPv6 address', address);
  const port = o['port'] ?? DEFAULT_MANAGEMENT_PORT;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) bad('managementApi.port', 'must be a TCP port (1–65535)', port);
  const file = (key: 'certFile' | 'keyFile'): string | null => {
    const v = o[key];
    if (v === undefined || v === null) return null;
    return typeof v === 'string' && path.isAbsolute(v) ? v : bad(`managementApi.${key}`, 'must be an absolute path', v);
  };
  const certFile = file('certFile');
  const keyFile = file('keyFile');
  if ((certFile === null) !== (keyFile === null)) bad(certFile === null ? 'managementApi.certFile' : 'managementApi.keyFile', 'must be given with the other of certFile and keyFile');
  const whole = (key: string, fallback: number, max: number): number => {
    const v = o[key] ?? fallback;
    return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= max ? v : bad(`managementApi.${key}`, `must be an integer from 1 to ${max}`, v);
  };
  const idleMinutes = whole('sessionIdleMinutes', 30, 24 * 60);
  const maxHours = whole('sessionMaxHours', 12, 7 * 24);
  if (idleMinutes > maxHours * 60) bad('managementApi.sessionIdleMinutes', 'must not be longer than sessionMaxHours', idleMinutes);
  const metricsToken = o['metricsToken'] ?? null;
  if (metricsToken !== null && (typeof metricsToken !== 'string' || !METRICS_TOKEN_PATTERN.test(metricsToken))) {
    // The value is a secret: the error names the field, never echoes it.
    bad('managementApi.metricsToken', 'must be 32 to 128 letters, digits, _ or - (e.g. `openssl rand -hex 32`)');
  }
  return { address: address as string, port: port as number, certFile, keyFile, sessionIdleMs: idleMinutes * 60_000, sessionMaxMs: maxHours * 3600_000, metricsToken: metricsToken as string | null };
}
