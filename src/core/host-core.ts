/**
 * The decision core of one host: `step(state, input) → [state, decision]`, pure and deterministic.
 *
 * Safety rests on three rules, each checked by the simulator after every step:
 * 1. A host runs a VM only while it holds authority: a pair lease (the peer echoed our heartbeat, in the same
 *    epoch, both paired), a quorum lease (every server of the pair's quorum set granted it), or the
 *    tie-break (no quorum server configured, and this host is the designated winner). It stops its VMs a
 *    fence margin before that authority runs out.
 * 2. A host takes a VM over from its peer only holding a durable grant for a newer epoch, and only once the
 *    peer's pair lease is surely over (measured from the last time we heard it, stretched for clock drift).
 * 3. In a pair, a VM changes hands only after its old owner has stopped it (transfer), recorded with a
 *    newer (epoch, seq), so the two hosts' records merge to the same owner.
 */
import { assert } from '../util/assert.js';
import { ALINK_COMPONENTS, estimateMtbfMs, FAULT_HISTORY_KEPT, healthScore, healthyComponents, newFailures, recoveries, SERIOUS_COMPONENTS } from './health.js';
import { holderFenceAt, quorumLeaseHolderMs, waiterSafeAfterMs } from './lease.js';
import { RESTORE_FRACTION, SPLITSITE_UNMEASURED, effectiveProtection, settle, splitsiteDueAt, splitsiteSample, stronger, type SplitSite } from './splitsite.js';
import { mergeVms, newConfig, sameRecords } from './vm-records.js';
import type {
  CoreConfig,
  CoreEvent,
  Decision,
  Durable,
  Effect,
  HealthSnapshot,
  Heartbeat,
  HostId,
  HostState,
  Input,
  MirrorMode,
  MirrorState,
  OperatorCommand,
  PairPropose,
  PeerMessage,
  ProtectionLevel,
  QuorumReply,
  QuorumServerId,
  StorageEvent,
  VmEvent,
  VmName,
  VmRecord,
  VmState,
} from './types.js';

interface Instance {
  readonly id: number;
  /**
   * `incoming`: a live migration's destination, not running guest code; `migrated`: a migration's source
   * after the switch, its vCPUs stopped for good.
   */
  readonly state: 'starting' | 'running' | 'stopping' | 'incoming' | 'migrated';
  /**
   * It runs (or may run) guest code: what the peer must never see twice. False for an incoming instance
   * until it resumes and for a migrated one, also while they are being stopped.
   */
  readonly guest: boolean;
}

export interface CoreState {
  readonly cfg: CoreConfig;
  readonly durable: Durable;
  readonly bootAt: number;
  /** This boot of the host, never reused (the driver keeps a durable counter). */
  readonly incarnation: number;
  readonly now: number;
  readonly hostState: HostState;
  /** Our heartbeat sequence and when recent ones left (an echo of seq s extends our lease from its send time). */
  readonly seq: number;
  readonly sentAt: Readonly<Record<number, number>>;
  readonly lastHeartbeatAt: number | null;
  readonly peer: { readonly heardAt: number | null; readonly incarnation: number; readonly seq: number; readonly hb: Heartbeat | null };
  /** Our pair lease, on our clock (before the fence margin). */
  readonly pairLeaseUntil: number;
  readonly quorum: {
    readonly round: number;
    readonly startedAt: number;
    readonly inFlight: boolean;
    readonly replies: Readonly<Record<QuorumServerId, QuorumReply | null>>;
    readonly lastRoundAt: number | null;
    /** When we must stop using the quorum servers' grant (our clock, fence margin included). */
    readonly fenceAt: number;
    readonly grantedBy: Readonly<Record<QuorumServerId, number>>;
    readonly deniedBy: HostId | null;
    /**
     * The newest epoch a quorum server told us it granted (to us or to the peer), this boot. A round asked on
     * suspicion that the pair then outlives leaves the server an epoch past the pair's: the pair moves past
     * it (`passQuorumEpoch`), or the next takeover would look to the copies like one after a solo run.
     */
    readonly seenEpoch: number;
  };
  readonly probe: { readonly reachable: Readonly<Record<QuorumServerId, boolean>>; readonly lastAt: number | null };
  readonly instances: Readonly<Record<VmName, Instance>>;
  readonly nextInstance: number;
  readonly restarts: Readonly<Record<VmName, readonly number[]>>;
  /**
   * VMs the restart policy gave up on, with the config version they had then: any newer operator decision
   * about the VM (made on either host, arriving by merge) lifts the verdict.
   */
  readonly failedVms: Readonly<Record<VmName, number>>;
  /** VMs being stopped so that the peer can take them (restart limit, maintenance, better health). */
  readonly transfers: Readonly<Record<VmName, HostId>>;
  readonly health: HealthSnapshot;
  /** What the A-Link's round trip allows (SplitSite, with hysteresis) and its last sample. */
  readonly splitsite: SplitSite;
  readonly announcedProtection: Readonly<Record<VmName, ProtectionLevel>>;
  /** Backup side: the peer's FT VMs whose checkpoint image this host has no room for (`ft-room`). */
  readonly ftRoomShort: readonly VmName[];
  /** Owner side: FT VMs announced as short of room on the peer (an alert each way, not one per heartbeat). */
  readonly announcedFtRoomShort: Readonly<Record<VmName, true>>;
  /** Owner side: the mirror of each VM this host runs into the peer's copy, for the current instance. */
  readonly mirrors: Readonly<Record<VmName, OwnerMirror>>;
  /**
   * Owner side: per VM, the stream at whose sync our copy and the peer's were identical, while our change
   * tracking still covers every write since (same QEMU instance, or a clean stop with the mirror in sync):
   * a peer whose copy last received that stream needs only an incremental resync.
   */
  readonly syncPoints: Readonly<Record<VmName, string>>;
  /** Peer side: the copies this host serves to the owner, and the streams that connected to each export. */
  readonly exports: Readonly<Record<VmName, CopyExport>>;
  /** Names the streams of this boot, never reused (with the host and incarnation they are unique). */
  readonly streamSeq: number;
  /** Not before: a mirror or export that failed is tried again after a pause, not in a loop. */
  readonly retryAt: Readonly<Record<string, number>>;
  /** Takeovers refused for a copy that is not current: announced once each. */
  readonly refusedTakeovers: Readonly<Record<VmName, true>>;
  /** Owner side: live migrations of VMs this host runs, to the peer. */
  readonly migrations: Readonly<Record<VmName, OutgoingMigration>>;
  /** Peer side: the migration each incoming instance is for, and whether it listens and serves the copy. */
  readonly incoming: Readonly<Record<VmName, { readonly id: string; readonly ready: boolean; readonly port: number | null; readonly multifd: number; readonly failed: boolean }>>;
  /** A heartbeat goes out at the next evaluation whatever the interval (ownership just moved). */
  readonly heartbeatNow: boolean;
  /**
   * Owner side: per VM, the mirror stream that was in sync when its last instance ended (this boot): the
   * peer's copy then holds every write the guest acknowledged, so the VM may be handed over stopped.
   */
  readonly endedInSync: Readonly<Record<VmName, string>>;
  /** Since when the peer has been healthier than this host by the margin (null: it is not). */
  readonly peerHealthierSince: number | null;
}

interface OutgoingMigration {
  readonly id: string;
  readonly instance: number;
  /** `preparing`: the peer starts its incoming instance and our mirror resyncs into it; `migrating`: QEMU's. */
  readonly phase: 'preparing' | 'migrating';
  /** The mirror stream in sync when the migration was started: both copies are identical at the switch. */
  readonly stream: string | null;
  readonly startedAt: number;
}

interface OwnerMirror {
  readonly instance: number;
  readonly stream: string;
  readonly state: MirrorState;
  /** `cut-mirror` was issued: the driver will report `mirror-ended`. */
  readonly cutting: boolean;
}

interface CopyExport {
  readonly state: 'starting' | 'ready';
  /** Streams that connected to this export since it started (the newest few). */
  readonly streams: readonly string[];
}

const SENT_AT_KEPT = 64;
const QUORUM_PROBE_INTERVAL_MS = 1000;
/** A failed mirror or copy export is tried again after this pause. */
const STORAGE_RETRY_MS = 1000;
/** A migration that has not started within this (the peer's incoming instance, the resync into it) is given up. */
const MIGRATION_PREPARE_MAX_MS = 60_000;
/** After a failed or abandoned migration, the next attempt of the same move waits this long. */
const MIGRATION_RETRY_MS = 30_000;
/**
 * A live migration's RAM goes over this many connections beside the main one (QEMU's multifd, 2 by its own
 * default), each with its own sender thread and TLS session: over TLS, as the A-Link carries it, that
 * measured 1.2 to 1.8 times faster than one stream, its downtime longer but within the 300 ms goal
 * (bench/migration.ts, docs/performance.md). Both QEMUs
 * must agree, so the source proposes it in its heartbeat, the destination listens with what it accepts
 * (at most its own number) and says so, and the source migrates with that. A host that predates the
 * fields proposes and says nothing, read as 0: one stream, as it expects.
 */
export const MIGRATION_MULTIFD_CHANNELS = 2;
/**
 * VMs move to a healthier peer only once it has stayed healthier this long: a component check that fails
 * once (a slow disk probe, a path counted down while the peer reboots) must not send every VM across.
 */
const HEALTH_MOVE_AFTER_MS = 3000;
const EXPORT_STREAMS_KEPT = 8;

export function initialDurable(cfg: CoreConfig): Durable {
  const active = cfg.quorumServers[0] ?? null;
  return {
    epoch: 0,
    authority: 'none',
    quorumSet: active === null ? [] : [active],
    activeQuorum: active,
    proposal: null,
    vms: {},
    clock: 0,
    declaredDown: false,
    maintenance: false,
    faultHistory: [],
    copies: {},
  };
}

/** A host's core at boot: its durable state as it was persisted (or fresh), and nothing volatile. */
export function bootState(cfg: CoreConfig, durable: Durable | null, now: number, incarnation: number): CoreState {
  assert(cfg.self !== cfg.peer, 'a host cannot be its own peer');
  return {
    cfg,
    durable: durable ?? initialDurable(cfg),
    bootAt: now,
    incarnation,
    now,
    hostState: 'initializing',
    seq: 0,
    sentAt: {},
    lastHeartbeatAt: null,
    peer: { heardAt: null, incarnation: -1, seq: 0, hb: null },
    pairLeaseUntil: 0,
    quorum: { round: 0, startedAt: 0, inFlight: false, replies: {}, lastRoundAt: null, fenceAt: 0, grantedBy: {}, deniedBy: null, seenEpoch: 0 },
    probe: { reachable: {}, lastAt: null },
    instances: {},
    nextInstance: 1,
    restarts: {},
    failedVms: {},
    transfers: {},
    health: healthyComponents(),
    splitsite: SPLITSITE_UNMEASURED,
    announcedProtection: {},
    ftRoomShort: [],
    announcedFtRoomShort: {},
    mirrors: {},
    syncPoints: {},
    exports: {},
    streamSeq: 0,
    retryAt: {},
    refusedTakeovers: {},
    migrations: {},
    incoming: {},
    heartbeatNow: false,
    endedInSync: {},
    peerHealthierSince: null,
  };
}

/** The mutable scratchpad of one step: a shallow copy of the state plus what the decision collects. */
interface Step {
  s: { -readonly [K in keyof CoreState]: CoreState[K] };
  effects: Effect[];
  events: CoreEvent[];
  commandResult?: Decision['commandResult'];
  cause: string;
}

