/**
 * The decision core's vocabulary: what goes in (inputs: ticks, peer messages, quorum replies, VM events,
 * health, operator commands) and what comes out (a decision: state to persist, then effects to run).
 * Pure data, no I/O: the same core drives the real daemon and the simulator.
 *
 * Time is the host's own monotonic clock in milliseconds, carried by every input. Clocks of different
 * hosts are never compared; only durations measured on one clock are, with a drift allowance.
 */

export type HostId = string;
export type VmName = string;
export type QuorumServerId = string;
export type ProtectionLevel = 'none' | 'ha' | 'ft';

// ── configuration ──────────────────────────────────────────────────────────────────────────────────────

export interface CoreConfig {
  self: HostId;
  peer: HostId;
  /** Quorum servers, preferred first (0, 1 or 2). */
  quorumServers: readonly QuorumServerId[];
  /** With no quorum server, the host that keeps running when the pair splits (the other stops). */
  tiebreakWinner: HostId;
  heartbeatIntervalMs: number;
  /** Silence after which the peer is considered lost; detection ≤ this + one heartbeat. */
  peerTimeoutMs: number;
  /** How long an echoed heartbeat lets a host keep running its VMs without hearing from the peer again. */
  pairLeaseMs: number;
  /** How long a quorum server's grant lasts without renewal (the server uses the same figure). */
  quorumLeaseMs: number;
  quorumRetryMs: number;
  /** A host stops its VMs this long before its authority runs out, so the stop completes in time. */
  fenceMarginMs: number;
  /** Largest relative clock-rate difference between hosts allowed for (0.01 = 1 %). */
  clockDriftMax: number;
  /** A host whose estimated MTBF falls below this is declared down (predictive failure). */
  mtbfThresholdMs: number;
  /** Faults within this window count towards the MTBF estimate (window ÷ faults). */
  mtbfWindowMs: number;
  /** Health must differ by at least this much before VMs move to the healthier host (1: strictly healthier, as the seed says). */
  healthMarginPoints: number;
  /** VM restarts in place allowed within `vmRestartWindowMs` before another policy applies. */
  vmRestartLimit: number;
  vmRestartWindowMs: number;
  /** SplitSite: largest A-Link round trip each protection level tolerates. */
  rttLimitMs: { ft: number; ha: number };
  /** SplitSite hysteresis: how long the round trip must stay over a limit before a downgrade, and clearly under it before a restore (splitsite.ts). */
  splitsiteHoldMs: { downgrade: number; restore: number };
}

export const DEFAULT_TIMING = {
  heartbeatIntervalMs: 100,
  peerTimeoutMs: 600,
  pairLeaseMs: 1000,
  quorumLeaseMs: 3000,
  quorumRetryMs: 250,
  fenceMarginMs: 250,
  clockDriftMax: 0.01,
  mtbfThresholdMs: 10 * 60_000,
  mtbfWindowMs: 60 * 60_000,
  healthMarginPoints: 1,
  vmRestartLimit: 3,
  vmRestartWindowMs: 10 * 60_000,
  rttLimitMs: { ft: 2, ha: 10 },
  splitsiteHoldMs: { downgrade: 2000, restore: 5000 },
} as const;

// ── health ─────────────────────────────────────────────────────────────────────────────────────────────

export const HEALTH_COMPONENTS = ['alink1', 'alink2', 'mgmt', 'business', 'disk', 'qemu', 'power-supply'] as const;
export type HealthComponent = (typeof HEALTH_COMPONENTS)[number];
export type ComponentState = 'ok' | 'degraded' | 'failed';
export type HealthSnapshot = Readonly<Record<HealthComponent, ComponentState>>;

// ── the pair's replicated record of VMs ────────────────────────────────────────────────────────────────

/**
 * The VM's hardware as the operator defined it (size, guest, network identity): opaque to the core, which
 * only replicates it with the config so that either host can start the VM. The daemon validates it.
 */
export type VmHardware = Readonly<Record<string, unknown>>;

