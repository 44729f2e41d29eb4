/**
 * lockstepd's resources as API routes, and the local API that serves them: HTTP with JSON bodies on a unix
 * socket in the host's run directory, under `/v1`. The lab and the CLI use it, unauthenticated: it is root's
 * local access. The management-network API (`src/api/management-server.ts`: HTTPS, users, roles, audit)
 * serves the same route table under `/api/v1`, each route's `access` saying the role it needs there.
 * Every change goes through the decision core as an operator command: the API never starts or stops a VM
 * itself, it asks, and answers with the core's verdict.
 */
import http from 'node:http';
import { rm } from 'node:fs/promises';
import { LockstepError, describeError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import type { OperatorCommand } from '../core/types.js';
import { DISKS_PER_VM_MAX, hardwareOf, hardwareRecord, nicInUse, NICS_PER_VM_MAX, parseVmDefinition, parseVmHardware, protectionProblem, PROTECTION_LEVELS, type VcdRef, type VmHardware } from './vm-definition.js';
import { withMedium } from './cdrom.js';
import { VCD_NAME_PATTERN } from '../storage/vcd.js';
import type { VmHardware as VmHardwareRecord } from '../core/types.js';
import type { CoreDriver, CoreView } from './core-driver.js';
import type { LastExit, MediumChange, RunningVm } from './vm-runner.js';
import type { LogEntry } from './state-db.js';
import { RouteTable, allowBody, errorReply, prepareRequest, prepareUpload, rawParams, readJsonBody, requestUrl, send, sendRefusal, type Reply, type Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import { ACCOUNT_ROUTES, type AccountsContext } from '../api/account-routes.js';
import { auditedAction } from '../api/audit-action.js';
import type { UserStore } from '../users/user-store.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { HealthSnapshot } from '../core/types.js';
import { VOLUME_FORMATS, type StorageGroupConfig } from '../storage/storage-group.js';
import { checkVolumeFits, storageGroupDetail, storageGroupStatuses, volumeContext, volumeStatus, volumeStatuses } from './volumes.js';
import { NETWORK_ROUTES } from './network-routes.js';
import { VCD_ROUTES } from './vcd-routes.js';
import type { VcdStore } from '../storage/vcd-store.js';
import { SENSOR_ROUTES } from './sensor-routes.js';
import type { SensorsView } from '../health/sensors.js';
import type { PeerView } from './peer-report.js';
import type { NetworkStatus } from './networks.js';
import { PREFERENCE_ROUTES, type PreferencesContext } from './preference-routes.js';
import type { HistoryView } from '../history/sampler.js';
import { HISTORY_ROUTES } from './history-routes.js';
import { CONSOLE_LOG_ROUTES } from './console-log-routes.js';
import { supportRoutes } from './support-routes.js';
import { SNAPSHOT_ID_PATTERN, SNAPSHOT_ROUTES } from './snapshot-routes.js';
import { sourceOf, type SnapshotStore } from './snapshots.js';

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
  /** Changes the CD drive of the VM's QEMU on this host, if one runs here (src/daemon/vm-runner.ts). */
  changeMedium(vm: string, image: string | null): Promise<MediumChange>;
  alink(): unknown;
  health(): HealthSnapshot | null;
  /** This host's networks, read now (src/daemon/networks.ts). */
  networks(): Promise<NetworkStatus[]>;
  /** This host's hardware sensors, read now (src/health/sensors.ts). */
  sensors(): Promise<SensorsView>;
  /** The peer's own networks and health components, asked over the A-Link now (src/daemon/peer-report.ts); never throws. */
  peer(): Promise<PeerView>;
  /** This host's storage groups (its config). */
  storageGroups: readonly StorageGroupConfig[];
  /** This host's virtual CDs, in its storage groups (src/storage/vcd-store.ts). */
  vcds: VcdStore;
  /** This host's snapshots and imported images (src/daemon/snapshots.ts). */
  snapshots: SnapshotStore;
  pairCaPem(): Promise<string | null>;
  recentLog(opts: { limit: number; beforeId?: number; kind?: 'event' | 'alert' }): (LogEntry & { id: number })[];
  /** Entries newer than `afterId`, oldest first: what the live event stream sends. */
  logAfter(afterId: number, limit: number): (LogEntry & { id: number })[];
  /** Calls `listener` whenever entries were appended to the event log; the result unsubscribes. */
  onLogged(listener: () => void): () => void;
  /** Notification deliveries waiting to go out; null when notifications are not configured. */
  notifyPending(): number | null;
  /** The config as the preferences show it, the notifier, the host's clock (preference-routes.ts). */
  preferences: PreferencesContext;
  /** The resource history of this host and the VMs that ran here (`src/history/`). */
  history: HistoryView;
  /** Where the VM's QEMU here writes its serial console, whether or not one runs (`vmSerialLog` in vm-runner.ts). */
  consoleLogFile(vm: string): string;
  /** The daemon's most recent log lines (`log-tail.ts`), for the support bundle. */
  daemonLog(): string;
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

// ── schemas: what the routes accept (checked) and answer (documented) ──────────────────────────────────

const GROUP_NAME: Schema = { type: 'string', pattern: '^[a-z][a-z0-9-]{0,30}$', description: 'a storage group of both hosts (default: default)' };
const VM_NAME_PARAM: Schema = { type: 'string', minLength: 1, maxLength: 64, description: "the VM's name" };
const VM_NAME: Schema = { type: 'string', pattern: '^[a-z][a-z0-9-]{0,30}$', description: 'lowercase letters, digits and -, starting with a letter' };
const ABSOLUTE_PATH: Schema = { type: 'string', minLength: 1, maxLength: 4096, pattern: '^/' };
const PROTECTION: Schema = {
  type: 'string',
  enum: PROTECTION_LEVELS,
  description: 'none: no copy; ha: a synchronous copy on the peer, restarted there on failure; ft: the peer holds a checkpoint of the running VM at most one epoch old and resumes it there on failure (docs/ft.md)',
};

const NIC: Schema = {
  type: 'object',
  required: ['mac', 'address'],
  additionalProperties: false,
  description: "a guest NIC's identity on the business network",
  properties: {
    mac: { type: 'string', pattern: '^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$', description: 'a unicast MAC, e.g. 52:54:00:12:34:56' },
    address: { type: 'string', pattern: '^((25[0-5]|2[0-4]\\d|1?\\d?\\d)\\.){3}(25[0-5]|2[0-4]\\d|1?\\d?\\d)$', description: 'the IPv4 address the guest configures' },
  },
};

const IMAGE_SOURCE: Schema = {
  type: 'object',
  required: ['snapshot'],
  additionalProperties: false,
  description: 'make the volume at the first start from a snapshot or imported image of this host (docs/snapshots.md); absent: a blank volume',
  properties: { snapshot: { type: 'string', pattern: SNAPSHOT_ID_PATTERN, description: 'the snapshot or image id' } },
};

/** An image a new disk is made from, by the id of a snapshot or imported image of this host. */
type ImageRef = { snapshot: string };

const DISK: Schema = {
  type: 'object',
  required: ['sizeMiB'],
  additionalProperties: false,
  description: 'a virtio disk: its size, where its volume lives (a storage group both hosts configure; default: default), its image format (default: qcow2) and the image it is made from',
  properties: {
    sizeMiB: { type: 'integer', minimum: 1, maximum: 16 * 1024 * 1024 },
    storageGroup: GROUP_NAME,
    format: { type: 'string', enum: VOLUME_FORMATS },
    source: IMAGE_SOURCE,
  },
};

/** A VM definition: what `parseVmDefinition` reads (it checks again, and lowercases the MAC). */
export const VM_DEFINITION_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'vcpus', 'memoryMiB', 'guest', 'protection', 'desired'],
  additionalProperties: false,
  properties: {
    name: VM_NAME,
    vcpus: { type: 'integer', minimum: 1, maximum: 64 },
    memoryMiB: { type: 'integer', minimum: 64, maximum: 1024 * 1024 },
    disks: {
      type: 'array',
      minItems: 1,
      maxItems: DISKS_PER_VM_MAX,
      items: DISK,
      description: `the VM's disks, in the order the guest sees them (vda, vdb, …): each a volume on both hosts, the first named after the VM, the others <vm>.disk1, <vm>.disk2…; FT protects a VM of one disk. Give disks or diskMiB`,
    },
    diskMiB: { type: 'integer', minimum: 1, maximum: 16 * 1024 * 1024, description: 'one disk of this size, as before VMs had several: the same as disks with that one disk' },
    disk: {
      type: 'object',
      additionalProperties: false,
      description: "with diskMiB: where that disk's volume lives and its image format; default: default, qcow2",
      properties: { storageGroup: GROUP_NAME, format: { type: 'string', enum: VOLUME_FORMATS } },
    },
    guest: {
      type: 'object',
      required: ['kernel', 'initrd', 'cmdline'],
      additionalProperties: false,
      description: 'direct kernel boot: files on every host of the pair',
      properties: { kernel: ABSOLUTE_PATH, initrd: ABSOLUTE_PATH, cmdline: { type: 'string', minLength: 1, maxLength: 4096 } },
    },
    nics: {
      type: 'array',
      minItems: 1,
      maxItems: NICS_PER_VM_MAX,
      items: NIC,
      description: `the guest's NICs on the business network, in the order the guest sees them (the first is its eth0): each MAC and address unique in the VM and among the pair's VMs (NIC_IN_USE). Give nics or nic`,
    },
    nic: { ...NIC, description: 'one NIC, as before VMs had several: the same as nics with that one NIC' },
    protection: PROTECTION,
    desired: { type: 'string', enum: ['running', 'stopped'] },
    cdrom: {
      type: 'object',
      additionalProperties: false,
      properties: { medium: { type: 'null', description: 'a drive is defined empty' } },
      description: 'a CD drive, empty: insert a virtual CD into it with POST /v1/vms/NAME/cdrom (docs/vcd.md); absent: no drive',
    },
    source: { ...IMAGE_SOURCE, description: "with diskMiB: the image that one disk is made from (as disks[0].source)" },
  },
};