export function step(state: CoreState, input: Input): [CoreState, Decision] {
  assert(input.now >= state.now, `time went backwards: ${input.now} < ${state.now}`);
  const st: Step = { s: { ...state, now: input.now }, effects: [], events: [], cause: describeInput(input) };
  const durableBefore = state.durable;
  const epochBefore = state.durable.epoch;

  switch (input.type) {
    case 'tick':
      break;
    case 'peer-message':
      onPeerMessage(st, input.msg);
      break;
    case 'quorum-reply':
      if (input.reply.kind !== 'unreachable' && input.reply.epoch > st.s.quorum.seenEpoch) st.s.quorum = { ...st.s.quorum, seenEpoch: input.reply.epoch };
      if (st.s.quorum.inFlight && input.requestId === st.s.quorum.round && input.server in st.s.quorum.replies) {
        st.s.quorum = { ...st.s.quorum, replies: { ...st.s.quorum.replies, [input.server]: input.reply } };
      }
      break;
    case 'quorum-probe':
      st.s.probe = { ...st.s.probe, reachable: { ...st.s.probe.reachable, [input.server]: input.reachable } };
      break;
    case 'vm-event':
      onVmEvent(st, input.vm, input.event);
      break;
    case 'storage':
      onStorageEvent(st, input.vm, input.event);
      break;
    case 'health':
      onHealth(st, input.health, input.wallMs);
      break;
    case 'alink-rtt':
      st.s.splitsite = splitsiteSample(st.s.splitsite, input.rttMs, st.s.now, st.s.cfg);
      break;
    case 'ft-room':
      onFtRoom(st, input.short);
      break;
    case 'command':
      onCommand(st, input.command);
      break;
  }

  evaluate(st);

  assert(st.s.durable.epoch >= epochBefore, `epoch went back from ${epochBefore} to ${st.s.durable.epoch}`);
  const next = st.s as CoreState;
  const decision: Decision = {
    persist: next.durable !== durableBefore ? next.durable : null,
    effects: st.effects,
    events: st.events,
    wakeAt: wakeAt(next),
    fenceAt: authorityEndsAt(next),
    ...(st.commandResult ? { commandResult: st.commandResult } : {}),
  };
  return [next, decision];
}

// ── derived facts ──────────────────────────────────────────────────────────────────────────────────────

export function peerFresh(s: CoreState): boolean {
  return s.peer.heardAt !== null && s.now - s.peer.heardAt <= s.cfg.peerTimeoutMs;
}

/**
 * How long the peer may be silent before this host starts asking the quorum servers, while it still counts
 * the peer as alive: half the peer timeout (at least two heartbeats, at most the timeout itself). The pair
 * lease runs out a fence margin before *pairLeaseMs* after the last echo, only a little after the peer is
 * declared lost; asking on suspicion leaves the quorum round the time the peer timeout's second half adds.
 */
export function suspectAfterMs(cfg: CoreConfig): number {
  return Math.min(cfg.peerTimeoutMs, Math.max(Math.floor(cfg.peerTimeoutMs / 2), 2 * cfg.heartbeatIntervalMs));
}

/** The peer is still counted alive, but silent long enough that this host asks for a quorum grant. */
function peerSuspected(s: CoreState): boolean {
  return s.peer.heardAt !== null && s.now - s.peer.heardAt > suspectAfterMs(s.cfg);
}

/** Both hosts hold the same epoch by agreement and hear each other. */
export function pairedWithPeer(s: CoreState): boolean {
  const hb = s.peer.hb;
  return s.durable.authority === 'pair' && peerFresh(s) && hb !== null && hb.epoch === s.durable.epoch && hb.authority === 'pair';
}

function pairLeaseValid(s: CoreState): boolean {
  return s.durable.authority === 'pair' && s.now < s.pairLeaseUntil - s.cfg.fenceMarginMs;
}

/**
 * A quorum lease counts only while it was granted by every server of the host's current quorum set: after
 * the pair moves to another server, a lease still running at the old one proves nothing, since the peer may
 * now be granted through the new one.
 */
function quorumLeaseValid(s: CoreState): boolean {
  return s.now < s.quorum.fenceAt && s.durable.quorumSet.every((q) => q in s.quorum.grantedBy);
}

/**
 * The tie-break: with no quorum server, the designated winner never has to stop (its peer can only run VMs
 * while paired with it), and an operator's forced takeover makes this host the winner.
 */
function holdsTiebreak(s: CoreState): boolean {
  if (s.durable.authority === 'tiebreak') return true;
  // The winner still needs a durable epoch (from pairing) before it may start anything.
  return s.durable.authority !== 'none' && s.cfg.quorumServers.length === 0 && s.cfg.tiebreakWinner === s.cfg.self;
}

/**
 * May this host run VMs right now? (A host declared down keeps its authority: it hands its VMs over
 * gracefully when paired, and keeps them running rather than stop them when it has no peer.)
 */
export function hasAuthority(s: CoreState): boolean {
  return pairLeaseValid(s) || quorumLeaseValid(s) || holdsTiebreak(s);
}

/** When the authority this host holds now runs out, if nothing renews it (null: it does not run out). */
export function authorityEndsAt(s: CoreState): number | null {
  if (holdsTiebreak(s)) return null;
  const pair = s.durable.authority === 'pair' ? s.pairLeaseUntil - s.cfg.fenceMarginMs : -Infinity;
  const quorum = quorumLeaseValid(s) ? s.quorum.fenceAt : -Infinity;
  const end = Math.max(pair, quorum);
  // The watchdog fires half a fence margin after the core's own (graceful) stop was due: the kill then has
  // the other half to complete before the authority is over.
  return end === -Infinity ? s.now : Math.max(end + Math.floor(s.cfg.fenceMarginMs / 2), s.now);
}

/** Authority that does not depend on the peer: what a takeover needs. */
function hasSoloAuthority(s: CoreState): boolean {
  if (s.durable.declaredDown) return false;
  return (quorumLeaseValid(s) && s.durable.authority === 'quorum') || s.durable.authority === 'tiebreak';
}

function initializing(s: CoreState): boolean {
  return s.peer.heardAt === null && s.now - s.bootAt < s.cfg.peerTimeoutMs;
}

/** When the peer's pair lease is surely over, on our clock. */
function peerLeaseOverAt(s: CoreState): number {
  const base = Math.max(s.peer.heardAt ?? s.bootAt, s.bootAt);
  return base + waiterSafeAfterMs(s.cfg.pairLeaseMs, s.cfg);
}

export function deriveHostState(s: CoreState): HostState {
  if (s.durable.declaredDown) return 'down';
  if (s.durable.maintenance) return 'maintenance';
  if (pairedWithPeer(s)) return 'paired';
  if (initializing(s)) return 'initializing';
  if (peerFresh(s)) return 'pairing';
  if (hasSoloAuthority(s)) return 'solo';
  if (pairLeaseValid(s)) return 'peer-lost';
  return 'isolated';
}

function isFailed(s: CoreState, name: VmName): boolean {
  const version = s.failedVms[name];
  return version !== undefined && version === s.durable.vms[name]?.config.version;
}

export function myHealth(s: CoreState): number {
  return healthScore(s.health);
}

export function vmState(s: CoreState, name: VmName): VmState {
  const rec = s.durable.vms[name];
  if (!rec || rec.config.removed || rec.config.desired === 'stopped') return 'stopped';
  if (isFailed(s, name)) return 'failed';
  const inst = s.instances[name]?.state;
  if (s.migrations[name] || (s.incoming[name] && !s.incoming[name]!.failed)) return 'migrating';
  if (rec.owner.host !== s.cfg.self) {
    if (inst) return 'starting';
    if (rec.config.protection === 'none') return peerFresh(s) ? 'unprotected' : 'host-down';
    if (peerFresh(s)) return s.durable.copies[name]?.current ? 'protected' : 'syncing';
    return 'failing-over';
  }
  if (inst === 'starting' || inst === 'incoming') return 'starting';
  if (!inst) return 'failing-over';
  if (rec.config.protection === 'none' || !pairedWithPeer(s)) return 'unprotected';
  const mirror = s.mirrors[name];
  if (mirror?.state !== 'ready') return mirror?.state === 'syncing' ? 'syncing' : 'unprotected';
  return runningProtection(s, name) === rec.config.protection ? 'protected' : 'downgraded';
}

/**
 * Whether an FT VM's backup has room for its checkpoint image: this host's own report when it is the backup,
 * the peer's last heartbeat when this host owns the VM. Without room the backup serves an HA copy, and the
 * VM is mirrored as HA until the room returns.
 */
export function ftBackupHasRoom(s: CoreState, name: VmName): boolean {
  const rec = s.durable.vms[name];
  if (!rec) return true;
  const short = rec.owner.host === s.cfg.self ? (s.peer.hb?.ftRoomShort ?? []) : s.ftRoomShort;
  return !short.includes(name);
}

/** Whether the VM's copy on the backup is an FT run (FT configured, room on the backup), whatever SplitSite allows. */
export function ftCopyWanted(s: CoreState, name: VmName): boolean {
  return s.durable.vms[name]?.config.protection === 'ft' && ftBackupHasRoom(s, name);
}

/** The protection a VM runs with now: as configured, less what SplitSite or the backup's FT room allow. */
export function runningProtection(s: CoreState, name: VmName): ProtectionLevel {
  const rec = s.durable.vms[name];
  if (!rec) return 'none';
  const level = effectiveProtection(rec.config.protection, s.splitsite.allowed);
  return level === 'ft' && !ftBackupHasRoom(s, name) ? 'ha' : level;
}

/** Protected VMs keep a copy of their disk on both hosts (FT builds on HA's copies). */
function hasCopies(rec: VmRecord): boolean {
  return rec.config.protection !== 'none';
}

// ── inputs ─────────────────────────────────────────────────────────────────────────────────────────────

function onPeerMessage(st: Step, msg: PeerMessage): void {
  const s = st.s;
  if (msg.from !== s.cfg.peer) return; // not our peer: the transport already refused it; be safe anyway
  // Any message proves the peer alive; hearing it later only delays a takeover, so this is always safe.
  if (msg.kind !== 'heartbeat') s.peer = { ...s.peer, heardAt: s.now };
  switch (msg.kind) {
    case 'heartbeat': {
      // Duplicated or reordered within one boot of the peer: the newer one has been seen. A new boot restarts.
      if (msg.incarnation < s.peer.incarnation || (msg.incarnation === s.peer.incarnation && msg.seq <= s.peer.seq)) return;
      s.peer = { heardAt: s.now, incarnation: msg.incarnation, seq: msg.seq, hb: msg };
      const sentAt = msg.echo.incarnation === s.incarnation ? s.sentAt[msg.echo.seq] : undefined;
      if (sentAt !== undefined && msg.epoch === s.durable.epoch && msg.authority === 'pair' && s.durable.authority === 'pair') {
        s.pairLeaseUntil = Math.max(s.pairLeaseUntil, sentAt + s.cfg.pairLeaseMs);
      }
      mergePeerVms(st, msg.vms);
      observeOwnerMirrors(st, msg);
      return;
    }
    case 'pair-propose': {
      const d = s.durable;
      if (msg.epoch > d.epoch) {
        const quorumSet = unionSet(d.quorumSet, msg.activeQuorum);
        s.durable = { ...d, epoch: msg.epoch, authority: 'pair', activeQuorum: msg.activeQuorum, quorumSet, proposal: null };
        leaseFromProposal(st, msg);
        mergePeerVms(st, msg.vms);
        event(st, `accepted pairing in epoch ${msg.epoch}`);
        st.effects.push({ kind: 'send-peer', msg: { kind: 'pair-accept', from: s.cfg.self, epoch: msg.epoch } });
      } else if (msg.epoch === d.epoch && d.authority === 'pair') {
        leaseFromProposal(st, msg);
        st.effects.push({ kind: 'send-peer', msg: { kind: 'pair-accept', from: s.cfg.self, epoch: msg.epoch } });
      }
      return;
    }
    case 'pair-accept': {
      const p = s.durable.proposal;
      if (p && msg.epoch === p.epoch && p.epoch <= s.durable.epoch) {
        // We moved past our own proposal meanwhile (a quorum grant): it is stale; a new one will follow.
        s.durable = { ...s.durable, proposal: null };
      } else if (p && msg.epoch === p.epoch) {
        const d = s.durable;
        s.durable = { ...d, epoch: p.epoch, authority: 'pair', activeQuorum: p.activeQuorum, quorumSet: setOf(p.activeQuorum), proposal: null };
        event(st, `paired in epoch ${p.epoch}`);
      }
      return;
    }
  }
}

