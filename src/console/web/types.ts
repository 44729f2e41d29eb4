/**
 * The shapes the console reads from the management API (docs/api.md, GET /api/openapi.json), as far as it
 * uses them. The browser cannot import the daemon's modules (they are not served, and hold Node code), so
 * these are written out; test/console/console-browser.test.ts renders every page from real answers.
 */

export type Role = 'read-only' | 'platform-manager' | 'administrator';

export interface User {
  name: string;
  fullName: string;
  groups: string[];
  role: Role | null;
  createdAt: string;
  passwordChangedAt: string;
}

export interface Group {
  name: string;
  role: Role;
  description: string | null;
  builtin: boolean;
  members: string[];
}

export interface CoreView {
  host: string;
  peer: string;
  state: string;
  epoch: number;
  authority: string;
  health: number;
  peerHeard: boolean;
  peerState: string | null;
  peerHealth: number | null;
  activeQuorum: string | null;
  rttMs: number | null;
  maintenance: boolean;
  declaredDown: boolean;
}

/** An FT protection run on this host (lockstepd's `RunningVm.ft`, src/ft/ft-primary.ts). */
export interface FtRunView {
  run: number;
  state: string;
  epochMs: number;
  epochsPerSec: number | null;
  lastPauseMs: number | null;
  pauseP50Ms: number | null;
  pauseP99Ms: number | null;
  sentEpoch: number;
  peerCommittedEpoch: number;
  lagEpochs: number;
  earlyEpochs: number;
  heldOutputBytes: number;
  lostBecause: string | null;
}

export interface MigrationView {
  id: string;
  phase: 'migrating' | 'completed' | 'failed';
  /** QEMU's multifd connections beside the main one; 0: one stream. */
  multifd: number;
  transferredBytes: number | null;
  remainingBytes: number | null;
  totalBytes: number | null;
  mbps: number | null;
  etaMs: number | null;
  downtimeMs?: number;
  totalMs?: number;
  error?: string;
}

/** A snapshot or image a volume is made from at its VM's first start (docs/snapshots.md). */
export interface ImageSource {
  host: string;
  image: string;
  storageGroup: string;
  file: string;
}

export interface VmDisk {
  sizeMiB: number;
  storageGroup: string;
  format: string;
  source?: ImageSource;
}

export interface VmHardware {
  vcpus?: number;
  memoryMiB?: number;
  /** The guest's disks, its vda first. */
  disks?: VmDisk[];
  /** The one disk of a record from before several disks (a one-disk VM's record has both). */
  diskMiB?: number;
  disk?: { storageGroup?: string; format?: string };
  guest?: { kernel: string; initrd: string; cmdline: string };
  /** The guest's NICs, its eth0 first. */
  nics?: { mac: string; address: string }[];
  /** The one NIC of a record from before several NICs (a one-NIC VM's record has both). */
  nic?: { mac: string; address: string };
  /** A CD drive (docs/vcd.md): the virtual CD in it by name and SHA-256, or null when empty; absent: no drive. */
  cdrom?: { medium: { vcd: string; sha256: string } | null };
  /** With diskMiB: the snapshot or image that disk's volume is made from; absent: a blank volume. */
  source?: ImageSource;
}

export interface Vm {
  name: string;
  owner: string;
  protection: string;
  desired: string;
  state: string;
  hardware: VmHardware;
  local: {
    instance: number;
    state: string;
    pid: number | null;
    startedAt: string | null;
    mirror: unknown;
    migration: MigrationView | null;
    ft?: FtRunView | null;
    resumedFrom?: { epoch: number; totalMs: number; resumeMs: number } | null;
  } | null;
  lastExit: { cause?: string; at?: string; [k: string]: unknown } | null;
  copies?: { here: boolean | null; peer: boolean | null };
}

export interface AlinkPath {
  name: string;
  role: 'dial' | 'listen';
  up: boolean;
  changedAt: number | null;
  srttMs: number | null;
  lastError: string | null;
  port: number;
  droppedFrames: number;
}

export interface Status {
  host: string;
  pid: number;
  startedAt: string;
  incarnation: number;
  pairing: { state: 'pairing' | 'paired'; lastError: string | null };
  core: CoreView | null;
  alink: AlinkPath[] | null;
  health: HealthComponents;
  vms: Vm[];
}