/** What an operator decided about a VM: replicated to the peer, merged by version after a partition. */
export interface VmConfig {
  name: VmName;
  desired: 'running' | 'stopped';
  protection: ProtectionLevel;
  hardware: VmHardware;
  /** Lamport version; ties are broken by `by` so that both hosts pick the same winner. */
  version: number;
  by: HostId;
  removed: boolean;
}

/** Which host runs a VM: changed only by a host holding authority, ordered by (epoch, seq). */
export interface VmOwner {
  host: HostId;
  epoch: number;
  seq: number;
}

export interface VmRecord {
  config: VmConfig;
  owner: VmOwner;
}

// ── disk copies (HA) ───────────────────────────────────────────────────────────────────────────────────

/**
 * This host's copy of the disk of a protected VM that its peer owns, as far as a takeover may rely on it.
 * The owner's QEMU mirrors every guest write into it synchronously over a *stream*; the owner names each
 * stream, and this host learns from the owner's heartbeats when a stream it received is in sync.
 */
export interface CopyRecord {
  /** The owner's stream that last wrote into this copy; null when none has since the copy was made or last written by a guest here. */
  stream: string | null;
  /** It holds every write the guest had acknowledged: the owner said `stream` was in sync and has not said otherwise since. */
  current: boolean;
  /**
   * The newest epoch in which the copy was known current while paired. The owner lets its guest write
   * without this copy only after hearing it is no longer current, or holding a quorum grant alone — always in
   * a newer epoch than any it shared with us — so a takeover in an epoch past `epoch + 1` may follow such a
   * solo run, and is refused.
   */
  epoch: number;
}

/** How the owner's mirror of a VM's disk into the peer's copy stands, as its heartbeat reports it. */
export type MirrorState = 'syncing' | 'ready' | 'stalled';

// ── durable state ──────────────────────────────────────────────────────────────────────────────────────

/** How a host holds its current epoch: agreed with the peer, granted by quorum servers, or by the tie-break. */
export type Authority = 'none' | 'pair' | 'quorum' | 'tiebreak';

export interface Durable {
  epoch: number;
  authority: Authority;
  /**
   * Quorum servers whose grant is needed, all of them: normally the pair's active server; both old and new
   * while a switch between them is not known to be agreed by both hosts, so that the two hosts' sets always
   * share a server (the one that can grant the next epoch to only one of them).
   */
  quorumSet: QuorumServerId[];
  /** The quorum server the pair agreed to use (the preferred one unless both hosts lost it while paired). */
  activeQuorum: QuorumServerId | null;
  /** A pairing this host proposed and persisted before sending (so a crash cannot forget it). */
  proposal: { epoch: number; activeQuorum: QuorumServerId | null } | null;
  vms: Record<VmName, VmRecord>;
  /** Lamport clock for VM config versions. */
  clock: number;
  declaredDown: boolean;
  maintenance: boolean;
  /** Wall-clock times (ms) of this host's recent component faults: the MTBF estimate survives reboots. */
  faultHistory: number[];
  /** This host's copies of the disks of protected VMs its peer owns. */
  copies: Record<VmName, CopyRecord>;
}

// ── inputs ─────────────────────────────────────────────────────────────────────────────────────────────