/**
 * Accepting a proposal: its echo of one of our heartbeats is a round trip, as a heartbeat's is — the peer
 * heard us after `sentAt`, so it cannot count us lost before `sentAt + peerTimeoutMs`, and the pair lease
 * runs from it as from a heartbeat's echo. Without it, a host running VMs on a quorum lease would lose its
 * authority in the step it accepts a proposal that changes the quorum set (that lease no longer counts),
 * until a heartbeat of the new epoch came back: long enough for its watchdog to kill its VMs.
 */
function leaseFromProposal(st: Step, msg: PairPropose): void {
  const s = st.s;
  const sentAt = msg.echo !== undefined && msg.echo.incarnation === s.incarnation ? s.sentAt[msg.echo.seq] : undefined;
  if (sentAt !== undefined) s.pairLeaseUntil = Math.max(s.pairLeaseUntil, sentAt + s.cfg.pairLeaseMs);
}

function mergePeerVms(st: Step, theirs: Readonly<Record<VmName, VmRecord>>): void {
  const d = st.s.durable;
  const merged = mergeVms(d.vms, theirs);
  if (merged !== d.vms && !sameRecords(merged, d.vms)) {
    const clock = Math.max(d.clock, ...Object.values(merged).map((r) => r.config.version));
    st.s.durable = { ...d, vms: merged, clock };
    for (const [name, rec] of Object.entries(merged)) {
      const before = d.vms[name]?.owner.host;
      if (before === st.s.cfg.self && rec.owner.host !== st.s.cfg.self) lostOwnership(st, name);
      if (before !== st.s.cfg.self && rec.owner.host === st.s.cfg.self) gainedOwnership(st, name);
    }
  }
}

function onVmEvent(st: Step, vm: VmName, ev: VmEvent): void {
  const s = st.s;
  const inst = s.instances[vm];
  if (!inst || inst.id !== ev.instance) return; // an earlier instance's news: that one is gone already
  switch (ev.kind) {
    case 'started':
      if (inst.state === 'starting') s.instances = { ...s.instances, [vm]: { ...inst, state: 'running' } };
      return;
    case 'incoming-started': {
      // Up and listening: only now does the copy change hands, so that it stays current (served, mirrored)
      // while the incoming QEMU starts. From here until the source's mirror into the incoming instance is
      // in sync, the copy does not count as current.
      const inc = s.incoming[vm];
      if (inst.state !== 'incoming' || !inc) return;
      s.incoming = { ...s.incoming, [vm]: { ...inc, port: ev.port } };
      const copy = s.durable.copies[vm];
      if (copy) markCopy(st, vm, { stream: copy.stream, current: false });
      stopServing(st, vm, `live migration ${inc.id}`);
      s.heartbeatNow = true;
      st.effects.push({ kind: 'export-incoming', vm, instance: inst.id });
      return;
    }
    case 'incoming-ready': {
      const inc = s.incoming[vm];
      if (inst.state !== 'incoming' || !inc) return;
      s.incoming = { ...s.incoming, [vm]: { ...inc, ready: true, failed: false } };
      // The copy is served from inside the incoming QEMU now: streams connect to that export.
      s.exports = { ...s.exports, [vm]: { state: 'ready', streams: [] } };
      s.heartbeatNow = true;
      return;
    }
    case 'migrated': {
      const mig = s.migrations[vm];
      if (!mig || mig.id !== ev.migration) return;
      onMigrated(st, vm, inst, mig);
      return;
    }
    case 'migration-failed': {
      const mig = s.migrations[vm];
      if (!mig || mig.id !== ev.migration) return;
      abandonMigration(st, vm, ev.reason);
      return;
    }
    case 'start-failed':
    case 'exited': {
      const { [vm]: _gone, ...rest } = s.instances;
      s.instances = rest;
      instanceEnded(st, vm, ev.kind === 'exited' && ev.clean);
      const inc = s.incoming[vm];
      if (inc) {
        // The destination of a migration is gone: the copy is served again the ordinary way. One that
        // failed is reported to the source (which gives the migration up), not tried again.
        s.exports = without(s.exports, vm);
        const failed = ev.kind === 'start-failed' || !ev.expected;
        s.incoming = failed ? { ...s.incoming, [vm]: { ...inc, ready: false, port: null, failed: true } } : without(s.incoming, vm);
        if (failed) alert(st, 'warning', 'MIGRATION_FAILED', `the incoming instance of VM ${vm} on ${s.cfg.self} ended: ${ev.kind === 'start-failed' ? ev.reason : ev.cause}`, vm);
        return;
      }
      if (s.migrations[vm]) abandonMigration(st, vm, `the VM's instance ended (${ev.kind === 'start-failed' ? ev.reason : ev.cause})`);
      const unexpected = ev.kind === 'start-failed' || (!ev.expected && inst.state !== 'stopping');
      if (unexpected) countVmFailure(st, vm, ev.kind === 'start-failed' ? `could not start: ${ev.reason}` : `exited: ${ev.cause}`);
      return;
    }
  }
}

/**
 * The instance's change tracking dies with it. The peer's copy stays identical to ours only if the mirror was
 * in sync until a clean end (no write in flight): then a later instance, tracking from its start, can resync
 * the peer incrementally from the same sync point. Otherwise nobody knows which blocks differ.
 */
function instanceEnded(st: Step, vm: VmName, clean: boolean): void {
  const s = st.s;
  const mirror = s.mirrors[vm];
  s.mirrors = without(s.mirrors, vm);
  const inSync = mirror?.state === 'ready' && !mirror.cutting;
  s.endedInSync = inSync ? { ...s.endedInSync, [vm]: mirror.stream } : without(s.endedInSync, vm);
  if (!(clean && mirror?.state === 'ready' && !mirror.cutting)) s.syncPoints = without(s.syncPoints, vm);
}

function countVmFailure(st: Step, vm: VmName, why: string): void {
  const s = st.s;
  const recent = [...(s.restarts[vm] ?? []), s.now].filter((t) => s.now - t <= s.cfg.vmRestartWindowMs);
  s.restarts = { ...s.restarts, [vm]: recent };
  if (recent.length <= s.cfg.vmRestartLimit) {
    event(st, `VM ${vm} failed (${why}): restarting in place (${recent.length} of ${s.cfg.vmRestartLimit})`);
    alert(st, 'warning', 'VM_RESTARTED', `VM ${vm} failed (${why}); restarting it on ${s.cfg.self}`, vm);
  } else if (pairedWithPeer(s) && s.durable.vms[vm]?.config.protection !== 'none') {
    event(st, `VM ${vm} failed ${recent.length} times: restarting it on ${s.cfg.peer}`);
    alert(st, 'warning', 'VM_MOVED_AFTER_FAILURES', `VM ${vm} failed ${recent.length} times on ${s.cfg.self}; restarting it on ${s.cfg.peer}`, vm);
    s.transfers = { ...s.transfers, [vm]: s.cfg.peer };
  } else {
    s.failedVms = { ...s.failedVms, [vm]: s.durable.vms[vm]?.config.version ?? 0 };
    event(st, `VM ${vm} failed ${recent.length} times and no peer can take it (or it is unprotected): giving up`);
    alert(st, 'critical', 'VM_FAILED', `VM ${vm} failed ${recent.length} times within ${s.cfg.vmRestartWindowMs / 60_000} min and no healthy peer can take it`, vm);
  }
}

function onStorageEvent(st: Step, vm: VmName, ev: StorageEvent): void {
  const s = st.s;
  switch (ev.kind) {
    case 'mirror-syncing':
    case 'mirror-ready':
    case 'mirror-stalled':
    case 'mirror-ended': {
      const m = s.mirrors[vm];
      if (!m || m.instance !== ev.instance || m.stream !== ev.stream) return; // an older stream's news
      if (ev.kind === 'mirror-ended') {
        s.mirrors = without(s.mirrors, vm);
        // A mirror that failed is tried again after a pause; one we cut may be replaced at once.
        if (!m.cutting) s.retryAt = { ...s.retryAt, [`mirror:${vm}`]: s.now + STORAGE_RETRY_MS };
        event(st, `mirror of VM ${vm} ended (${ev.reason}): the guest writes alone`);
        // Ending it to resync into a migration's incoming instance is part of the plan, not news.
        if (!s.migrations[vm]) alert(st, 'warning', 'MIRROR_ENDED', `VM ${vm} on ${s.cfg.self} is no longer mirrored to ${s.cfg.peer} (${ev.reason})`);
        return;
      }
      const state: MirrorState = ev.kind === 'mirror-syncing' ? 'syncing' : ev.kind === 'mirror-ready' ? 'ready' : 'stalled';
      if (state === m.state) return;
      s.mirrors = { ...s.mirrors, [vm]: { ...m, state } };
      if (state === 'ready') {
        s.syncPoints = { ...s.syncPoints, [vm]: ev.stream };
        event(st, `mirror of VM ${vm} in sync with ${s.cfg.peer} (stream ${ev.stream})`);
      } else if (state === 'stalled') {
        event(st, `mirror of VM ${vm} stalled (${(ev as { reason: string }).reason}): the guest's writes wait`);
      }
      return;
    }
    case 'export-ready': {
      const x = s.exports[vm];
      if (x && x.state === 'starting') s.exports = { ...s.exports, [vm]: { ...x, state: 'ready' } };
      return;
    }
    case 'export-failed': {
      if (!s.exports[vm]) return;
      s.exports = without(s.exports, vm);
      s.retryAt = { ...s.retryAt, [`export:${vm}`]: s.now + STORAGE_RETRY_MS };
      // Writes in flight to the dead server are lost: the copy no longer holds everything the guest acknowledged.
      markCopy(st, vm, { stream: null, current: false });
      alert(st, 'warning', 'COPY_EXPORT_FAILED', `the copy of VM ${vm} on ${s.cfg.self} stopped being served (${ev.reason}); it will be resynchronised`);
      return;
    }
    case 'stream-open': {
      const x = s.exports[vm];
      if (!x) return;
      s.exports = { ...s.exports, [vm]: { ...x, streams: [...x.streams, ev.stream].slice(-EXPORT_STREAMS_KEPT) } };
      return;
    }
  }
}

