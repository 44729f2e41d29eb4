/**
 * The shell around the decision core: inputs in, `step`, then the decision carried out in the order the
 * core's contract asks (src/core/types.ts, `Decision`):
 *   1. `stop-vm` effects at once (stopping is always safe; a fence must not wait for a disk);
 *   2. the watchdog re-armed at `fenceAt` (it kills every QEMU then, on its own thread);
 *   3. `persist` written to the state database (synchronous, fsync'd) before anything else happens;
 *   4. the other effects, a `start-vm` only while the watchdog time has not passed; results come back as inputs;
 *   5. a tick scheduled no later than `wakeAt`.
 * Inputs are handled one at a time, in arrival order; effects never call back synchronously.
 */
import { bootState, deriveHostState, ftCopyWanted, myHealth, peerFresh, runningProtection, step, vmState, type CoreState } from '../core/host-core.js';
import type { CoreConfig, CoreEvent, Decision, Effect, Input, OperatorCommand, PeerMessage, QuorumReply, QuorumServerId, VmName } from '../core/types.js';
import { describeError } from '../util/errors.js';
import type { LogEntry, StateDb } from './state-db.js';
import type { VmRunner } from './vm-runner.js';
import { coreNow, type Watchdog } from './watchdog.js';

/** An input as a collaborator submits it: the driver stamps the time. */
export type DriverInput = Input extends infer I ? (I extends { now: number } ? Omit<I, 'now'> : never) : never;

export interface DriverPorts {
  sendPeer(msg: PeerMessage): void;
  /**
   * This host's copies of the peer's protected VMs (the backup half of HA). `ft`: the VM is FT (its copy is
   * served as an FT run, whatever the owner can run it as now).
   */
  serveCopy(vm: VmName, hardware: unknown, ft: boolean): void;
  /** `takeover`: this host takes the VM over next. */
  unserveCopy(vm: VmName, reason: string, takeover: boolean): void;
  /** After each decision, every VM's FT-ness: a copy served for the other kind is served again (`CopyServer.reconcile`). */
  copyProtection?(vm: VmName, hardware: unknown, ft: boolean): void;
  askQuorum(server: QuorumServerId, knownEpoch: number): Promise<QuorumReply>;
  probeQuorum(server: QuorumServerId): Promise<boolean>;
  /** The seed's reboot attempt after a backup fault: the daemon restarts its services. */
  restartServices(reason: string): void;
  /** Alerts were appended to the event log: notifications (src/notify/) pick them up from there. */
  alertsLogged?(): void;
  /** Entries (events or alerts) were appended to the event log: the live event stream sends them on. */
  logged?(): void;
}

/** The alerts this driver recorded since the process started: counters for the metrics, never going back. */
export interface AlertCounts {
  byCode: { code: string; severity: string; count: number }[];
  /** Alerts about one VM (failovers, migrations, restarts …), by VM and code. */
  byVm: { vm: string; code: string; count: number }[];
}

export type CommandResult = { ok: true } | { ok: false; reason: string };

/** What the API shows of the core: the host's state, its authority, the peer, and each VM as the pair sees it. */
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
  vms: { name: string; owner: string; protection: string; desired: string; state: string; hardware: unknown; copies: CopiesView }[];
}

/**
 * Whether each host's copy of a VM's disk holds every write the guest acknowledged, as this host knows it:
 * `here` from its own copy record (null: none), `peer` from the peer's last heartbeat (null: the peer is not
 * heard, or said nothing of it). The volume state (src/storage/volume.ts) is derived from these.
 */
export interface CopiesView {
  here: boolean | null;
  peer: boolean | null;
}

export class CoreDriver {
  private state: CoreState;
  private readonly queue: { input: Input; done?: (r: CommandResult) => void }[] = [];
  private busy = false;
  private tickTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Keyed `code severity` and `vm code` (neither holds a space). */
  private readonly alertsByCode = new Map<string, number>();
  private readonly alertsByVm = new Map<string, number>();

  constructor(
    private readonly cfg: CoreConfig,
    incarnation: number,
    private readonly db: StateDb,
    private readonly runner: VmRunner,
    private readonly watchdog: Watchdog,
    private readonly ports: DriverPorts,
    private readonly log: (line: string) => void,
  ) {
    this.state = bootState(cfg, db.loadDurable(), coreNow(), incarnation);
  }

  /** Runs the first step (a tick) and from then on keeps ticking by `wakeAt`. */
  start(): void {
    this.submit({ type: 'tick' });
  }

  submit(input: DriverInput): void {
    if (this.stopped) return;
    this.queue.push({ input: { ...input, now: coreNow() } as Input });
    this.drain();
  }