const NULLABLE_OBJECT: Schema = { type: ['object', 'null'] };

const VM_STATUS_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'owner', 'protection', 'desired', 'state', 'hardware', 'local', 'lastExit'],
  properties: {
    name: { type: 'string' },
    owner: { type: 'string', description: 'the host that runs the VM (or would)' },
    protection: { type: 'string', enum: PROTECTION_LEVELS },
    desired: { type: 'string', enum: ['running', 'stopped'] },
    state: { type: 'string', description: "the core's VM state" },
    hardware: { type: 'object', description: 'as defined, and as replicated to the peer: nics, and for a VM with one NIC also that NIC as nic (what a version before several NICs reads)' },
    local: {
      ...NULLABLE_OBJECT,
      description:
        "this host's QEMU for the VM (pid, state, mirror, migration; ft: an FT protection run's state, epochs/s, pauses, sent and peer-committed epoch, lag, held output; resumedFrom: the checkpoint an FT takeover resumed it from), or null",
    },
    lastExit: { ...NULLABLE_OBJECT, description: "the last exit of the VM's QEMU on this host, with its cause" },
    copies: {
      type: 'object',
      description: "whether each host's copy of the disk holds every acknowledged write, as this host knows: here (its copy record), peer (the peer's last report); null: unknown",
      properties: { here: { type: ['boolean', 'null'] }, peer: { type: ['boolean', 'null'] } },
    },
  },
};