function onHealth(st: Step, health: HealthSnapshot, wallMs: number): void {
  const s = st.s;
  const before = s.health;
  s.health = health;
  alinkPathAlerts(st, before, health);
  const failures = newFailures(before, health).filter((c) => !ALINK_COMPONENTS.includes(c));
  if (failures.length === 0) return;
  const history = [...s.durable.faultHistory, ...failures.map(() => wallMs)].filter((t) => wallMs - t <= s.cfg.mtbfWindowMs).slice(-FAULT_HISTORY_KEPT);
  s.durable = { ...s.durable, faultHistory: history };
  const mtbf = estimateMtbfMs(history, wallMs, s.cfg.mtbfWindowMs);
  event(st, `component fault: ${failures.join(', ')} (health ${healthScore(health)}, estimated MTBF ${Number.isFinite(mtbf) ? `${Math.round(mtbf / 1000)} s` : '∞'})`);
  if (s.durable.declaredDown) return;
  if (mtbf < s.cfg.mtbfThresholdMs) {
    s.durable = { ...s.durable, declaredDown: true };
    alert(st, 'critical', 'HOST_DECLARED_DOWN', `${s.cfg.self} declared down: estimated MTBF ${Math.round(mtbf / 1000)} s is below the threshold ${Math.round(s.cfg.mtbfThresholdMs / 1000)} s (${failures.join(', ')})`);
    return;
  }
  const serious = failures.filter((c) => SERIOUS_COMPONENTS.includes(c));
  const ownsRunningVms = Object.keys(s.instances).length > 0;
  if (serious.length > 0 && !ownsRunningVms) {
    // The seed's backup-server fault: no user impact; a reboot may cure a transient fault.
    alert(st, 'warning', 'BACKUP_FAULT', `backup ${s.cfg.self} lost ${serious.join(', ')}: restarting its services`);
    st.effects.push({ kind: 'restart-services', reason: `backup fault: ${serious.join(', ')}` });
  } else if (serious.length === 0) {
    alert(st, 'info', 'CALL_HOME', `non-critical fault on ${s.cfg.self}: ${failures.join(', ')} (replacement part needed)`);
  } else {
    alert(st, 'warning', 'PRIMARY_FAULT', `${s.cfg.self} lost ${serious.join(', ')}: its VMs move to ${s.cfg.peer} if it is healthier`);
  }
}

function alinkPathAlerts(st: Step, before: HealthSnapshot, after: HealthSnapshot): void {
  const s = st.s;
  const up = ALINK_COMPONENTS.filter((c) => after[c] !== 'failed');
  for (const c of newFailures(before, after).filter((x) => ALINK_COMPONENTS.includes(x))) {
    const rest = up.length > 0 ? `the pair carries on over ${up.join(', ')}` : 'no A-Link path is left';
    alert(st, 'warning', 'ALINK_PATH_DOWN', `A-Link path ${c} down on ${s.cfg.self}: ${rest}`);
  }
  for (const c of recoveries(before, after).filter((x) => ALINK_COMPONENTS.includes(x))) {
    alert(st, 'info', 'ALINK_PATH_RESTORED', `A-Link path ${c} up again on ${s.cfg.self}`);
  }
}

function onCommand(st: Step, cmd: OperatorCommand): void {
  const s = st.s;
  const d = s.durable;
  const reject = (reason: string): void => {
    st.commandResult = { ok: false, reason };
  };
  st.commandResult = { ok: true };
  const clock = d.clock + 1;
  switch (cmd.kind) {
    case 'define-vm': {
      const existing = d.vms[cmd.name];
      if (existing && !existing.config.removed) return reject(`VM ${cmd.name} exists already`);
      const owner = existing ? { host: s.cfg.self, epoch: d.epoch, seq: existing.owner.seq + 1 } : { host: s.cfg.self, epoch: d.epoch, seq: 0 };
      const rec: VmRecord = { config: newConfig(cmd.name, { desired: cmd.desired, protection: cmd.protection, hardware: cmd.hardware }, clock, s.cfg.self), owner };
      s.durable = { ...d, clock, vms: { ...d.vms, [cmd.name]: rec }, copies: { ...d.copies, [cmd.name]: { stream: null, current: true, epoch: d.epoch } } };
      event(st, `operator defined VM ${cmd.name} (${cmd.protection}, ${cmd.desired})`);
      return;
    }
    case 'remove-vm':
    case 'set-desired':
    case 'set-protection': {
      const rec = d.vms[cmd.name];
      if (!rec || rec.config.removed) return reject(`no VM named ${cmd.name}`);
      const c = rec.config;
      const config =
        cmd.kind === 'remove-vm'
          ? newConfig(cmd.name, { desired: 'stopped', protection: c.protection, hardware: c.hardware, removed: true }, clock, s.cfg.self)
          : cmd.kind === 'set-desired'
            ? newConfig(cmd.name, { desired: cmd.desired, protection: c.protection, hardware: c.hardware }, clock, s.cfg.self)
            : newConfig(cmd.name, { desired: c.desired, protection: cmd.protection, hardware: c.hardware }, clock, s.cfg.self);
      s.durable = { ...d, clock, vms: { ...d.vms, [cmd.name]: { ...rec, config } } };
      event(st, `operator: ${cmd.kind} ${cmd.name}`);
      return;
    }
    case 'set-hardware': {
      const rec = d.vms[cmd.name];
      if (!rec || rec.config.removed) return reject(`no VM named ${cmd.name}`);
      const c = rec.config;
      // The hardware is opaque here; its JSON is what replicates, so its JSON is what is compared.
      if (JSON.stringify(c.hardware) !== JSON.stringify(cmd.from)) return reject(`VM ${cmd.name}'s hardware changed meanwhile: read it again and retry`);
      const config = newConfig(cmd.name, { desired: c.desired, protection: c.protection, hardware: cmd.to }, clock, s.cfg.self);
      s.durable = { ...d, clock, vms: { ...d.vms, [cmd.name]: { ...rec, config } } };
      event(st, `operator: set-hardware ${cmd.name}`);
      return;
    }
    case 'migrate-vm': {
      const rec = d.vms[cmd.name];
      if (!rec || rec.config.removed) return reject(`no VM named ${cmd.name}`);
      if (rec.owner.host !== s.cfg.self) return reject(`VM ${cmd.name} runs on ${rec.owner.host}: ask ${rec.owner.host}`);
      if (!hasCopies(rec)) return reject(`VM ${cmd.name} is not protected: its disk is on ${s.cfg.self} only`);
      if (s.instances[cmd.name]?.state !== 'running') return reject(`VM ${cmd.name} is not running`);
      if (!pairedWithPeer(s) || s.peer.hb?.hostState !== 'paired') return reject(`${s.cfg.peer} is not paired and ready to take it`);
      if (s.migrations[cmd.name]) return reject(`VM ${cmd.name} is migrating already`);
      s.transfers = { ...s.transfers, [cmd.name]: s.cfg.peer };
      s.retryAt = without(s.retryAt, `migrate:${cmd.name}`);
      event(st, `operator: migrate VM ${cmd.name} to ${s.cfg.peer}`);
      return;
    }
    case 'maintenance':
      if (cmd.on && !pairedWithPeer(s)) return reject('maintenance mode needs a paired peer to take the VMs');
      if (cmd.on && s.peer.hb?.hostState === 'maintenance') return reject(`${s.cfg.peer} is in maintenance already`);
      s.durable = { ...d, maintenance: cmd.on };
      event(st, `operator: maintenance ${cmd.on ? 'on' : 'off'}`);
      return;
    case 'force-takeover':
      if (pairedWithPeer(s)) return reject(`${s.cfg.peer} is alive and paired: use maintenance or migration instead`);
      s.durable = { ...d, epoch: d.epoch + 1, authority: 'tiebreak' };
      event(st, `operator asserted ${s.cfg.peer} is dead: taking authority in epoch ${d.epoch + 1}`);
      alert(st, 'critical', 'FORCED_TAKEOVER', `operator forced ${s.cfg.self} to take over from ${s.cfg.peer}`);
      return;
    case 'mark-repaired':
      s.durable = { ...d, declaredDown: false, faultHistory: [] };
      event(st, 'operator: host repaired');
      return;
  }
}

// ── evaluation: what to do now ─────────────────────────────────────────────────────────────────────────

function evaluate(st: Step): void {
  st.s.splitsite = settle(st.s.splitsite, st.s.now, st.s.cfg);
  pairing(st);
  quorumRounds(st);
  tiebreak(st);
  const s = st.s;
  const state = deriveHostState(s);
  if (state !== s.hostState) {
    event(st, `host state ${s.hostState} → ${state}`);
    if (state === 'isolated' && Object.keys(s.instances).length > 0) {
      alert(st, 'critical', 'HOST_ISOLATED', `${s.cfg.self} lost ${s.cfg.peer} and has no quorum: stopping its VMs to avoid split-brain`);
    }
    s.hostState = state;
  }
  incomingDecisions(st);
  vmDecisions(st);
  copyDecisions(st);
  mirrorDecisions(st);
  protectionAlerts(st);
  heartbeat(st);
  probes(st);
}

function pairing(st: Step): void {
  const s = st.s;
  const hb = s.peer.hb;
  // A host declared down still pairs: it must hand its VMs over, and a peer that hears it would not take them.
  if (!peerFresh(s) || hb === null) return;
  const d = s.durable;
  if (pairedWithPeer(s)) {
    // Confirmed: both hosts hold this epoch, so a pending quorum-server switch is agreed by both.
    if (d.quorumSet.length > 1) s.durable = { ...d, quorumSet: setOf(d.activeQuorum) };
    const seen = Math.max(s.quorum.seenEpoch, hb.quorumEpoch);
    if (seen > s.durable.epoch && s.cfg.self < s.cfg.peer && !peerSuspected(s)) {
      passQuorumEpoch(st, seen);
      return;
    }
    maybeSwitchQuorum(st);
    return;
  }
  if (s.cfg.self > s.cfg.peer) return; // the host with the smaller id proposes; the other accepts
  // The peer accepted our epoch before we held it: an older epoch in its heartbeat is only lag.
  if (d.authority === 'pair' && d.proposal === null && hb.epoch < d.epoch) return;
  const target = Math.max(d.epoch, hb.epoch);
  if (d.proposal && d.proposal.epoch > target) {
    if (s.lastHeartbeatAt === null || s.now - s.lastHeartbeatAt >= s.cfg.heartbeatIntervalMs) sendProposal(st);
    return;
  }
  // The side with the newer epoch knows the pair's active quorum server best.
  const active = hb.epoch > d.epoch ? hb.activeQuorum : d.activeQuorum;
  propose(st, target + 1, active);
}

/**
 * Paired, and heard without suspicion, but a quorum server granted an epoch past the pair's (a round asked
 * on suspicion that the pair outlived: the grant or the denial told us, or the peer's heartbeat did). The
 * next grant through that server will be past it, and a takeover then, in an epoch more than one past the
 * copies' epoch, would be refused as if a solo run had happened between. So the proposer moves the pair past
 * the server's epoch; the copies are current in the new epoch with the next heartbeat. A lease we hold for
 * the old epoch stays a lease (it still keeps the peer from being granted) but can no longer become our
 * authority (`adoptable`). The other host only reports what it saw (`quorumEpoch` in its heartbeat): it
 * must not raise its own epoch alone to one a server may have granted to the peer.
 */
function passQuorumEpoch(st: Step, seen: number): void {
  const s = st.s;
  const d = s.durable;
  if (d.proposal && d.proposal.epoch > seen) {
    if (s.lastHeartbeatAt === null || s.now - s.lastHeartbeatAt >= s.cfg.heartbeatIntervalMs) sendProposal(st);
    return;
  }
  event(st, `a quorum server granted epoch ${seen} while the pair went on in epoch ${d.epoch}: moving the pair past it`);
  propose(st, seen + 1, d.proposal?.activeQuorum ?? d.activeQuorum);
}