export interface Heartbeat {
  kind: 'heartbeat';
  from: HostId;
  /** Which boot of the sender this is: sequence numbers start again at each boot. */
  incarnation: number;
  seq: number;
  /** The latest heartbeat (incarnation, seq) this host has received from the peer: its echo extends the peer's lease. */
  echo: { incarnation: number; seq: number };
  epoch: number;
  authority: Authority;
  hostState: HostState;
  health: number;
  quorumReachable: QuorumServerId[];
  activeQuorum: QuorumServerId | null;
  /**
   * The newest epoch a quorum server told this host it granted (to either host), this boot; 0 if none. A
   * pair whose epoch is older moves past it (a round asked on suspicion that the pair outlived). Absent on
   * the wire from hosts that predate it: read as 0.
   */
  quorumEpoch: number;
  vms: Record<VmName, VmRecord>;
  /** VMs this host has a running instance of right now. */
  running: VmName[];
  /** The VMs this host runs, each with its mirror into the peer's copy. */
  mirrors: Record<VmName, { stream: string; state: MirrorState }>;
  /** The copies this host holds of the peer's VMs: whether it serves them to the peer, and their record. */
  copies: Record<VmName, { serving: boolean; stream: string | null; current: boolean }>;
  /**
   * The peer's FT VMs whose checkpoint image this host, their backup, has no room for in its FT memory
   * directory (`ft-room` inputs): they run as HA until it has. Absent on the wire from hosts that predate
   * it: read as none.
   */
  ftRoomShort: VmName[];
  /**
   * Live migrations of VMs this host runs to the peer, while they are being prepared or run, each with the
   * multifd connections this host proposes for it (0: one stream, as from hosts that predate the field).
   */
  migrations: Record<VmName, { id: string; multifd: number }>;
  /**
   * Incoming instances this host holds for the peer's migrations: ready once listening (on `port`, for
   * `multifd` connections beside the main one: what the source must then use) and serving its copy;
   * `failed` when this host could not start one for that migration (it will not retry).
   */
  incoming: Record<VmName, { id: string; ready: boolean; port: number | null; multifd: number; failed: boolean }>;
}

export interface PairPropose {
  kind: 'pair-propose';
  from: HostId;
  epoch: number;
  activeQuorum: QuorumServerId | null;
  vms: Record<VmName, VmRecord>;
  /**
   * The latest heartbeat the proposer has received from the acceptor, as a heartbeat's `echo`: it gives the
   * acceptor its pair lease in the new epoch at once (a proposal that changes the quorum set ends the
   * acceptor's quorum lease, and heartbeats of the new epoch take a round trip to echo). Absent on the wire
   * from hosts that predate it: then no lease until a heartbeat echoes one.
   */
  echo?: { incarnation: number; seq: number };
}

export interface PairAccept {
  kind: 'pair-accept';
  from: HostId;
  epoch: number;
}

export type PeerMessage = Heartbeat | PairPropose | PairAccept;

export type QuorumReply =
  | { kind: 'granted'; epoch: number }
  | { kind: 'denied'; epoch: number; holder: HostId }
  | { kind: 'unreachable' };

export type OperatorCommand =
  | { kind: 'define-vm'; name: VmName; protection: ProtectionLevel; desired: 'running' | 'stopped'; hardware: VmHardware }
  | { kind: 'remove-vm'; name: VmName }
  /** Move a VM that runs here to the peer by live migration. */
  | { kind: 'migrate-vm'; name: VmName }
  | { kind: 'set-desired'; name: VmName; desired: 'running' | 'stopped' }
  | { kind: 'set-protection'; name: VmName; protection: ProtectionLevel }
  /**
   * New hardware for a VM (a CD inserted, say): taken only while the record still holds `from`, so that two
   * operators' changes made from the same record cannot silently undo one another.
   */
  | { kind: 'set-hardware'; name: VmName; from: VmHardware; to: VmHardware }
  | { kind: 'maintenance'; on: boolean }
  /** The operator asserts the peer is dead (the operator becomes the quorum): take its VMs. */
  | { kind: 'force-takeover' }
  /** The operator has repaired a host declared down: clear the verdict and its fault history. */
  | { kind: 'mark-repaired' };

/** What happened to one instance (one start) of a VM; events of an older instance are ignored. */
export type VmEvent =
  | { kind: 'started'; instance: number }
  | { kind: 'start-failed'; instance: number; reason: string }
  /** `clean`: QEMU ended with no write in flight (the guest powered off, or QEMU quit): its disk holds exactly what it acknowledged. */
  | { kind: 'exited'; instance: number; cause: string; expected: boolean; clean: boolean }
  /** An incoming instance (a live migration's destination) is up and listens on `port`; the copy is still served by its export. */
  | { kind: 'incoming-started'; instance: number; port: number }
  /** …and now serves this host's copy to the source's mirror from inside itself. */
  | { kind: 'incoming-ready'; instance: number }
  /** The source side: the migration completed; this instance's vCPUs are stopped for good (postmigrate). */
  | { kind: 'migrated'; instance: number; migration: string }
  /** The source side: the migration failed or was cancelled; the instance runs on here as before. */
  | { kind: 'migration-failed'; instance: number; migration: string; reason: string };