const NULLABLE_INTEGER: Schema = { type: ['integer', 'null'] };

const VOLUME_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'vm', 'host', 'owner', 'protection', 'storageGroup', 'format', 'sizeBytes', 'path', 'allocatedBytes', 'state', 'reason', 'sync'],
  properties: {
    name: { type: 'string', description: "the volume's name: its VM's" },
    vm: { type: 'string' },
    host: { type: 'string', description: 'the host that answered: path, allocation and state are as it sees them' },
    owner: { type: 'string' },
    protection: { type: 'string', enum: PROTECTION_LEVELS },
    storageGroup: { type: 'string' },
    format: { type: 'string', enum: VOLUME_FORMATS },
    sizeBytes: { type: 'integer' },
    path: { type: ['string', 'null'], description: "this host's file of the volume (null: it holds none, or lacks the group)" },
    allocatedBytes: { ...NULLABLE_INTEGER, description: 'what the file has allocated (null: no file here yet)' },
    state: {
      type: 'string',
      enum: ['simplex', 'in-sync', 'syncing', 'degraded', 'failed'],
      description: 'simplex: one copy by choice; in-sync: both copies current; syncing: the peer copy is brought up to date; degraded: one copy current; failed: this host cannot use its copy',
    },
    reason: { type: 'string', description: 'why, in one sentence' },
    sync: {
      type: ['object', 'null'],
      description: 'while syncing: figures the answering host measures (null where it does not: the owner has them)',
      properties: { copiedBytes: NULLABLE_INTEGER, totalBytes: NULLABLE_INTEGER, bytesPerSec: NULLABLE_INTEGER, etaMs: NULLABLE_INTEGER },
    },
  },
};

const STORAGE_GROUP_PROPERTIES: Readonly<Record<string, Schema>> = {
  name: { type: 'string' },
  path: { type: 'string' },
  sizeMiB: { ...NULLABLE_INTEGER, description: "the group's cap (null: its file system's size)" },
  capacityBytes: { ...NULLABLE_INTEGER, description: 'the cap, or the file system size (null: the file system cannot be read)' },
  usedBytes: { type: 'integer', description: "what this host's volumes and virtual CDs in the group have allocated" },
  freeBytes: { ...NULLABLE_INTEGER, description: "the lower of the file system's free space and the capacity less what is used" },
  volumeCount: { type: 'integer' },
  error: { type: ['string', 'null'] },
};
const STORAGE_GROUP_REQUIRED = ['name', 'path', 'sizeMiB', 'capacityBytes', 'usedBytes', 'freeBytes', 'volumeCount', 'error'];
const STORAGE_GROUP_SCHEMA: Schema = { type: 'object', required: STORAGE_GROUP_REQUIRED, properties: STORAGE_GROUP_PROPERTIES };
const GROUP_NAME_PARAMS = { name: { type: 'string', minLength: 1, maxLength: 64, description: "the storage group's name" } } as const;
const VOLUME_NAME_PARAMS = { name: { type: 'string', minLength: 1, maxLength: 64, description: "the volume's name: its VM's" } } as const;

const CORE_VIEW_SCHEMA: Schema = {
  type: ['object', 'null'],
  description: "the core's view of this host (null before pairing)",
  properties: {
    host: { type: 'string' },
    peer: { type: 'string' },
    state: { type: 'string' },
    epoch: { type: 'integer' },
    authority: { type: 'string' },
    health: { type: 'number' },
    maintenance: { type: 'boolean' },
    declaredDown: { type: 'boolean' },
  },
};

const LOG_ENTRY_SCHEMA: Schema = {
  type: 'object',
  required: ['id', 'wallMs', 'atMs', 'host', 'kind', 'severity', 'code', 'what', 'cause'],
  properties: {
    id: { type: 'integer', description: 'paging cursor: pass it as before= for older entries' },
    wallMs: { type: 'integer' },
    atMs: { type: 'integer' },
    host: { type: 'string' },
    kind: { type: 'string', enum: ['event', 'alert'] },
    severity: { type: ['string', 'null'], enum: ['info', 'warning', 'critical', null] },
    code: { type: ['string', 'null'] },
    what: { type: 'string' },
    cause: { type: 'string' },
  },
};

const NAME_PARAMS = { name: VM_NAME_PARAM } as const;
const COMMAND_ERRORS = ['NOT_PAIRED', 'UNKNOWN_VM', 'COMMAND_REFUSED'] as const;
/** A restart waits this long for the old QEMU to exit: the runner's graceful stop (5 s), then its kill. */
const RESTART_STOP_WAIT_MS = 30_000;
const RESTART_POLL_MS = 100;