function propose(st: Step, epoch: number, activeQuorum: QuorumServerId | null): void {
  const d = st.s.durable;
  // Until the peer accepts, a switch of quorum server is not known to both: need both servers meanwhile.
  st.s.durable = { ...d, proposal: { epoch, activeQuorum }, quorumSet: unionSet(d.quorumSet, activeQuorum) };
  event(st, `proposing pairing in epoch ${epoch}${activeQuorum !== d.activeQuorum ? ` with quorum server ${activeQuorum}` : ''}`);
  sendProposal(st);
}

function sendProposal(st: Step): void {
  const s = st.s;
  const p = s.durable.proposal;
  assert(p !== null, 'sendProposal without a proposal');
  const vms = s.peer.hb ? mergeVms(s.durable.vms, s.peer.hb.vms) : s.durable.vms;
  st.effects.push({
    kind: 'send-peer',
    msg: { kind: 'pair-propose', from: s.cfg.self, epoch: p.epoch, activeQuorum: p.activeQuorum, vms, echo: { incarnation: s.peer.incarnation, seq: s.peer.seq } },
  });
}

/** While paired, move to the first quorum server both hosts reach, if the active one is not it. */
function maybeSwitchQuorum(st: Step): void {
  const s = st.s;
  if (s.cfg.quorumServers.length < 2 || s.cfg.self > s.cfg.peer || s.durable.proposal) return;
  const peerReach = s.peer.hb?.quorumReachable ?? [];
  const both = s.cfg.quorumServers.filter((q) => s.probe.reachable[q] === true && peerReach.includes(q));
  const wanted = both[0];
  if (wanted === undefined || wanted === s.durable.activeQuorum) return;
  const activeReachable = s.durable.activeQuorum !== null && s.probe.reachable[s.durable.activeQuorum] && peerReach.includes(s.durable.activeQuorum);
  // Switch away from an active server only when one of us lost it; back to the preferred once both reach it.
  if (activeReachable && wanted !== s.cfg.quorumServers[0]) return;
  propose(st, s.durable.epoch + 1, wanted);
}

/**
 * Quorum rounds. A host asks while its peer is lost, and already while the peer is only suspected (silent
 * for `suspectAfterMs`): the grant then usually arrives before the pair lease runs out, and the host keeps
 * its VMs through the loss. What a grant may change depends on whether the peer is still counted alive:
 * - peer still fresh (paired, or pairing): the grant is held as a lease only (`quorum.fenceAt`,
 *   `grantedBy`). It lets this host run its own VMs (no one else can be granted meanwhile), but the durable
 *   epoch and authority stay the pair's: the pair goes on as if nothing happened. The holder stops renewing
 *   once the peer is heard again, and the server's lease lapses by itself.
 * - peer lost: a lease held from every server of the quorum set, for an epoch newer than any this host
 *   shared or proposed, becomes its authority at once (`adoptGrant`): in the step the peer is declared lost,
 *   not one renewal later. A lease for an older epoch (the pair agreed a new epoch since it was granted) is
 *   never adopted: a new round asks past it at once.
 * A denial only ends a lease this host held from that round; it never touches the pair lease, so a paired
 * host that lost the race to its peer keeps running until its pair lease is over, and asks again later.
 */
function quorumRounds(st: Step): void {
  const s = st.s;
  const q = s.quorum;
  if (q.inFlight) {
    const replies = Object.entries(q.replies);
    const denied = replies.find(([, r]) => r?.kind === 'denied');
    const done = replies.every(([, r]) => r !== null);
    const timedOut = s.now - q.startedAt > 4 * s.cfg.quorumRetryMs + s.cfg.quorumLeaseMs;
    if (denied) {
      const r = denied[1] as Extract<QuorumReply, { kind: 'denied' }>;
      s.quorum = { ...q, inFlight: false, fenceAt: 0, deniedBy: r.holder };
      event(st, `quorum server ${denied[0]} denied authority: ${r.holder} holds epoch ${r.epoch}`);
    } else if (done && replies.every(([, r]) => r?.kind === 'granted')) {
      const grantedBy = Object.fromEntries(replies.map(([server, r]) => [server, (r as Extract<QuorumReply, { kind: 'granted' }>).epoch]));
      const epochs = Object.values(grantedBy);
      const epoch = Math.max(s.durable.epoch, ...epochs);
      if (epochs.some((e) => e !== epoch)) {
        // Servers of the set answered different epochs: bring them all to the newest before relying on it,
        // or a later grant through the lagging one could order below ours. The round asks for that epoch
        // itself, so it converges even while the durable epoch stays the pair's (peer still fresh).
        s.quorum = { ...q, inFlight: false, lastRoundAt: null, grantedBy };
        s.durable = epoch > s.durable.epoch && !peerFresh(s) ? { ...s.durable, epoch } : s.durable;
        event(st, `quorum servers answered epochs ${epochs.join(', ')}: aligning them on ${epoch}`);
        startQuorumRound(st, epoch);
        return;
      }
      const fresh = !(q.fenceAt > s.now && s.durable.quorumSet.every((x) => q.grantedBy[x] === epoch));
      s.quorum = { ...q, inFlight: false, fenceAt: q.startedAt + quorumLeaseHolderMs(s.cfg) - s.cfg.fenceMarginMs, grantedBy, deniedBy: null };
      if (peerFresh(s) && fresh && (epoch !== s.durable.epoch || s.durable.authority !== 'quorum')) {
        event(st, `quorum lease held in epoch ${epoch} while ${s.cfg.peer} is still heard: the ${s.durable.authority === 'pair' ? 'pair' : 'host'} keeps epoch ${s.durable.epoch}`);
      }
      if (adoptGrant(st, 'quorum granted')) return;
    } else if (done || timedOut) {
      s.quorum = { ...q, inFlight: false };
    }
  }
  // The peer was declared lost while we hold a lease from an earlier round (asked on suspicion): it is our
  // authority now, before any renewal.
  if (adoptGrant(st, 'the quorum lease it holds becomes')) return;
  // A host that still hears its peer is re-pairing, not alone, unless the peer has been silent a while.
  const wanted = s.cfg.quorumServers.length > 0 && (!peerFresh(s) || peerSuspected(s)) && !initializing(s) && s.durable.quorumSet.length > 0;
  if (!wanted || s.quorum.inFlight) return;
  // A lease is renewed at a third of its term; a lease that could not become our authority (granted for an
  // epoch the pair has reached since) is replaced at the retry pace.
  const granted = grantEpoch(s);
  const usable = granted !== null && ((s.durable.authority === 'quorum' && granted === s.durable.epoch) || adoptable(s, granted));
  const interval = usable ? Math.floor(quorumLeaseHolderMs(s.cfg) / 3) : s.cfg.quorumRetryMs;
  if (s.quorum.lastRoundAt !== null && s.now - s.quorum.lastRoundAt < interval) return;
  startQuorumRound(st, null);
}

/** The one epoch every server of the quorum set granted us in the lease we hold (null: none, or they differ). */
function grantEpoch(s: CoreState): number | null {
  if (!quorumLeaseValid(s)) return null;
  const epochs = new Set(s.durable.quorumSet.map((x) => s.quorum.grantedBy[x]));
  return epochs.size === 1 ? ([...epochs][0] ?? null) : null;
}

/**
 * May a grant for `epoch` become this host's authority? Only if it is newer than every epoch it shared with
 * the peer or proposed to it: a solo term must never share an epoch with a copy the peer counts current
 * (copyRefusal), nor with a pairing the peer may have accepted.
 */
function adoptable(s: CoreState, epoch: number): boolean {
  return epoch > s.durable.epoch && epoch > (s.durable.proposal?.epoch ?? 0);
}

/**
 * With the peer lost, make the lease we hold our durable authority (persisted before any start it allows).
 * Returns whether it did.
 */
function adoptGrant(st: Step, what: string): boolean {
  const s = st.s;
  if (peerFresh(s) || initializing(s)) return false;
  const epoch = grantEpoch(s);
  if (epoch === null || (s.durable.authority === 'quorum' && epoch === s.durable.epoch)) return false;
  if (!adoptable(s, epoch)) return false;
  s.durable = { ...s.durable, epoch, authority: 'quorum' };
  event(st, `${what} authority in epoch ${epoch}`);
  return true;
}

/** Asks every server of the quorum set; `alignTo` carries our newest epoch to the servers that lag. */
function startQuorumRound(st: Step, alignTo: number | null): void {
  const s = st.s;
  const round = s.quorum.round + 1;
  const servers = s.durable.quorumSet;
  const holding = quorumLeaseValid(s);
  s.quorum = { ...s.quorum, round, startedAt: s.now, inFlight: true, lastRoundAt: s.now, replies: Object.fromEntries(servers.map((x) => [x, null])) };
  // A host starting a term of its own (not renewing one, not aligning the servers on an epoch just granted)
  // asks for an epoch past every one it shared with the peer, even from a server that still records it as
  // holder: what it writes alone then never shares an epoch with a copy the peer holds (takeoverRefusal).
  // A lease still running from an older term is not renewed once the pair has agreed a newer epoch.
  // Past our own pending proposal too: the peer may have accepted it (and hold that epoch by pairing)
  // without our hearing the accept.
  const renewing = holding && alignTo === null && s.durable.authority === 'quorum';
  const base = Math.max(s.durable.epoch, s.durable.proposal?.epoch ?? 0);
  const bump = s.durable.authority === 'quorum' && base === s.durable.epoch ? 0 : 1;
  for (const server of servers) {
    const knownEpoch = renewing ? (s.quorum.grantedBy[server] ?? s.durable.epoch) : Math.max(base + bump, alignTo ?? 0);
    st.effects.push({ kind: 'ask-quorum', server, requestId: round, knownEpoch });
  }
}

function tiebreak(st: Step): void {
  const s = st.s;
  if (s.cfg.quorumServers.length > 0 || s.cfg.tiebreakWinner !== s.cfg.self) return;
  if (peerFresh(s) || initializing(s) || s.durable.declaredDown || s.durable.authority === 'tiebreak') return;
  s.durable = { ...s.durable, epoch: s.durable.epoch + 1, authority: 'tiebreak' };
  event(st, `peer lost and no quorum server: tie-break winner takes authority in epoch ${s.durable.epoch}`);
  alert(st, 'warning', 'TIEBREAK', `${s.cfg.self} lost ${s.cfg.peer}; with no quorum server it keeps the VMs as the designated tie-break winner`);
}