  /** An operator command through the core; resolves with the core's answer once its decision is carried out. */
  command(command: OperatorCommand): Promise<CommandResult> {
    if (this.stopped) return Promise.resolve({ ok: false, reason: 'lockstepd is shutting down' });
    return new Promise((resolve) => {
      this.queue.push({ input: { type: 'command', now: coreNow(), command }, done: resolve });
      this.drain();
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.tickTimer) clearTimeout(this.tickTimer);
  }

  view(): CoreView {
    const s = this.state;
    const hb = peerFresh(s) ? s.peer.hb : null;
    return {
      host: this.cfg.self,
      peer: this.cfg.peer,
      state: deriveHostState(s),
      epoch: s.durable.epoch,
      authority: s.durable.authority,
      health: myHealth(s),
      peerHeard: hb !== null,
      peerState: hb?.hostState ?? null,
      peerHealth: hb?.health ?? null,
      activeQuorum: s.durable.activeQuorum,
      rttMs: s.splitsite.rttMs,
      maintenance: s.durable.maintenance,
      declaredDown: s.durable.declaredDown,
      vms: Object.values(s.durable.vms)
        .filter((r) => !r.config.removed)
        .sort((a, b) => a.config.name.localeCompare(b.config.name))
        .map((r) => ({
          name: r.config.name,
          owner: r.owner.host,
          protection: r.config.protection,
          desired: r.config.desired,
          state: vmState(s, r.config.name),
          hardware: r.config.hardware,
          copies: {
            here: s.durable.copies[r.config.name]?.current ?? null,
            peer: hb?.copies[r.config.name]?.current ?? null,
          },
        })),
    };
  }

  alertCounts(): AlertCounts {
    const split = (m: Map<string, number>): [string, string, number][] => [...m].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, n]) => [...(k.split(' ') as [string, string]), n]);
    return {
      byCode: split(this.alertsByCode).map(([code, severity, count]) => ({ code, severity, count })),
      byVm: split(this.alertsByVm).map(([vm, code, count]) => ({ vm, code, count })),
    };
  }

  /** FT as configured and as SplitSite and the backup's FT room allow now (otherwise an FT VM runs as HA). */
  runsAsFt(vm: VmName): boolean {
    return runningProtection(this.state, vm) === 'ft';
  }

  /** The peer's FT VMs this host backs (to run or running), with their hardware: the FT room watch accounts their images. */
  ftVmsBacked(): { vm: VmName; hardware: unknown }[] {
    return Object.values(this.state.durable.vms)
      .filter((r) => r.owner.host === this.cfg.peer && !r.config.removed && r.config.desired === 'running' && r.config.protection === 'ft')
      .map((r) => ({ vm: r.config.name, hardware: r.config.hardware }));
  }

  /** The VM's copy on the backup is an FT run: FT configured, and the backup has room for its checkpoint image. */
  private ftCopy(vm: VmName): boolean {
    return ftCopyWanted(this.state, vm);
  }

  /** The hardware of a VM as the pair's replicated record holds it. */
  private hardwareOf(vm: VmName): unknown {
    return this.state.durable.vms[vm]?.config.hardware;
  }

  private drain(): void {
    if (this.busy) return;
    this.busy = true;
    try {
      for (let item = this.queue.shift(); item && !this.stopped; item = this.queue.shift()) {
        const [next, decision] = step(this.state, item.input);
        this.state = next;
        this.carryOut(decision, item.input);
        item.done?.(decision.commandResult ?? { ok: true });
      }
    } finally {
      this.busy = false;
    }
  }

  private carryOut(d: Decision, cause: Input): void {
    for (const e of d.effects) if (e.kind === 'stop-vm') this.runner.stop(e.vm, e.instance, e.reason);
    this.watchdog.arm(d.fenceAt);
    if (d.persist) this.db.saveDurable(d.persist);
    this.record(d.events, d.effects, cause);
    for (const e of d.effects) if (e.kind !== 'stop-vm') this.run(e);
    // SplitSite allows FT again: an FT VM running here as HA (started while the link was too slow) begins a run.
    for (const e of d.effects) if (e.kind === 'alert' && e.code === 'SPLITSITE_RESTORED' && e.vm !== undefined && this.runsAsFt(e.vm)) this.runner.ftAllowed(e.vm);
    // Every VM's protection as it is now: a copy served for the other kind is served again, a VM running here
    // goes into or out of FT (the runner ignores VMs that do not run here, or whose protection stands). An FT
    // VM this host migrates to the peer is HA's meanwhile: its run is handed over first (the peer's copy, then
    // every write through, changes hands as an HA copy does), and it is FT again wherever it runs after.
    for (const [vm, rec] of Object.entries(this.state.durable.vms)) {
      // An FT VM whose backup has no room for its checkpoint image is HA's the same way, on both hosts.
      this.ports.copyProtection?.(vm, rec.config.hardware, this.ftCopy(vm));
      const migrating = this.state.migrations[vm] !== undefined;
      this.runner.protectionChanged(vm, rec.config.protection === 'ft' && (migrating || !this.ftCopy(vm)) ? 'ha' : rec.config.protection);
    }
    this.scheduleTick(d.wakeAt);
  }

  private run(e: Exclude<Effect, { kind: 'stop-vm' }>): void {
    switch (e.kind) {
      case 'send-peer':
        this.ports.sendPeer(e.msg);
        return;
      case 'ask-quorum':
        void this.ports.askQuorum(e.server, e.knownEpoch).then((reply) => this.submit({ type: 'quorum-reply', server: e.server, requestId: e.requestId, reply }));
        return;
      case 'probe-quorum':
        void this.ports.probeQuorum(e.server).then((reachable) => this.submit({ type: 'quorum-probe', server: e.server, reachable }));
        return;
      case 'start-vm':
        // The start was decided in time, but the persist before it may have taken long: never start past the fence.
        if (this.watchdog.expired(coreNow())) {
          queueMicrotask(() => this.submit({ type: 'vm-event', vm: e.vm, event: { kind: 'start-failed', instance: e.instance, reason: 'authority ran out before the start' } }));
          return;
        }
        this.runner.start(e.vm, {
          instance: e.instance,
          hardware: this.hardwareOf(e.vm),
          protectedVm: this.state.durable.vms[e.vm]?.config.protection !== 'none',
          ft: this.ftCopy(e.vm),
          ...(e.mirror ? { mirror: e.mirror } : {}),
        });
        return;
      case 'start-mirror':
        this.runner.startMirror(e.vm, e.instance, e.stream, e.mode);
        return;
      case 'cut-mirror':
        this.runner.cutMirror(e.vm, e.instance, e.stream);
        return;
      case 'prepare-incoming':
        this.runner.prepareIncoming(e.vm, e.instance, { id: e.migration, multifd: e.multifd }, this.hardwareOf(e.vm), this.ftCopy(e.vm));
        return;
      case 'export-incoming':
        this.runner.exportIncoming(e.vm, e.instance);
        return;
      case 'migrate-vm':
        this.runner.migrateOut(e.vm, e.instance, { id: e.migration, multifd: e.multifd }, e.port);
        return;
      case 'resume-vm':
        // Like a start: never past the fence.
        if (this.watchdog.expired(coreNow())) {
          queueMicrotask(() => this.submit({ type: 'vm-event', vm: e.vm, event: { kind: 'start-failed', instance: e.instance, reason: 'authority ran out before the resume' } }));
          return;
        }
        this.runner.resume(e.vm, e.instance);
        return;
      case 'serve-copy':
        this.ports.serveCopy(e.vm, this.hardwareOf(e.vm), this.ftCopy(e.vm));
        return;
      case 'unserve-copy':
        this.ports.unserveCopy(e.vm, e.reason, e.takeover === true);
        return;
      case 'restart-services':
        this.ports.restartServices(e.reason);
        return;
      case 'alert':
        return; // recorded with the events
    }
  }

  private record(events: readonly CoreEvent[], effects: readonly Effect[], cause: Input): void {
    const wallMs = Date.now();
    const entries: LogEntry[] = events.map((ev) => ({ wallMs, atMs: ev.at, host: ev.host, kind: 'event', severity: null, code: null, what: ev.what, cause: ev.cause }));
    for (const e of effects) {
      if (e.kind !== 'alert') continue;
      bump(this.alertsByCode, `${e.code} ${e.severity}`);
      if (e.vm !== undefined) bump(this.alertsByVm, `${e.vm} ${e.code}`);
      entries.push({ wallMs, atMs: cause.now, host: this.cfg.self, kind: 'alert', severity: e.severity, code: e.code, what: e.message, cause: describeInput(cause) });
    }
    if (entries.length === 0) return;
    for (const en of entries) this.log(en.kind === 'alert' ? `ALERT ${en.severity} ${en.code}: ${en.what}` : `${en.what} (cause: ${en.cause})`);
    try {
      this.db.appendLog(entries);
    } catch (err) {
      // The audit log is not the durable state: losing an entry must not stop the decisions.
      this.log(`could not append to the event log: ${describeError(err)}`);
    }
    if (entries.some((en) => en.kind === 'alert')) this.ports.alertsLogged?.();
    this.ports.logged?.();
  }

  private scheduleTick(wakeAt: number): void {
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.tickTimer = setTimeout(() => this.submit({ type: 'tick' }), Math.max(0, wakeAt - coreNow()));
  }
}

function bump(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/** A short description of the input that caused a decision (the core's events carry their own). */
function describeInput(input: Input): string {
  switch (input.type) {
    case 'peer-message':
      return `${input.msg.kind} from ${input.msg.from}`;
    case 'quorum-reply':
      return `quorum ${input.server}: ${input.reply.kind}`;
    case 'quorum-probe':
      return `quorum ${input.server} ${input.reachable ? 'reachable' : 'unreachable'}`;
    case 'vm-event':
    case 'storage':
      return `VM ${input.vm}: ${input.event.kind}`;
    case 'command':
      return `operator: ${input.command.kind}`;
    default:
      return input.type;
  }
}