/**
 * What the storage drivers report. On the owner, about its mirror of a VM's disk into the peer's copy:
 * `mirror-syncing` (connected, copying what the copy lacks; every new guest write already goes to both),
 * `mirror-ready` (the copy is identical and every write is synchronous), `mirror-stalled` (the stream to the
 * peer broke: the guest's writes wait, none is acknowledged, until the core cuts the mirror), `mirror-ended`
 * (the mirror is gone — cut, or QEMU's job failed — and the guest writes alone). On the peer, about its copy:
 * `export-ready` / `export-failed` (the copy is served to the owner, or the server died with writes in
 * flight) and `stream-open` (a stream of the owner's connected to the export being served now).
 */
export type StorageEvent =
  | { kind: 'mirror-syncing'; instance: number; stream: string }
  | { kind: 'mirror-ready'; instance: number; stream: string }
  | { kind: 'mirror-stalled'; instance: number; stream: string; reason: string }
  | { kind: 'mirror-ended'; instance: number; stream: string; reason: string }
  | { kind: 'export-ready' }
  | { kind: 'export-failed'; reason: string }
  | { kind: 'stream-open'; stream: string };

export type Input =
  | { type: 'tick'; now: number }
  | { type: 'peer-message'; now: number; msg: PeerMessage }
  | { type: 'quorum-reply'; now: number; server: QuorumServerId; requestId: number; reply: QuorumReply }
  | { type: 'quorum-probe'; now: number; server: QuorumServerId; reachable: boolean }
  | { type: 'vm-event'; now: number; vm: VmName; event: VmEvent }
  | { type: 'storage'; now: number; vm: VmName; event: StorageEvent }
  /** `wallMs` is wall-clock time: fault history must be comparable across reboots, which monotonic time is not. */
  | { type: 'health'; now: number; wallMs: number; health: HealthSnapshot }
  | { type: 'alink-rtt'; now: number; rttMs: number }
  /**
   * The peer's FT VMs whose checkpoint image (RAM-sized, on the backup's tmpfs) this host has no room for
   * now, beside what the FT runs it already serves will take: the whole list each time it changes.
   */
  | { type: 'ft-room'; now: number; short: VmName[] }
  | { type: 'command'; now: number; command: OperatorCommand };

/**
 * `full` copies the whole disk; `incremental` only what the running instance's change tracking recorded since
 * the peer's copy was last identical to ours (the stream both sides name as their sync point).
 */
export type MirrorMode = 'full' | 'incremental';

// ── decisions ──────────────────────────────────────────────────────────────────────────────────────────

export type Effect =
  | { kind: 'send-peer'; msg: PeerMessage }
  | { kind: 'ask-quorum'; server: QuorumServerId; requestId: number; knownEpoch: number }
  /** Is the server reachable? (No grant is asked: paired hosts use this to agree on the active server.) */
  | { kind: 'probe-quorum'; server: QuorumServerId }
  /**
   * `instance` names this start: the driver reports the instance's events with it. With `mirror`, the guest
   * must not run before its disk is mirrored into the peer's copy (the driver starts QEMU paused, connects
   * the mirror, then lets the guest run): the peer's copy is current, and must stay so.
   */
  | { kind: 'start-vm'; vm: VmName; epoch: number; instance: number; mirror?: { stream: string; mode: MirrorMode } }
  /** Mirror the running instance's disk into the peer's copy over a new stream. */
  | { kind: 'start-mirror'; vm: VmName; instance: number; stream: string; mode: MirrorMode }
  /** The peer can no longer take the VM over with a copy lacking what follows: end the mirror, the guest writes alone. */
  | { kind: 'cut-mirror'; vm: VmName; instance: number; stream: string; reason: string }
  /**
   * Live migration. The destination starts an incoming instance on its copy (`prepare-incoming`: listening,
   * and serving the copy to the source's mirror from inside that QEMU); the source migrates once its mirror
   * into it is in sync (`migrate-vm`); the destination lets the guest run once it owns the VM (`resume-vm`).
   */
  | { kind: 'prepare-incoming'; vm: VmName; instance: number; migration: string; multifd: number }
  /** The incoming instance takes the copy over from the export (stopped just before) and serves it itself. */
  | { kind: 'export-incoming'; vm: VmName; instance: number }
  | { kind: 'migrate-vm'; vm: VmName; instance: number; migration: string; port: number; multifd: number }
  | { kind: 'resume-vm'; vm: VmName; instance: number; epoch: number }
  /** Serve this host's copy of the peer's VM to the peer (made empty first if there is none). */
  | { kind: 'serve-copy'; vm: VmName }
  /** `takeover`: this host takes the VM over next (an FT copy keeps its last checkpoint to resume from). */
  | { kind: 'unserve-copy'; vm: VmName; reason: string; takeover?: true }
  | { kind: 'stop-vm'; vm: VmName; instance: number; reason: string }
  | { kind: 'restart-services'; reason: string }
  | { kind: 'alert'; severity: 'info' | 'warning' | 'critical'; code: string; message: string; vm?: VmName };