function vmDecisions(st: Step): void {
  const s = st.s;
  // Maintenance and a down verdict empty a host into its peer; with no peer to take them, VMs keep running here.
  const canRun = hasAuthority(s) && !((s.durable.maintenance || s.durable.declaredDown) && pairedWithPeer(s));
  const solo = hasSoloAuthority(s) && !peerFresh(s);
  const takeoverAt = peerLeaseOverAt(s);
  const paired = pairedWithPeer(s);
  const peerCanTake = paired && s.peer.hb !== null && s.peer.hb.hostState === 'paired';
  const peerHealthier = paired && myHealth(s) + s.cfg.healthMarginPoints <= (s.peer.hb?.health ?? 0);
  s.peerHealthierSince = peerHealthier ? (s.peerHealthierSince ?? s.now) : null;
  const healthMove = s.peerHealthierSince !== null && s.now - s.peerHealthierSince >= HEALTH_MOVE_AFTER_MS;
  const moveAway = paired && peerCanTake && (s.durable.maintenance || s.durable.declaredDown || healthMove);

  for (const [name, rec] of Object.entries(s.durable.vms)) {
    const inst = s.instances[name]?.state;
    const wantRun = rec.config.desired === 'running' && !rec.config.removed && !isFailed(s, name);
    // An unprotected VM's disk exists on its own host only: started on the peer it would be another, empty
    // machine. It never moves; it runs again when its host does.
    const movable = rec.config.protection !== 'none';
    if (rec.owner.host === s.cfg.self) {
      const transferTo = movable ? (s.transfers[name] ?? (moveAway && wantRun ? s.cfg.peer : undefined)) : undefined;
      if (transferTo !== undefined && peerCanTake && pairLeaseValid(s)) {
        // A running VM moves by live migration; a stopped one is handed over, once the peer's copy holds
        // every acknowledged write. Until then the VM keeps running here (its mirror is catching up).
        if (inst === 'running' || inst === 'migrated') migrationStep(st, name);
        else if (inst === undefined && handoverSafe(s, name)) handOver(st, name, rec, transferTo);
        // Stopped here, and the peer's copy is not known to hold what we wrote last: run it here (mirrored)
        // until it is, then it moves by live migration.
        else if (inst === undefined && wantRun && hasAuthority(s)) startVm(st, name);
        continue;
      }
      if (s.migrations[name]?.phase === 'preparing') abandonMigration(st, name, `the move to ${s.cfg.peer} is no longer wanted or possible`);
      if (inst === 'incoming') {
        // We own it: a migration brought it here (the peer handed it over at the switch). Let the guest run.
        if (canRun && !(s.peer.hb !== null && peerFresh(s) && s.peer.hb.running.includes(name))) resumeVm(st, name);
        continue;
      }
      // Paired, the records are merged: what we own is ours, and so is the copy it runs on, in this epoch.
      if (hasCopies(rec) && pairedWithPeer(s)) ownCopy(st, name);
      if (wantRun && canRun && inst === undefined) startVm(st, name);
      else if ((!wantRun || !canRun) && (inst === 'starting' || inst === 'running')) {
        stopVm(st, name, !canRun ? 'no authority (fence)' : rec.config.removed ? 'removed' : 'operator stopped it');
      }
    } else {
      if (inst === 'starting' || inst === 'running') {
        stopVm(st, name, `owned by ${rec.owner.host}`);
        continue;
      }
      if (inst !== undefined) continue; // an incoming instance (incomingDecisions), or one stopping
      if (movable && solo && rec.owner.host === s.cfg.peer && s.now >= takeoverAt && inst === undefined) {
        const refusal = copyRefusal(s, name);
        if (refusal !== null) {
          refuseOnce(st, name, 'TAKEOVER_REFUSED', `VM ${name} cannot fail over to ${s.cfg.self}: ${refusal}; it runs again when ${s.cfg.peer} returns`);
          continue;
        }
        const owner = { host: s.cfg.self, epoch: s.durable.epoch, seq: rec.owner.epoch === s.durable.epoch ? rec.owner.seq + 1 : 0 };
        s.durable = { ...s.durable, vms: { ...s.durable.vms, [name]: { ...rec, owner } } };
        s.refusedTakeovers = without(s.refusedTakeovers, name);
        stopServing(st, name, 'taking it over', true);
        event(st, `took over VM ${name} from ${s.cfg.peer} in epoch ${s.durable.epoch}`);
        alert(st, 'critical', 'FAILOVER', `VM ${name} failed over from ${s.cfg.peer} to ${s.cfg.self}`, name);
        if (wantRun) startVm(st, name);
      }
    }
  }
}

function handOver(st: Step, name: VmName, rec: VmRecord, to: HostId): void {
  const s = st.s;
  const owner = { host: to, epoch: s.durable.epoch, seq: rec.owner.epoch === s.durable.epoch ? rec.owner.seq + 1 : 0 };
  s.durable = { ...s.durable, vms: { ...s.durable.vms, [name]: { ...rec, owner } } };
  // Our instance ended cleanly with its mirror in sync: our copy is the peer's, as of that stream.
  const syncPoint = s.syncPoints[name];
  s.syncPoints = without(s.syncPoints, name);
  if (hasCopies(rec)) markCopy(st, name, syncPoint !== undefined ? { stream: syncPoint, current: true } : { stream: null, current: false });
  const { [name]: _done, ...rest } = s.transfers;
  s.transfers = rest;
  s.restarts = { ...s.restarts, [name]: [] };
  event(st, `handed VM ${name} over to ${to}`);
}

function startVm(st: Step, name: VmName): void {
  const s = st.s;
  if (s.peer.hb !== null && peerFresh(s) && s.peer.hb.running.includes(name)) return; // its old host is still stopping it
  const rec = s.durable.vms[name];
  // Just booted, the peer not heard yet: it may count its copy current while ours is the one we would run
  // on. Wait for the peer (then mirror first) or for the boot's peer timeout (then authority decides).
  if (rec !== undefined && hasCopies(rec) && initializing(s)) return;
  if (rec !== undefined && hasCopies(rec) && !pairedWithPeer(s)) {
    // Alone, our record of owning it may be old news: the peer may have taken it over while we were away.
    // Our copy is the VM's only if nobody held authority since it was last ours.
    const refusal = copyRefusal(s, name);
    if (refusal !== null) {
      refuseOnce(st, name, 'START_REFUSED', `VM ${name} is not started on ${s.cfg.self} without ${s.cfg.peer}: ${refusal}; it runs again once the pair is back`);
      return;
    }
  }
  // While the peer's copy counts as current, no write of ours may miss it: start mirrored, or not yet (the
  // peer is about to serve its copy). A peer that is silent is handled by authority (we are solo here).
  const needsMirror = rec !== undefined && hasCopies(rec) && peerFresh(s) && peerCopyCurrent(s, name);
  if (needsMirror && !peerServes(s, name)) return;
  if (rec && rec.owner.epoch < s.durable.epoch) {
    // Claim it in the epoch we hold authority in: a record from an older epoch could be outranked by one
    // the peer wrote while we could not hear it, and the VM would change hands while running here.
    s.durable = { ...s.durable, vms: { ...s.durable.vms, [name]: { ...rec, owner: { host: s.cfg.self, epoch: s.durable.epoch, seq: 0 } } } };
  }
  if (rec !== undefined && hasCopies(rec)) ownCopy(st, name);
  s.refusedTakeovers = without(s.refusedTakeovers, name);
  const instance = s.nextInstance;
  s.nextInstance = instance + 1;
  s.instances = { ...s.instances, [name]: { id: instance, state: 'starting', guest: true } };
  if (needsMirror) {
    const mirror = newMirror(st, name, instance);
    st.effects.push({ kind: 'start-vm', vm: name, epoch: s.durable.epoch, instance, mirror });
    event(st, `start VM ${name} (epoch ${s.durable.epoch}), mirrored to ${s.cfg.peer} (${mirror.mode}, stream ${mirror.stream})`);
    return;
  }
  st.effects.push({ kind: 'start-vm', vm: name, epoch: s.durable.epoch, instance });
  event(st, `start VM ${name} (epoch ${s.durable.epoch})`);
}

// ── live migration ─────────────────────────────────────────────────────────────────────────────────────

/**
 * Owner side, for a running VM the core wants on the peer: prepare the migration (the peer starts an
 * incoming instance on its copy and serves that copy from inside it; our mirror resyncs into it), then
 * migrate once the mirror into that instance is in sync and the peer counts its copy current — so that at the
 * switch both copies are identical, and a failure of either host at any moment leaves a copy with every
 * acknowledged write where the VM can run.
 */
function migrationStep(st: Step, name: VmName): void {
  const s = st.s;
  const inst = s.instances[name]!;
  const mig = s.migrations[name];
  if (mig === undefined) {
    if (inst.state !== 'running' || s.mirrors[name]?.state !== 'ready' || !peerCopyCurrent(s, name)) return;
    if (s.now < (s.retryAt[`migrate:${name}`] ?? 0)) return;
    const id = `${s.cfg.self}.${s.incarnation}.${s.streamSeq + 1}`;
    s.streamSeq += 1;
    s.migrations = { ...s.migrations, [name]: { id, instance: inst.id, phase: 'preparing', stream: null, startedAt: s.now } };
    s.heartbeatNow = true;
    event(st, `live migration ${id} of VM ${name} to ${s.cfg.peer}: preparing`);
    return;
  }
  if (mig.phase !== 'preparing') return;
  const incoming = s.peer.hb?.incoming[name];
  const mirror = s.mirrors[name];
  const inSyncWithIncoming = mirror?.state === 'ready' && peerCopyCurrent(s, name) && s.peer.hb?.copies[name]?.stream === mirror.stream;
  if (incoming?.id === mig.id && incoming.failed) {
    abandonMigration(st, name, `${s.cfg.peer} could not start the incoming instance`);
  } else if (incoming?.id === mig.id && incoming.ready && incoming.port !== null && inSyncWithIncoming) {
    s.migrations = { ...s.migrations, [name]: { ...mig, phase: 'migrating', stream: mirror.stream } };
    st.effects.push({ kind: 'migrate-vm', vm: name, instance: inst.id, migration: mig.id, port: incoming.port, multifd: incoming.multifd });
    event(st, `live migration ${mig.id} of VM ${name} to ${s.cfg.peer}: migrating (its copy is in sync over stream ${mirror.stream})`);
  } else if (s.now - mig.startedAt > MIGRATION_PREPARE_MAX_MS) {
    abandonMigration(st, name, `not ready within ${MIGRATION_PREPARE_MAX_MS / 1000} s`);
  }
}

/** The switch happened: our instance will never run the guest again; the VM is the peer's, on its copy. */
function onMigrated(st: Step, name: VmName, inst: Instance, mig: OutgoingMigration): void {
  const s = st.s;
  s.instances = { ...s.instances, [name]: { id: inst.id, state: 'migrated', guest: false } };
  s.migrations = without(s.migrations, name);
  s.mirrors = without(s.mirrors, name);
  // Both copies were identical at the switch (the mirror was in sync, the guest paused): that is the sync point.
  if (mig.stream !== null) s.syncPoints = { ...s.syncPoints, [name]: mig.stream };
  const rec = s.durable.vms[name];
  if (rec) handOver(st, name, rec, s.cfg.peer);
  // The peer resumes the guest at once, before its own mirror into our copy is up: our copy (identical at
  // the switch) is not current until that mirror is in sync, and it resyncs incrementally from here.
  if (mig.stream !== null) markCopy(st, name, { stream: mig.stream, current: false });
  s.heartbeatNow = true;
  event(st, `live migration ${mig.id} of VM ${name} to ${s.cfg.peer} completed`);
  alert(st, 'info', 'VM_MIGRATED', `VM ${name} moved from ${s.cfg.self} to ${s.cfg.peer} by live migration`, name);
  stopVm(st, name, 'migrated to the peer');
}

/**
 * Gives a migration up: while it is being prepared, or once QEMU reported it failed. A migration QEMU runs
 * is never forgotten by the core alone: only its outcome (the switch, or the failure) ends it, since after
 * the switch the guest runs nowhere but in the peer's incoming instance.
 */
function abandonMigration(st: Step, name: VmName, reason: string): void {
  const s = st.s;
  const mig = s.migrations[name];
  if (!mig) return;
  s.migrations = without(s.migrations, name);
  s.retryAt = { ...s.retryAt, [`migrate:${name}`]: s.now + MIGRATION_RETRY_MS };
  // An operator's move is not retried behind their back; maintenance and health ask again by themselves.
  if (s.transfers[name]) s.transfers = without(s.transfers, name);
  s.heartbeatNow = true;
  alert(st, 'warning', 'MIGRATION_FAILED', `live migration ${mig.id} of VM ${name} to ${s.cfg.peer} failed (${reason}); it runs on ${s.cfg.self}`, name);
}