export interface LogEntry {
  id: number;
  wallMs: number;
  atMs: number;
  host: string;
  kind: 'event' | 'alert';
  severity: 'info' | 'warning' | 'critical' | null;
  code: string | null;
  what: string;
  cause: string;
}

export interface AuditEntry {
  id: string;
  kind: 'user' | 'event' | 'alert';
  at: string;
  host: string;
  user: string | null;
  client: string | null;
  operation: string | null;
  method: string | null;
  path: string | null;
  target: string | null;
  result: string | null;
  status: number | null;
  severity: string | null;
  code: string | null;
  message: string | null;
  cause: string | null;
}

export interface Volume {
  name: string;
  vm: string;
  /** The disk the guest sees it as: vda, vdb, … */
  disk: string;
  host: string;
  owner: string;
  protection: string;
  storageGroup: string;
  format: string;
  sizeBytes: number;
  path: string | null;
  allocatedBytes: number | null;
  state: string;
  reason: string;
  sync: { copiedBytes: number | null; totalBytes: number | null; bytesPerSec: number | null; etaMs: number | null } | null;
}

export interface StorageGroup {
  name: string;
  path: string;
  sizeMiB: number | null;
  capacityBytes: number | null;
  usedBytes: number;
  freeBytes: number | null;
  volumeCount: number;
  error: string | null;
}

/** `GET /v1/vcds` (src/daemon/vcd-routes.ts): a virtual CD of this host. */
/** A snapshot or imported image of this host (`GET /v1/snapshots`, src/daemon/snapshot-routes.ts). */
export interface Snapshot {
  id: string;
  kind: 'snapshot' | 'image';
  vm: string | null;
  host: string;
  storageGroup: string;
  file: string;
  format: 'qcow2' | 'raw';
  created: string;
  virtualBytes: number;
  state: 'creating' | 'ready' | 'failed';
  description: string;
  error: string | null;
  path: string | null;
  fileBytes: number | null;
}

export interface Vcd {
  name: string;
  host: string;
  storageGroup: string;
  bytes: number;
  sha256: string;
  created: string;
  path: string;
}

/** `GET /v1/host/sensors` (src/daemon/sensor-routes.ts). */
export interface HostSensors {
  host: string;
  note: string | null;
  sensors: { chip: string; id: string; label: string; kind: 'temperature' | 'fan' | 'voltage'; value: number; min: number | null; max: number | null; critical: number | null; state: 'ok' | 'warning' | 'critical' }[];
}

export interface Network {
  name: 'alink1' | 'alink2' | 'mgmt' | 'business';
  role: 'alink' | 'management' | 'business';
  host: string;
  interface: string | null;
  bridge: string | null;
  state: 'up' | 'down' | 'missing' | 'not-configured' | 'unreadable';
  detail: string;
  health: 'ok' | 'degraded' | 'failed' | null;
  operstate: string | null;
  adminUp: boolean | null;
  carrier: boolean | null;
  speedMbps: number | null;
  mac: string | null;
  mtu: number | null;
  rxBytes: number | null;
  txBytes: number | null;
  bandwidth: { rxBytesPerSec: number | null; txBytesPerSec: number | null; overMs: number | null; sampledAt: string | null; reason: string | null };
  alink: { localAddress: string; peerAddress: string; connected: boolean | null; rttMs: number | null; lastError: string | null } | null;
}

/**
 * The peer's section of a pair answer (src/daemon/peer-report.ts' `PeerSection`): the peer's own, asked over
 * the A-Link, or why it is unavailable.
 */
export type PeerSection<T> = ({ host: string; state: 'available'; takenAt: string; receivedAt: string } & T) | { host: string; state: 'unavailable'; reason: string };

/** `GET /v1/networks`: this host's networks and the peer's section (src/daemon/network-routes.ts). */
export interface PairNetworks {
  host: string;
  networks: Network[];
  peer: PeerSection<{ networks: Network[] }>;
}

/** Each health component and its state; null before the host's first check. */
export type HealthComponents = Record<string, 'ok' | 'degraded' | 'failed'> | null;