/** One decision and why: the raw material of alerts, the audit log and failover timelines. */
export interface CoreEvent {
  at: number;
  host: HostId;
  what: string;
  cause: string;
}

/**
 * The driver's contract, in order: run `stop-vm` effects at once (stopping is always safe, and a fence must
 * not wait for a slow disk); re-arm the watchdog at `fenceAt`; write `persist` durably; then run the other
 * effects — except a `start-vm` whose watchdog time has passed meanwhile (report it as `start-failed`);
 * feed their results back as inputs; call `step` with a tick no later than `wakeAt`.
 */
export interface Decision {
  /** Durable state to write before any effect but `stop-vm` runs (null: nothing changed). */
  persist: Durable | null;
  effects: Effect[];
  events: CoreEvent[];
  /** The latest time at which the core wants its next tick. */
  wakeAt: number;
  /**
   * When this host's authority to run VMs ends unless a later decision extends it (null: no end, as for the
   * tie-break winner). The driver arms a watchdog outside its loop that kills every VM at this time: a host
   * stuck on a slow disk or a stalled loop still fences itself in time.
   */
  fenceAt: number | null;
  /** The answer to an operator command, when the input was one. */
  commandResult?: { ok: true } | { ok: false; reason: string };
}

// ── host states ────────────────────────────────────────────────────────────────────────────────────────

/** The host's state table: one line each on what it means. */
export const HOST_STATES = {
  initializing: 'booted; waiting a peer timeout to hear the peer before asking a quorum server',
  paired: 'the peer is heard and agrees on the epoch: each host runs the VMs it owns',
  pairing: 'the peer is heard again: agreeing on a new epoch; VMs run only under authority still held',
  'peer-lost': 'the peer went silent: asking for authority while the pair lease still runs',
  solo: 'holds authority without the peer (quorum grant or tie-break): runs every VM',
  isolated: 'no peer and no authority: runs no VM, waits for the peer or a grant',
  maintenance: 'taken out of service by the operator: runs no VM, stays paired',
  down: 'declared down (MTBF below threshold): runs no VM until repaired',
} as const;
export type HostState = keyof typeof HOST_STATES;

/** A VM's protection state table, as this host sees it. */
export const VM_STATES = {
  stopped: 'not meant to run',
  unprotected: 'running on one host with no redundancy (protection none, or the peer is away)',
  protected: 'running with the peer ready to take over at the requested level',
  syncing: "running; the peer's copy of its disk is being brought up to date",
  migrating: 'moving to the peer by live migration',
  downgraded: 'running with a weaker protection than requested (A-Link too slow: SplitSite; or FT whose backup has no room for its checkpoint image)',
  'failing-over': 'its host was lost: waiting for authority and the old lease before starting it here',
  'host-down': 'unprotected and its host is lost: it runs again when its host does (its disk is there only)',
  starting: 'being started on its owner',
  failed: 'could not be kept running (restart limit reached): needs the operator',
} as const;
export type VmState = keyof typeof VM_STATES;