/**
 * Peer side: start an incoming instance for a migration the owner prepares (its copy must be current: the
 * switch will run the guest on it), and stop one the owner no longer prepares or that is orphaned.
 */
function incomingDecisions(st: Step): void {
  const s = st.s;
  for (const [name, rec] of Object.entries(s.durable.vms)) {
    if (rec.owner.host !== s.cfg.peer || !hasCopies(rec)) continue;
    const wanted = peerFresh(s) ? s.peer.hb?.migrations[name] : undefined;
    const inc = s.incoming[name];
    const inst = s.instances[name];
    if (inc?.failed) {
      // Remembered until the owner gives that migration up.
      if (wanted?.id !== inc.id) s.incoming = without(s.incoming, name);
      continue;
    }
    if (inc === undefined) {
      // Not without authority either: the watchdog fences every QEMU of the host, incoming ones included.
      if (!wanted || inst !== undefined || !s.durable.copies[name]?.current || !pairedWithPeer(s) || !hasAuthority(s)) continue;
      // The incoming QEMU starts beside the export (an incoming QEMU leaves its disk inactive); the copy
      // changes hands once it listens ('incoming-started').
      const instance = s.nextInstance;
      s.nextInstance = instance + 1;
      s.instances = { ...s.instances, [name]: { id: instance, state: 'incoming', guest: false } };
      const multifd = Math.min(wanted.multifd, MIGRATION_MULTIFD_CHANNELS);
      s.incoming = { ...s.incoming, [name]: { id: wanted.id, ready: false, port: null, multifd, failed: false } };
      st.effects.push({ kind: 'prepare-incoming', vm: name, instance, migration: wanted.id, multifd });
      event(st, `live migration ${wanted.id} of VM ${name} from ${s.cfg.peer}: starting the incoming instance`);
    } else if (inst?.state === 'incoming' && (!wanted || wanted.id !== inc.id)) {
      stopVm(st, name, peerFresh(s) ? `live migration ${inc.id} abandoned by ${s.cfg.peer}` : `${s.cfg.peer} is lost`);
    }
  }
}

function resumeVm(st: Step, name: VmName): void {
  const s = st.s;
  const inst = s.instances[name]!;
  s.instances = { ...s.instances, [name]: { id: inst.id, state: 'starting', guest: true } };
  s.incoming = without(s.incoming, name);
  s.exports = without(s.exports, name);
  const rec = s.durable.vms[name];
  if (rec && rec.owner.epoch < s.durable.epoch) {
    s.durable = { ...s.durable, vms: { ...s.durable.vms, [name]: { ...rec, owner: { host: s.cfg.self, epoch: s.durable.epoch, seq: 0 } } } };
  }
  ownCopy(st, name);
  st.effects.push({ kind: 'resume-vm', vm: name, instance: inst.id, epoch: s.durable.epoch });
  event(st, `resume VM ${name} here after its live migration (epoch ${s.durable.epoch})`);
}

// ── disk copies and mirrors (HA) ───────────────────────────────────────────────────────────────────────

/**
 * A stopped VM may be handed to the peer when its last instance here ended with the mirror in sync, into the
 * copy the peer reports current: nothing was written here since that the copy lacks.
 */
function handoverSafe(s: CoreState, name: VmName): boolean {
  const stream = s.endedInSync[name];
  return stream !== undefined && peerCopyCurrent(s, name) && s.peer.hb?.copies[name]?.stream === stream;
}

/** The peer's own report of its copy of a VM we own: current, as of its last heartbeat. */
function peerCopyCurrent(s: CoreState, name: VmName): boolean {
  return peerFresh(s) && s.peer.hb?.copies[name]?.current === true;
}

function peerServes(s: CoreState, name: VmName): boolean {
  return peerFresh(s) && s.peer.hb?.copies[name]?.serving === true;
}

/** Why our copy cannot be run on (null: it can): it must hold every acknowledged write. */
function copyRefusal(s: CoreState, name: VmName): string | null {
  const copy = s.durable.copies[name];
  if (!copy || !copy.current) return 'its copy here is not in sync with what the guest acknowledged';
  if (s.durable.epoch > copy.epoch + 1) {
    return `its copy here was last in sync in epoch ${copy.epoch}, and authority passed since (epoch ${s.durable.epoch}): ${s.cfg.peer} may have run it alone`;
  }
  return null;
}

function refuseOnce(st: Step, name: VmName, code: string, message: string): void {
  if (st.s.refusedTakeovers[name]) return;
  st.s.refusedTakeovers = { ...st.s.refusedTakeovers, [name]: true };
  alert(st, 'critical', code, message);
}

/** We run (or may run) the VM in this epoch: our copy is its disk, current through this epoch. */
function ownCopy(st: Step, name: VmName): void {
  const s = st.s;
  const c = s.durable.copies[name];
  if (c && c.current && c.stream === null && c.epoch >= s.durable.epoch) return;
  s.durable = { ...s.durable, copies: { ...s.durable.copies, [name]: { stream: null, current: true, epoch: Math.max(c?.epoch ?? 0, s.durable.epoch) } } };
}

/** A new stream for an instance's mirror; incremental when the peer's copy last received our sync point. */
function newMirror(st: Step, name: VmName, instance: number): { stream: string; mode: MirrorMode } {
  const s = st.s;
  const stream = `${s.cfg.self}.${s.incarnation}.${s.streamSeq + 1}`;
  s.streamSeq += 1;
  const syncPoint = s.syncPoints[name];
  const peerStream = s.peer.hb?.copies[name]?.stream ?? null;
  const mode: MirrorMode = syncPoint !== undefined && syncPoint === peerStream ? 'incremental' : 'full';
  s.mirrors = { ...s.mirrors, [name]: { instance, stream, state: 'syncing', cutting: false } };
  return { stream, mode };
}

/**
 * Owner side, for each VM running here with copies: mirror it into the peer's copy when the peer serves
 * one, and cut a mirror once no acknowledged write can be lost by it — the peer said its copy is no longer
 * current, or we hold authority without the peer (then a takeover by the peer would need an epoch past the
 * one its copy was current in, which it refuses).
 */
function mirrorDecisions(st: Step): void {
  const s = st.s;
  for (const [name, rec] of Object.entries(s.durable.vms)) {
    const inst = s.instances[name];
    if (rec.owner.host !== s.cfg.self || !hasCopies(rec) || !inst) continue;
    const m = s.mirrors[name];
    if (m === undefined) {
      if (inst.state === 'running' && pairedWithPeer(s) && peerServes(s, name) && s.now >= (s.retryAt[`mirror:${name}`] ?? 0)) {
        const { stream, mode } = newMirror(st, name, inst.id);
        st.effects.push({ kind: 'start-mirror', vm: name, instance: inst.id, stream, mode });
        event(st, `mirror VM ${name} to ${s.cfg.peer} (${mode}, stream ${stream})`);
      }
      continue;
    }
    // A start's mirror is cut only once the instance runs: until its mirror connects the driver has no
    // stream to cut (the daemon's runner names it only then) and would drop the cut, leaving us waiting
    // for a mirror-ended that never comes while the guest's writes wait on the mirror.
    if (m.cutting || inst.state === 'starting') continue;
    const peerGaveUp = peerFresh(s) && s.peer.hb?.copies[name]?.current !== true && m.state === 'stalled';
    const alone = !peerFresh(s) && hasSoloAuthority(s);
    if (peerGaveUp || alone) {
      const reason = alone ? `${s.cfg.peer} is lost and ${s.cfg.self} holds authority alone` : `${s.cfg.peer} no longer counts its copy as current`;
      s.mirrors = { ...s.mirrors, [name]: { ...m, cutting: true } };
      st.effects.push({ kind: 'cut-mirror', vm: name, instance: m.instance, stream: m.stream, reason });
      event(st, `cut the mirror of VM ${name}: ${reason}`);
    }
  }
}

/**
 * Peer side: serve our copy of each protected VM the peer owns (so that its mirror always has somewhere to
 * go), and stop serving it when the VM is ours to run or gone.
 */
function copyDecisions(st: Step): void {
  const s = st.s;
  for (const [name, rec] of Object.entries(s.durable.vms)) {
    if (s.incoming[name] && !s.incoming[name]!.failed) continue; // served from inside the incoming instance
    const want = rec.owner.host === s.cfg.peer && hasCopies(rec) && !rec.config.removed && s.instances[name] === undefined;
    const x = s.exports[name];
    if (want && x === undefined && s.now >= (s.retryAt[`export:${name}`] ?? 0)) {
      s.exports = { ...s.exports, [name]: { state: 'starting', streams: [] } };
      st.effects.push({ kind: 'serve-copy', vm: name });
    } else if (!want && x !== undefined) {
      stopServing(st, name, rec.owner.host === s.cfg.self ? 'the VM runs here now' : 'not protected here any more');
    }
  }
  for (const name of Object.keys(s.exports)) if (!(name in s.durable.vms)) stopServing(st, name, 'the VM is gone');
}

/**
 * Peer side: what the owner's heartbeat says of its mirrors decides whether our copy is current. A stream
 * that connected to the export we serve now and that the owner reports in sync makes it current; any other
 * word from the owner about that VM's mirror (a new stream, a stall) makes it not current. Silence changes
 * nothing: an owner that died with its mirror in sync left us every write it acknowledged. A heartbeat
 * that shows the VM running without a mirror means its guest writes alone.
 */
function observeOwnerMirrors(st: Step, hb: Heartbeat): void {
  const s = st.s;
  const paired = pairedWithPeer(s);
  for (const [name, rec] of Object.entries(s.durable.vms)) {
    if (rec.owner.host !== s.cfg.peer || !hasCopies(rec)) continue;
    const copy = s.durable.copies[name];
    const m = hb.mirrors[name];
    if (m === undefined) {
      // Running with no mirror: its guest writes alone. Not running: nothing is written, but nothing is
      // confirmed either — the epoch our copy was current in advances only on the owner's word.
      if (copy?.current && hb.running.includes(name)) {
        event(st, `copy of VM ${name} is no longer current: ${s.cfg.peer} runs it without a mirror`);
        markCopy(st, name, { stream: copy.stream, current: false });
      }
      continue;
    }
    const connectedHere = s.exports[name]?.state === 'ready' && s.exports[name]!.streams.includes(m.stream);
    if (m.state === 'ready' && connectedHere) {
      if (!copy?.current || copy.stream !== m.stream || (paired && copy.epoch < s.durable.epoch)) {
        if (!copy?.current) event(st, `copy of VM ${name} is in sync with ${s.cfg.peer} (stream ${m.stream})`);
        markCopy(st, name, { stream: m.stream, current: true });
      }
    } else if (copy?.current || (connectedHere && copy?.stream !== m.stream)) {
      if (copy?.current) event(st, `copy of VM ${name} is no longer current: ${s.cfg.peer} reports stream ${m.stream} ${m.state}`);
      markCopy(st, name, { stream: connectedHere ? m.stream : (copy?.stream ?? null), current: false });
    }
  }
}

/** Writes our copy's record; the epoch it was current in advances only while paired. */
function markCopy(st: Step, name: VmName, c: { stream: string | null; current: boolean }): void {
  const s = st.s;
  const before = s.durable.copies[name];
  const epoch = c.current && pairedWithPeer(s) ? Math.max(s.durable.epoch, before?.epoch ?? 0) : (before?.epoch ?? 0);
  if (before && before.stream === c.stream && before.current === c.current && before.epoch === epoch) return;
  s.durable = { ...s.durable, copies: { ...s.durable.copies, [name]: { stream: c.stream, current: c.current, epoch } } };
}