/** `GET /v1/host/health`: this host's components and the peer's section (src/daemon/sensor-routes.ts). */
export interface PairHealth {
  host: string;
  components: HealthComponents;
  peer: PeerSection<{ components: HealthComponents }>;
}

/** What one delivery attempt came to (src/notify/outcome.ts). */
export type DeliveryOutcome = { ok: true; detail: string } | { ok: false; step: string; error: string; reply: string | null };

/** A notification receiver as GET /v1/notifications shows it: no secrets. */
export interface Receiver {
  name: string;
  kind: 'smtp' | 'snmp' | 'call-home' | 'webhook';
  target: string;
  settings: Record<string, unknown>;
  pending: number | null;
  lastDelivery: {
    alert: string;
    code: string;
    state: 'delivered' | 'retrying' | 'abandoned';
    attempts: number;
    at: string;
    detail: string | null;
    lastError: string | null;
    nextAttemptAt: string | null;
  } | null;
  lastTest: { at: string; durationMs: number; outcome: DeliveryOutcome } | null;
}

export interface Notifications {
  state: 'off' | 'failed' | 'on';
  error: string | null;
  minSeverity: 'info' | 'warning' | 'critical' | null;
  retry: { initialMs: number; maxMs: number; giveUpAfterMs: number } | null;
  receivers: Receiver[];
}

/** POST /v1/notifications/test and /v1/notifications/NAME/test. */
export interface TestAnswer {
  host: string;
  results: { receiver: string; kind: string; target: string; at: string; durationMs: number; outcome: DeliveryOutcome }[];
  delivered: number;
  failed: number;
}

/** GET /v1/preferences. */
export interface Preferences {
  host: string;
  pair: { id: string; peer: string; tiebreakWinner: string };
  owner: { name: string; contact: string | null; email: string | null; phone: string | null; site: string | null } | null;
  configFile: string;
  /** Each section: whether PUT /v1/preferences/SECTION changes it while lockstepd runs. */
  editable: Record<'owner' | 'notifications' | 'resync' | 'network' | 'quorum' | 'splitsite' | 'pair', boolean>;
  howToChange: string;
  /** The notifications section as its setter takes it back, secrets as {"keep": RECEIVER}; null: none. */
  notificationsConfig: Record<string, unknown> | null;
  network: {
    management: { interface: string | null; apiAddress: string | null; apiPort: number | null };
    business: { bridge: string; interface: string };
    alink: { name: string; local: string; peer: string; port: number; broadcast: string }[];
    dataPorts: { replication: number; migration: number; checkpoint: number };
  };
  quorum: { active: string | null; servers: { id: string; role: 'preferred' | 'alternate'; address: string; port: number; active: boolean }[] };
  clock: {
    now: string;
    timeZone: string;
    utcOffsetMinutes: number;
    ntp: { synchronized: boolean | null; source: string; detail: string; maxErrorMs: number | null; estimatedErrorMs: number | null };
  };
  notifications: Notifications;
  splitsite: { ftRttLimitMs: number; haRttLimitMs: number; alinkRttMs: number | null };
  resync: { maxMiBps: number | null; busyMiBps: number | null };
}

/** A series of `GET /v1/host/history` or `/v1/vms/NAME/history` (docs/api.md). */
export interface HistorySeries {
  id: string;
  family: string;
  unit: 'ratio' | 'cores' | 'bytes' | 'bytes/s';
  label: string;
  limit: number | null;
  error: string | null;
  /** `[wall-clock ms, value]`, oldest first. */
  points: [number, number][];
}

export interface HistoryAnswer {
  host: string;
  intervalMs: number;
  keptMs: number;
  series: HistorySeries[];
  /** A VM's history only: whether its QEMU ran on this host at the last round. */
  vm?: string;
  here?: boolean;
}

/** `GET /v1/vms/NAME/console-log` (docs/api.md#console-log): the end of the VM's serial log on this host. */
export interface ConsoleLog {
  vm: string;
  host: string;
  here: boolean;
  running: boolean;
  size: number;
  bytes: number;
  truncated: boolean;
  text: string;
}