/** The resources: host status, VMs, host commands, the pair CA, volumes and storage groups, virtual CDs, the event log, networks, the preferences and notifications, the resource history. */
export const RESOURCE_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'getStatus',
    method: 'GET',
    path: '/status',
    tag: 'host',
    summary: "this host's status",
    description: "host, pid, incarnation, pairing state, the core's view (state, epoch, authority, health, peer, active quorum server, A-Link RTT), A-Link paths, health components, VMs",
    access: 'read-only',
    response: {
      status: 200,
      description: 'the status',
      schema: {
        type: 'object',
        required: ['host', 'pid', 'startedAt', 'incarnation', 'pairing', 'core', 'vms'],
        properties: {
          host: { type: 'string' },
          pid: { type: 'integer' },
          startedAt: { type: 'string', format: 'date-time' },
          incarnation: { type: 'integer' },
          pairing: { type: 'object', properties: { state: { type: 'string', enum: ['pairing', 'paired'] }, lastError: { type: ['string', 'null'] } } },
          core: CORE_VIEW_SCHEMA,
          alink: { description: 'the A-Link paths (null before pairing)' },
          health: { description: "this host's health components (null before the first check)" },
          vms: { type: 'array', items: VM_STATUS_SCHEMA },
        },
      },
    },
    handler: async (ctx) => ({ status: 200, body: statusBody(ctx) }),
  },
  {
    operationId: 'listVms',
    method: 'GET',
    path: '/vms',
    tag: 'vms',
    summary: 'every VM of the pair',
    access: 'read-only',
    response: { status: 200, description: 'the VMs, by name', schema: { type: 'array', items: VM_STATUS_SCHEMA } },
    handler: async (ctx) => ({ status: 200, body: vmStatuses(ctx, ctx.driver()?.view() ?? null) }),
  },
  {
    operationId: 'getVm',
    method: 'GET',
    path: '/vms/{name}',
    tag: 'vms',
    summary: 'one VM',
    access: 'read-only',
    params: NAME_PARAMS,
    response: { status: 200, description: 'the VM', schema: VM_STATUS_SCHEMA },
    errors: ['UNKNOWN_VM'],
    handler: async (ctx, { params }) => {
      const vm = vmStatuses(ctx, ctx.driver()?.view() ?? null).find((v) => v.name === params['name']);
      if (!vm) throw new LockstepError('UNKNOWN_VM', `no VM named '${params['name']}'`, { vm: params['name'] });
      return { status: 200, body: vm };
    },
  },
  {
    operationId: 'defineVm',
    method: 'POST',
    path: '/vms',
    tag: 'vms',
    summary: 'define a VM',
    description: "the host that defines a VM owns it; COMMAND_REFUSED if the name exists, or its disks do not fit in their storage groups' free space; INVALID_SPEC for a storage group this host does not have, or FT for a VM of several disks. A disk with `source` has its volume made at the VM's first start from a snapshot or image of this host (which starts it first: docs/snapshots.md)",
    access: 'platform-manager',
    body: VM_DEFINITION_SCHEMA,
    bodyError: 'INVALID_SPEC',
    response: { status: 201, description: 'the VM as defined', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: ['NOT_PAIRED', 'COMMAND_REFUSED', 'NIC_IN_USE', 'UNKNOWN_SNAPSHOT', 'IMAGE_INVALID'],
    handler: async (ctx, { body }) => {
      // The images are named by id here, and recorded in the hardware as files of this host once found.
      const { source, disks, ...rest } = body as { source?: ImageRef; disks?: (Record<string, unknown> & { source?: ImageRef })[] };
      const def = parseVmDefinition(disks === undefined ? rest : { ...rest, disks: disks.map(({ source: _, ...d }) => d) });
      const sources = disks === undefined ? [source] : disks.map((d) => d.source);
      for (const [i, ref] of sources.entries()) {
        if (!ref) continue;
        // Made from a snapshot or image of this host: this host defines it, so owns it and starts it first.
        const { snapshot } = await ctx.snapshots.readyFile(ref.snapshot);
        const disk = def.disks[i]!;
        if (snapshot.virtualBytes > disk.sizeMiB * 1024 * 1024) {
          const field = disks === undefined ? 'diskMiB' : `disks[${i}].sizeMiB`;
          throw new LockstepError('IMAGE_INVALID', `${snapshot.kind} ${snapshot.id} is a ${Math.ceil(snapshot.virtualBytes / 1024 / 1024)} MiB disk: VM ${def.name}'s ${field} must be at least that`, { field, virtualBytes: snapshot.virtualBytes });
        }
        disk.source = sourceOf(snapshot);
      }
      // What is wrong with the definition itself is said first; then what clashes with the pair's other VMs.
      const clash = nicInUse(def, ctx.driver()?.view().vms ?? []);
      if (clash) throw clash;
      await checkVolumeFits(volumeContext(ctx), def);
      await command(ctx, { kind: 'define-vm', name: def.name, protection: def.protection, desired: def.desired, hardware: { ...hardwareRecord(hardwareOf(def)) } });
      return { status: 201, body: vmStatus(ctx, def.name) };
    },
  },
  {
    operationId: 'startVm',
    method: 'POST',
    path: '/vms/{name}/start',
    tag: 'vms',
    summary: 'desired state: running',
    access: 'platform-manager',
    params: NAME_PARAMS,
    response: { status: 200, description: 'the VM', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: COMMAND_ERRORS,
    handler: async (ctx, { params }) => desired(ctx, params['name']!, 'running'),
  },
  {
    operationId: 'stopVm',
    method: 'POST',
    path: '/vms/{name}/stop',
    tag: 'vms',
    summary: 'desired state: stopped',
    access: 'platform-manager',
    params: NAME_PARAMS,
    response: { status: 200, description: 'the VM', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: COMMAND_ERRORS,
    handler: async (ctx, { params }) => desired(ctx, params['name']!, 'stopped'),
  },
  {
    operationId: 'restartVm',
    method: 'POST',
    path: '/vms/{name}/restart',
    tag: 'vms',
    summary: 'stop the VM and start it again: a new instance, booted from its disk',
    description:
      "asked of the host that runs it (COMMAND_REFUSED names its owner otherwise): its QEMU is stopped as by stop (the guest asked to power off, then ended), and once that QEMU has exited, or after 30 s, the VM's desired state is running again, so the core starts a new instance; a VM of this host that runs nowhere is started. Answers once the start was asked, with the VM",
    access: 'platform-manager',
    params: NAME_PARAMS,
    response: { status: 200, description: 'the VM', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: COMMAND_ERRORS,
    handler: async (ctx, { params }) => restart(ctx, params['name']!),
  },
  {
    // Live migration to the peer; only the host that runs the VM accepts it (COMMAND_REFUSED names the owner).
    operationId: 'migrateVm',
    method: 'POST',
    path: '/vms/{name}/migrate',
    tag: 'vms',
    summary: 'live migration to the peer',
    description: 'accepted (202) by the host that runs the VM; progress in local.migration on the source',
    access: 'platform-manager',
    params: NAME_PARAMS,
    response: { status: 202, description: 'the migration is under way', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: COMMAND_ERRORS,
    handler: async (ctx, { params }) => {
      await command(ctx, { kind: 'migrate-vm', name: params['name']! });
      return { status: 202, body: vmStatus(ctx, params['name']!) };
    },
  },
  {
    operationId: 'setVmProtection',
    method: 'POST',
    path: '/vms/{name}/protection',
    tag: 'vms',
    summary: 'protection level',
    access: 'platform-manager',
    params: NAME_PARAMS,
    body: { type: 'object', required: ['protection'], additionalProperties: false, properties: { protection: PROTECTION } },
    response: { status: 200, description: 'the VM', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: [...COMMAND_ERRORS, 'INVALID_SPEC'],
    handler: async (ctx, { params, body }) => {
      const { protection } = body as { protection: (typeof PROTECTION_LEVELS)[number] };
      const known = ctx.driver()?.view().vms.find((v) => v.name === params['name']);
      // A record this daemon cannot read is the core's to refuse (UNKNOWN_VM, or the runner's INVALID_SPEC).
      const hw = known ? readableHardware(known.hardware) : null;
      const problem = hw && protectionProblem(hw, protection);
      if (problem) throw new LockstepError('INVALID_SPEC', `VM ${params['name']}: ${problem}`, { field: 'protection', value: protection });
      await command(ctx, { kind: 'set-protection', name: params['name']!, protection });
      return { status: 200, body: vmStatus(ctx, params['name']!) };
    },
  },
  {
    operationId: 'removeVm',
    method: 'DELETE',
    path: '/vms/{name}',
    tag: 'vms',
    summary: 'remove a VM',
    access: 'platform-manager',
    params: NAME_PARAMS,
    response: { status: 204, description: 'removed' },
    errors: COMMAND_ERRORS,
    handler: async (ctx, { params }) => {
      await command(ctx, { kind: 'remove-vm', name: params['name']! });
      return { status: 204, body: null };
    },
  },
  {
    operationId: 'insertCdrom',
    method: 'POST',
    path: '/vms/{name}/cdrom',
    tag: 'vms',
    summary: "insert a virtual CD into the VM's CD drive",
    description:
      "on the host that runs the VM (a VCD is the host's that received it): into its definition, so later starts have it, and into its running QEMU; COMMAND_REFUSED when the VM has no CD drive, runs on the peer, or is starting or stopping",
    access: 'platform-manager',
    params: NAME_PARAMS,
    body: { type: 'object', required: ['vcd'], additionalProperties: false, properties: { vcd: { type: 'string', pattern: VCD_NAME_PATTERN, description: 'a virtual CD of this host' } } },
    response: { status: 200, description: 'the VM', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: [...COMMAND_ERRORS, 'UNKNOWN_VCD'],
    handler: async (ctx, { params, body }) => {
      const vcd = await ctx.vcds.get((body as { vcd: string }).vcd);
      return changeCdrom(ctx, params['name']!, { vcd: vcd.name, sha256: vcd.sha256 }, vcd.path);
    },
  },
  {
    operationId: 'ejectCdrom',
    method: 'DELETE',
    path: '/vms/{name}/cdrom',
    tag: 'vms',
    summary: "eject the virtual CD from the VM's CD drive",
    description: 'on the host that runs the VM: from its definition and from its running QEMU (forced: a tray the guest locked opens)',
    access: 'platform-manager',
    params: NAME_PARAMS,
    response: { status: 200, description: 'the VM', schema: { ...VM_STATUS_SCHEMA, type: ['object', 'null'] } },
    errors: COMMAND_ERRORS,
    handler: async (ctx, { params }) => changeCdrom(ctx, params['name']!, null, null),
  },
  {
    operationId: 'setMaintenance',
    method: 'POST',
    path: '/host/maintenance',
    tag: 'host',
    summary: 'maintenance mode on or off',
    description: "on: this host's running HA VMs move to the peer by live migration; off: they stay where they are",
    access: 'platform-manager',
    body: { type: 'object', required: ['on'], additionalProperties: false, properties: { on: { type: 'boolean' } } },
    response: { status: 200, description: "the core's view", schema: CORE_VIEW_SCHEMA },
    errors: ['NOT_PAIRED', 'COMMAND_REFUSED'],
    handler: async (ctx, { body }) => {
      await command(ctx, { kind: 'maintenance', on: (body as { on: boolean }).on });
      return { status: 200, body: ctx.driver()?.view() ?? null };
    },
  },
  {
    operationId: 'forceTakeover',
    method: 'POST',
    path: '/host/force-takeover',
    tag: 'host',
    summary: 'the operator asserts the peer is dead',
    description: 'refused while the peer is heard',
    access: 'platform-manager',
    response: { status: 200, description: "the core's view", schema: CORE_VIEW_SCHEMA },
    errors: ['NOT_PAIRED', 'COMMAND_REFUSED'],
    handler: async (ctx) => {
      await command(ctx, { kind: 'force-takeover' });
      return { status: 200, body: ctx.driver()?.view() ?? null };
    },
  },
  {
    operationId: 'markRepaired',
    method: 'POST',
    path: '/host/repaired',
    tag: 'host',
    summary: 'clear a down verdict and its fault history',
    access: 'platform-manager',
    response: { status: 200, description: "the core's view", schema: CORE_VIEW_SCHEMA },
    errors: ['NOT_PAIRED', 'COMMAND_REFUSED'],
    handler: async (ctx) => {
      await command(ctx, { kind: 'mark-repaired' });
      return { status: 200, body: ctx.driver()?.view() ?? null };
    },
  },
  {
    operationId: 'getPairCa',
    method: 'GET',
    path: '/pair/ca',
    tag: 'host',
    summary: 'the pair CA certificate',
    description: 'to enroll the pair with quorum servers',
    access: 'read-only',
    response: { status: 200, description: 'the certificate', schema: { type: 'object', required: ['pem'], properties: { pem: { type: 'string' } } } },
    errors: ['NOT_PAIRED'],
    handler: async (ctx) => {
      const pem = await ctx.pairCaPem();
      if (pem === null) throw new LockstepError('NOT_PAIRED', `${ctx.host} is not paired yet: it has no pair CA`, { host: ctx.host });
      return { status: 200, body: { pem } };
    },
  },
  {
    operationId: 'listVolumes',
    method: 'GET',
    path: '/volumes',
    tag: 'storage',
    summary: "every VM's volume, as this host sees it",
    access: 'read-only',
    response: { status: 200, description: 'the volumes, by name', schema: { type: 'array', items: VOLUME_SCHEMA } },
    handler: async (ctx) => ({ status: 200, body: await volumeStatuses(volumeContext(ctx)) }),
  },
  {
    operationId: 'getVolume',
    method: 'GET',
    path: '/volumes/{name}',
    tag: 'storage',
    summary: 'one volume (named after its VM)',
    access: 'read-only',
    params: VOLUME_NAME_PARAMS,
    response: { status: 200, description: 'the volume', schema: VOLUME_SCHEMA },
    errors: ['UNKNOWN_VOLUME'],
    handler: async (ctx, { params }) => ({ status: 200, body: await volumeStatus(volumeContext(ctx), params['name']!) }),
  },
  {
    operationId: 'listStorageGroups',
    method: 'GET',
    path: '/storage-groups',
    tag: 'storage',
    summary: "this host's storage groups and their usage",
    access: 'read-only',
    response: { status: 200, description: 'the groups, in config order', schema: { type: 'array', items: STORAGE_GROUP_SCHEMA } },
    handler: async (ctx) => ({ status: 200, body: await storageGroupStatuses(volumeContext(ctx)) }),
  },
  {
    operationId: 'getStorageGroup',
    method: 'GET',
    path: '/storage-groups/{name}',
    tag: 'storage',
    summary: 'one storage group of this host, with its volumes',
    access: 'read-only',
    params: GROUP_NAME_PARAMS,
    response: {
      status: 200,
      description: 'the group',
      schema: { type: 'object', required: [...STORAGE_GROUP_REQUIRED, 'volumes'], properties: { ...STORAGE_GROUP_PROPERTIES, volumes: { type: 'array', items: VOLUME_SCHEMA } } },
    },
    errors: ['UNKNOWN_STORAGE_GROUP'],
    handler: async (ctx, { params }) => ({ status: 200, body: await storageGroupDetail(volumeContext(ctx), params['name']!) }),
  },
  {
    operationId: 'listEvents',
    method: 'GET',
    path: '/events',
    tag: 'events',
    summary: "the core's event log, newest first",
    access: 'read-only',
    query: {
      type: 'object',
      additionalProperties: false,
      properties: {
        limit: { type: 'integer', minimum: 1, maximum: LOG_LIMIT_MAX, default: 100 },
        before: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'entries with a smaller id (the last id of the previous page)' },
        kind: { type: 'string', enum: ['event', 'alert'] },
      },
    },
    response: { status: 200, description: 'the entries', schema: { type: 'array', items: LOG_ENTRY_SCHEMA } },
    handler: async (ctx, { query }) => {
      const { limit = 100, before, kind } = query as { limit?: number; before?: number; kind?: 'event' | 'alert' };
      return { status: 200, body: ctx.recentLog({ limit, ...(before !== undefined ? { beforeId: before } : {}), ...(kind !== undefined ? { kind } : {}) }) };
    },
  },
  ...VCD_ROUTES,
  ...SNAPSHOT_ROUTES,
  ...NETWORK_ROUTES,
  ...SENSOR_ROUTES,
  ...PREFERENCE_ROUTES,
  ...HISTORY_ROUTES,
  ...CONSOLE_LOG_ROUTES,
  // Its bundle is made of the answers of the routes above.
  ...supportRoutes(() => RESOURCE_ROUTES),
];

/** This host's status as `GET /v1/status` answers it (the live event stream sends it too). */
export function statusBody(ctx: ApiContext): Record<string, unknown> {
  const core = ctx.driver()?.view() ?? null;
  return {
    host: ctx.host,
    pid: process.pid,
    startedAt: ctx.startedAt,
    incarnation: ctx.incarnation,
    pairing: ctx.pairing(),
    core: core === null ? null : { ...core, vms: undefined },
    alink: ctx.alink(),
    health: ctx.health(),
    vms: vmStatuses(ctx, core),
  };
}

async function command(ctx: ApiContext, cmd: OperatorCommand): Promise<void> {
  const driver = ctx.driver();
  if (!driver) throw new LockstepError('NOT_PAIRED', `${ctx.host} is not paired yet: commands wait for the pair`, { host: ctx.host });
  if ('name' in cmd && cmd.kind !== 'define-vm' && !driver.view().vms.some((v) => v.name === cmd.name)) {
    throw new LockstepError('UNKNOWN_VM', `no VM named '${cmd.name}'`, { vm: cmd.name });
  }
  const result = await driver.command(cmd);
  if (!result.ok) throw new LockstepError('COMMAND_REFUSED', result.reason, { command: cmd.kind });
}

/**
 * A VM's CD drive changed: in its definition first (so the change outlives the QEMU), then in the QEMU that
 * runs it here. Only its owner takes it: the VCD is looked up in the owner's store, and its QEMU is there.
 */
async function changeCdrom(ctx: ApiContext, name: string, medium: VcdRef | null, image: string | null): Promise<Reply> {
  const driver = ctx.driver();
  if (!driver) throw new LockstepError('NOT_PAIRED', `${ctx.host} is not paired yet: commands wait for the pair`, { host: ctx.host });
  const vm = driver.view().vms.find((v) => v.name === name);
  if (!vm) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}'`, { vm: name });
  if (vm.owner !== ctx.host) {
    throw new LockstepError('COMMAND_REFUSED', `VM ${name} runs on ${vm.owner}: change its CD there (a virtual CD is the host's that received it)`, { command: 'set-hardware', owner: vm.owner });
  }
  const from = vm.hardware as VmHardwareRecord;
  const to = withMedium(name, parseVmHardware(from), medium);
  // Refused before the definition changes: the QEMU would be left with the old disc.
  if (ctx.running().some((r) => r.name === name && r.state !== 'running')) {
    throw new LockstepError('COMMAND_REFUSED', `VM ${name} is starting, stopping or migrating: change its CD once it runs`, { command: 'set-hardware' });
  }
  await command(ctx, { kind: 'set-hardware', name, from, to: { ...hardwareRecord(to) } });
  if ((await ctx.changeMedium(name, image)) === 'busy') {
    throw new LockstepError('COMMAND_REFUSED', `VM ${name}'s definition has the change, but its QEMU began to start or stop meanwhile: it takes it at its next start`, { command: 'set-hardware' });
  }
  return { status: 200, body: vmStatus(ctx, name) };
}

/** A VM's hardware, or null when this daemon cannot read its record (a newer peer's). */
function readableHardware(record: unknown): VmHardware | null {
  try {
    return parseVmHardware(record);
  } catch {
    return null;
  }
}

async function desired(ctx: ApiContext, name: string, want: 'running' | 'stopped'): Promise<Reply> {
  await command(ctx, { kind: 'set-desired', name, desired: want });
  return { status: 200, body: vmStatus(ctx, name) };
}

/**
 * Stop, then start: two changes of the desired state, with the instance's exit between them. Asked in one
 * go, the core would see only the second (it decides on the desired state, not on its changes), and the
 * guest would run on. Only the host that runs the VM sees its QEMU exit, so only its owner restarts it.
 */
async function restart(ctx: ApiContext, name: string): Promise<Reply> {
  const vm = vmStatus(ctx, name);
  if (vm !== null && vm.owner !== ctx.host) {
    throw new LockstepError('COMMAND_REFUSED', `VM ${name} runs on ${vm.owner}: ask ${vm.owner} to restart it`, { command: 'restart', owner: vm.owner });
  }
  const runsHere = (): boolean => ctx.running().some((r) => r.name === name);
  if (runsHere()) {
    await command(ctx, { kind: 'set-desired', name, desired: 'stopped' });
    // Past the bound the start is asked anyway: the core starts the VM once the old instance is gone.
    const deadline = Date.now() + RESTART_STOP_WAIT_MS;
    while (runsHere() && Date.now() < deadline) await new Promise((r) => setTimeout(r, RESTART_POLL_MS));
  }
  return desired(ctx, name, 'running');
}

function vmStatus(ctx: ApiContext, name: string): VmStatus | null {
  return vmStatuses(ctx, ctx.driver()?.view() ?? null).find((v) => v.name === name) ?? null;
}

export function vmStatuses(ctx: ApiContext, core: CoreView | null): VmStatus[] {
  const running = new Map(ctx.running().map((r) => [r.name, r]));
  return (core?.vms ?? []).map((v) => ({ ...v, local: running.get(v.name) ?? null, lastExit: ctx.lastExit(v.name) }));
}

const LOCAL_PREFIX = '/v1';

/**
 * The host's accounts as the socket serves them: its user database and audit log, or why they could not be
 * opened (then the accounts routes answer that error, and changes go unaudited, each one logged).
 */
export type LocalAccounts = { users: UserStore; audit: AuditLog } | { error: LockstepError };

interface LocalContext {
  api: ApiContext;
  accounts: LocalAccounts;
}

function accountsOf(lc: LocalContext): AccountsContext {
  if ('error' in lc.accounts) throw lc.accounts.error;
  return { deps: lc.accounts, actingUser: null };
}

/**
 * The socket's table: the resources, and the accounts routes (setup, users, groups, audit) that the
 * management API serves to administrators; root on the host is its administrator. The very route objects,
 * so both check the same schemas and answer the same shapes. The accounts paths are below `/v1` already.
 */
const localRoutes = new RouteTable<LocalContext>([
  ...RESOURCE_ROUTES.map((r): Route<LocalContext> => ({ ...r, handler: (lc, req) => r.handler(lc.api, req) })),
  ...ACCOUNT_ROUTES.map((r): Route<LocalContext> => {
    assert(r.path.startsWith(`${LOCAL_PREFIX}/`), `accounts route ${r.operationId} is not below ${LOCAL_PREFIX}`);
    return { ...r, path: r.path.slice(LOCAL_PREFIX.length), handler: (lc, req) => r.handler(accountsOf(lc), req) };
  }),
]);

/** Who the audit log names for a change through the socket: root on this host (the socket has no users). */
export function localActor(host: string): string {
  return `root@${host}`;
}

/**
 * The local API on `socketPath`: the routes above under `/v1`, no users (the socket is root's). Every change
 * is audited as the management API's are, by `root@<host>` from `local`.
 */
export async function startApiServer(socketPath: string, ctx: ApiContext, accounts: LocalAccounts, log: (line: string) => void): Promise<http.Server> {
  await rm(socketPath, { force: true });
  const lc: LocalContext = { api: ctx, accounts };
  // No request timeout (Node's default cuts a body at 5 minutes): a VCD's image can take longer to stream,
  // and the socket is root's alone.
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    void handleLocal(lc, req, res, log).then(({ reply, close }) => (close ? sendRefusal(req, res, reply) : send(res, reply)));
  };
  const server = http.createServer({ requestTimeout: 0 }, onRequest);
  // A client waiting for `100 Continue` (the CLI's upload) is answered by the request's own checks first.
  server.on('checkContinue', onRequest);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return server;
}

async function handleLocal(lc: LocalContext, req: http.IncomingMessage, res: http.ServerResponse, log: (line: string) => void): Promise<{ reply: Reply; close: boolean }> {
  let matched: { route: Route<LocalContext>; params: Record<string, string>; body: unknown; path: string } | null = null;
  let reply: Reply;
  try {
    const url = requestUrl(req);
    const path = url.pathname.startsWith(`${LOCAL_PREFIX}/`) ? url.pathname.slice(LOCAL_PREFIX.length) : null;
    if (path === null) throw new LockstepError('UNKNOWN_ENDPOINT', `no such endpoint: ${req.method} ${url.pathname}`, { method: req.method, path: url.pathname });
    const { route, raw, names } = localRoutes.match(req.method ?? 'GET', path);
    matched = { route, params: rawParams(names, raw), body: undefined, path: url.pathname };
    // An upload's body is the handler's to stream; every other body is JSON, read whole (1 MiB at most).
    const upload = route.upload ? prepareUpload(route, req, res) : undefined;
    if (!upload) allowBody(req, res);
    const body = upload ? undefined : await readJsonBody(req);
    matched.body = body;
    const prepared = prepareRequest(route, raw, names, url.searchParams, body);
    reply = await route.handler(lc, upload ? { ...prepared, upload } : prepared);
  } catch (e) {
    reply = errorReply(e, `request ${req.method} ${req.url}`, log);
  }
  if (matched !== null && matched.route.method !== 'GET') auditLocal(lc, matched, req.method ?? '', reply, log);
  // A refused upload's body may be gigabytes: closing beats reading it all to keep the connection.
  return { reply, close: matched?.route.upload !== undefined && reply.status >= 400 };
}

function auditLocal(lc: LocalContext, call: { route: Route<LocalContext>; params: Record<string, string>; body: unknown; path: string }, method: string, reply: Reply, log: (line: string) => void): void {
  const action = auditedAction(call.route, call.params, call.body, reply, { wallMs: Date.now(), user: localActor(lc.api.host), client: 'local', method, path: call.path });
  if ('error' in lc.accounts) {
    log(`local API: ${action.operation} ${action.target ?? ''} (${action.result}) not audited: ${lc.accounts.error.message}`);
    return;
  }
  try {
    lc.accounts.audit.append(action);
  } catch (e) {
    // The action has happened; its answer still goes out. The failure is the daemon's to report.
    log(`local API: ${describeError(e)}`);
  }
}