/** The peer took a VM we owned: whatever our guest wrote last may not be on the peer's copy: ours diverged. */
function lostOwnership(st: Step, name: VmName): void {
  st.s.syncPoints = without(st.s.syncPoints, name);
  const rec = st.s.durable.vms[name];
  if (rec && hasCopies(rec)) markCopy(st, name, { stream: null, current: false });
}

/** The peer handed a VM to us: our copy, current as of its stream, is now the one the VM runs on. */
function gainedOwnership(st: Step, name: VmName): void {
  const s = st.s;
  const copy = s.durable.copies[name];
  if (copy?.current && copy.stream !== null) s.syncPoints = { ...s.syncPoints, [name]: copy.stream };
  // Current or not, it is the VM's disk now; whether it may be run on alone is still copyRefusal's question.
  if (copy) s.durable = { ...s.durable, copies: { ...s.durable.copies, [name]: { ...copy, stream: null } } };
  // A migration's incoming instance serves the copy from inside; resumeVm ends that. Otherwise: let go of it.
  if (!s.incoming[name] || s.incoming[name]!.failed) stopServing(st, name, `handed over by ${s.cfg.peer}`);
}

/** Our QEMU opens the copy next: the export must let go of it first (effects run in order). */
function stopServing(st: Step, name: VmName, reason: string, takeover = false): void {
  if (!st.s.exports[name]) return;
  st.s.exports = without(st.s.exports, name);
  st.effects.push({ kind: 'unserve-copy', vm: name, reason, ...(takeover ? { takeover: true as const } : {}) });
}

function stopVm(st: Step, name: VmName, reason: string): void {
  const s = st.s;
  const inst = s.instances[name];
  assert(inst !== undefined, `stopVm ${name} without an instance`);
  s.instances = { ...s.instances, [name]: { ...inst, state: 'stopping' } };
  st.effects.push({ kind: 'stop-vm', vm: name, instance: inst.id, reason });
  event(st, `stop VM ${name}: ${reason}`);
}

function protectionAlerts(st: Step): void {
  const s = st.s;
  let announced: Record<VmName, ProtectionLevel> | null = null;
  for (const [name, rec] of Object.entries(s.durable.vms)) {
    if (rec.owner.host !== s.cfg.self || rec.config.removed) continue;
    const effective = effectiveProtection(rec.config.protection, s.splitsite.allowed);
    const before = s.announcedProtection[name] ?? rec.config.protection;
    if (effective !== before) {
      announced ??= { ...s.announcedProtection };
      announced[name] = effective;
      const rtt = s.splitsite.rttMs === null ? 'unknown' : `${s.splitsite.rttMs.toFixed(2)} ms`;
      if (effective !== rec.config.protection && stronger(effective, before)) {
        const limit = s.cfg.rttLimitMs[rec.config.protection as 'ft' | 'ha'] * RESTORE_FRACTION;
        alert(st, 'info', 'SPLITSITE_RESTORED', `VM ${name}: A-Link round trip ${rtt}; protection restored to ${effective}, not yet ${rec.config.protection.toUpperCase()} (it needs a round trip under ${limit.toFixed(1)} ms)`, name);
      } else if (effective !== rec.config.protection) {
        alert(st, 'warning', 'SPLITSITE_DOWNGRADE', `VM ${name}: A-Link round trip ${rtt} exceeds the ${rec.config.protection.toUpperCase()} limit; protection downgraded to ${effective}`, name);
      } else {
        alert(st, 'info', 'SPLITSITE_RESTORED', `VM ${name}: A-Link round trip ${rtt}; ${effective.toUpperCase()} protection restored`, name);
      }
    }
  }
  if (announced) s.announcedProtection = announced;
  ftRoomAlerts(st);
}

/** Owner side: an FT VM whose backup has no room for its checkpoint image runs as HA; an alert each way. */
function ftRoomAlerts(st: Step): void {
  const s = st.s;
  let announced: Record<VmName, true> | null = null;
  for (const [name, rec] of Object.entries(s.durable.vms)) {
    const mine = rec.owner.host === s.cfg.self && !rec.config.removed && rec.config.protection === 'ft' && rec.config.desired === 'running';
    const short = mine && !ftBackupHasRoom(s, name);
    const before = s.announcedFtRoomShort[name] === true;
    if (short === before) continue;
    announced ??= { ...s.announcedFtRoomShort };
    if (short) {
      announced[name] = true;
      alert(st, 'warning', 'FT_BACKUP_NO_ROOM', `VM ${name}: ${s.cfg.peer} has no room in its FT memory directory for this VM's checkpoint image; protection downgraded to HA until it has`, name);
    } else {
      delete announced[name];
      if (mine) alert(st, 'info', 'FT_BACKUP_ROOM_RESTORED', `VM ${name}: ${s.cfg.peer} has room for this VM's checkpoint image again; FT protection resumes`, name);
    }
  }
  if (announced) s.announcedFtRoomShort = announced;
}

/** Backup side: the daemon's latest account of its FT memory room; the owner learns it from the next heartbeat, sent at once. */
function onFtRoom(st: Step, short: VmName[]): void {
  const s = st.s;
  const next = [...new Set(short)].sort();
  if (next.length === s.ftRoomShort.length && next.every((vm, i) => vm === s.ftRoomShort[i])) return;
  event(st, next.length === 0 ? 'FT memory room here for every FT VM this host backs' : `no FT memory room here for the checkpoint image of ${next.join(', ')}: HA copies until there is`);
  s.ftRoomShort = next;
  s.heartbeatNow = true;
}

function heartbeat(st: Step): void {
  const s = st.s;
  if (!s.heartbeatNow && s.lastHeartbeatAt !== null && s.now - s.lastHeartbeatAt < s.cfg.heartbeatIntervalMs) return;
  s.heartbeatNow = false;
  const seq = s.seq + 1;
  const sentAt: Record<number, number> = { ...s.sentAt, [seq]: s.now };
  delete sentAt[seq - SENT_AT_KEPT];
  s.seq = seq;
  s.sentAt = sentAt;
  s.lastHeartbeatAt = s.now;
  const hb: Heartbeat = {
    kind: 'heartbeat',
    from: s.cfg.self,
    incarnation: s.incarnation,
    seq,
    echo: { incarnation: s.peer.incarnation, seq: s.peer.seq },
    epoch: s.durable.epoch,
    authority: s.durable.authority,
    hostState: s.hostState,
    health: myHealth(s),
    quorumReachable: s.cfg.quorumServers.filter((q) => s.probe.reachable[q] === true),
    activeQuorum: s.durable.activeQuorum,
    quorumEpoch: s.quorum.seenEpoch,
    vms: s.durable.vms,
    // Every VM with a process here that runs (or may run) guest code, stopping ones included: the peer must
    // not start them yet. A migration's incoming or switched-away instance runs none.
    running: Object.entries(s.instances).filter(([, i]) => i.guest).map(([vm]) => vm),
    mirrors: Object.fromEntries(Object.entries(s.mirrors).map(([vm, m]) => [vm, { stream: m.stream, state: m.state }])),
    copies: Object.fromEntries(
      [...new Set([...Object.keys(s.durable.copies), ...Object.keys(s.exports)])]
        .filter((vm) => s.durable.vms[vm]?.owner.host === s.cfg.peer)
        .map((vm) => {
          const c = s.durable.copies[vm];
          return [vm, { serving: s.exports[vm]?.state === 'ready', stream: c?.stream ?? null, current: c?.current ?? false }];
        }),
    ),
    ftRoomShort: [...s.ftRoomShort],
    migrations: Object.fromEntries(Object.entries(s.migrations).map(([vm, m]) => [vm, { id: m.id, multifd: MIGRATION_MULTIFD_CHANNELS }])),
    incoming: Object.fromEntries(Object.entries(s.incoming).map(([vm, i]) => [vm, { id: i.id, ready: i.ready, port: i.port, multifd: i.multifd, failed: i.failed }])),
  };
  st.effects.push({ kind: 'send-peer', msg: hb });
}

function probes(st: Step): void {
  const s = st.s;
  if (s.cfg.quorumServers.length < 2 || !pairedWithPeer(s)) return;
  if (s.probe.lastAt !== null && s.now - s.probe.lastAt < QUORUM_PROBE_INTERVAL_MS) return;
  s.probe = { ...s.probe, lastAt: s.now };
  for (const server of s.cfg.quorumServers) st.effects.push({ kind: 'probe-quorum', server });
}

function wakeAt(s: CoreState): number {
  const candidates = [(s.lastHeartbeatAt ?? s.now) + s.cfg.heartbeatIntervalMs];
  const later = (t: number): void => {
    if (t > s.now) candidates.push(t);
  };
  later(s.pairLeaseUntil - s.cfg.fenceMarginMs);
  later(s.quorum.fenceAt);
  if (s.peer.heardAt !== null) later(s.peer.heardAt + suspectAfterMs(s.cfg) + 1);
  if (s.peer.heardAt !== null) later(s.peer.heardAt + s.cfg.peerTimeoutMs + 1);
  later(s.bootAt + s.cfg.peerTimeoutMs);
  later(peerLeaseOverAt(s));
  if (s.quorum.lastRoundAt !== null) later(s.quorum.lastRoundAt + s.cfg.quorumRetryMs);
  for (const t of Object.values(s.retryAt)) later(t);
  if (s.peerHealthierSince !== null) later(s.peerHealthierSince + HEALTH_MOVE_AFTER_MS);
  const splitsiteDue = splitsiteDueAt(s.splitsite, s.cfg);
  if (splitsiteDue !== null) later(splitsiteDue);
  return Math.min(...candidates);
}

// ── small helpers ──────────────────────────────────────────────────────────────────────────────────────

function without<T>(record: Readonly<Record<string, T>>, key: string): Record<string, T> {
  if (!(key in record)) return record as Record<string, T>;
  const { [key]: _gone, ...rest } = record;
  return rest;
}

function setOf(q: QuorumServerId | null): QuorumServerId[] {
  return q === null ? [] : [q];
}

function unionSet(set: readonly QuorumServerId[], q: QuorumServerId | null): QuorumServerId[] {
  return q === null || set.includes(q) ? [...set] : [...set, q];
}

function event(st: Step, what: string): void {
  st.events.push({ at: st.s.now, host: st.s.cfg.self, what, cause: st.cause });
}

/** `vm`: the VM the alert is about, when it is about one (the daemon counts failovers, migrations, restarts by it). */
function alert(st: Step, severity: 'info' | 'warning' | 'critical', code: string, message: string, vm?: VmName): void {
  st.effects.push({ kind: 'alert', severity, code, message, ...(vm !== undefined ? { vm } : {}) });
  event(st, `alert ${severity} ${code}: ${message}`);
}

function describeInput(input: Input): string {
  switch (input.type) {
    case 'tick':
      return 'tick';
    case 'peer-message':
      return `peer ${input.msg.kind}`;
    case 'quorum-reply':
      return `quorum ${input.server} ${input.reply.kind}`;
    case 'quorum-probe':
      return `quorum ${input.server} ${input.reachable ? 'reachable' : 'unreachable'}`;
    case 'vm-event':
      return `VM ${input.vm} ${input.event.kind}`;
    case 'storage':
      return `VM ${input.vm} ${input.event.kind}`;
    case 'health':
      return 'health report';
    case 'alink-rtt':
      return `A-Link RTT ${input.rttMs} ms`;
    case 'ft-room':
      return input.short.length === 0 ? 'FT memory room for every FT VM backed here' : `no FT memory room here for ${input.short.join(', ')}`;
    case 'command':
      return `operator ${input.command.kind}`;
  }
}
