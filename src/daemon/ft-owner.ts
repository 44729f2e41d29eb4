/**
 * The owner half of FT for one running VM instance (docs/ft.md, "lockstepd"): an output gate on each of its
 * NICs, attached at run time — so a VM resumed from a checkpoint is protected the same way as one booted here —
 * and one `FtPrimary` per protection run, over a checkpoint stream to the peer.
 *
 * It decides nothing. A run starts once the disk's mirror into the peer's epoch disk is in sync (the
 * runner's call). When the run loses the peer, the guest's output stays held: the backup may be about to
 * resume from the last acknowledged checkpoint, and output of later epochs must then never have left.
 * `goUnprotected()` is the decision core's (`cut-mirror`: the peer can no longer take the VM over).
 * `handOver()` ends a run without a loss when the VM stops being FT while it runs: the peer's copy keeps
 * every write and goes on as HA's.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { FtPrimary, type FtPrimaryStats } from '../ft/ft-primary.js';
import { OutputGate, attachOutputGate, outputGateSockets } from '../ft/output-commit.js';
import type { DriverLog } from '../qemu/log.js';
import type { VmInstance } from '../qemu/supervisor.js';
import type { DiskMirror } from '../storage/disk-mirror.js';
import type { LockstepError } from '../util/errors.js';

export interface FtOwnerOptions {
  vm: VmInstance;
  /** The QEMU ids of the VM's NICs: each one's output is held by its own gate, all released by one ack. */
  nicIds: readonly string[];
  /** The instance's run directory: the gate's sockets go there. */
  runDir: string;
  epochMs: number;
  log: DriverLog;
  /** A run lost the peer: its output is held until `goUnprotected()`. */
  onLost: (error: LockstepError) => void;
}

export class FtOwner {
  /** One per NIC, in `nicIds`' order, once the first run made them. */
  private gates: OutputGate[] = [];
  /** How many of `gates` are attached to their NIC (from the first on). */
  private attached = 0;
  private primary: FtPrimary | null = null;
  /** Protection runs started, for the stream ids and the views. */
  private runs = 0;
  /** Inside `goUnprotected`: the loss it causes is the caller's own decision, not news for it. */
  private deciding = false;

  constructor(private readonly opts: FtOwnerOptions) {}

  /** The running protection's numbers, or the last run's once it ended (null before the first). */
  get stats(): (FtPrimaryStats & { run: number }) | null {
    return this.primary ? { ...this.primary.stats, run: this.runs } : null;
  }

  /** Whether a run is protecting, or lost its peer and holds output (not yet told to go unprotected). */
  get active(): boolean {
    const state = this.primary?.stats.state;
    return state === 'protecting' || state === 'peer-lost';
  }

  /**
   * Starts a protection run: the gate holds the guest's output from now, then the checkpoint stream is
   * opened (`openStream`) and the epochs begin with a full image. `mirror` must be in sync with the peer's
   * epoch disk. Throws what the gate, the stream or `FtPrimary.start` throw; output then passes again.
   */
  async protect(mirror: DiskMirror, openStream: () => Promise<string>): Promise<void> {
    const { vm, nicIds, log } = this.opts;
    const name = vm.spec.name;
    if (this.active) throw new Error(`VM ${name} is already FT-protected (run ${this.runs})`);
    const gates = await this.holdOutput();
    let stream: Duplex | null = null;
    try {
      const socketPath = await openStream();
      stream = await connect(socketPath);
      const primary = await FtPrimary.start({ vm, gates, mirrors: [mirror], stream, epochMs: this.opts.epochMs, log });
      this.runs++;
      this.primary = primary;
      primary.on('peerLost', (e) => {
        if (!this.deciding) this.opts.onLost(e);
      });
      log.info(`FT of VM ${name}: protection run ${this.runs} started (epochs of ${this.opts.epochMs} ms, output of NIC${nicIds.length === 1 ? '' : 's'} ${nicIds.join(', ')} held until each epoch is acked)`, { vm: name });
    } catch (e) {
      stream?.destroy();
      for (const gate of gates) gate.unprotect();
      throw e;
    }
  }

  /** Whether a run is protecting now (epochs running, its peer answering). */
  get protecting(): boolean {
    return this.primary?.stats.state === 'protecting';
  }

  /**
   * The VM is FT no more (HA now) while it runs: the run ends without a loss (`FtPrimary.handOver`) and its
   * output passes. Resolves at once when no run is protecting. A handover that fails is the run's loss:
   * `onLost` hears it, the output stays held, and this rejects.
   */
  async handOver(): Promise<void> {
    if (!this.protecting) return;
    await this.primary!.handOver();
    this.opts.log.info(`FT of VM ${this.opts.vm.spec.name}: protection run ${this.runs} handed over: mirrored as HA from now`, { vm: this.opts.vm.spec.name });
  }

  /**
   * The decision core's call: the peer can no longer take the VM over, so what the guest sent goes out and
   * later output passes at once. A run that has not noticed the loss yet ends as if it had.
   */
  goUnprotected(reason: string): void {
    this.deciding = true;
    try {
      this.primary?.giveUp(reason);
    } finally {
      this.deciding = false;
    }
  }

  /** The instance is going away: its run stops; held output is dropped with the gate (never sent). */
  async close(): Promise<void> {
    await this.primary?.stop().catch(() => undefined);
    await Promise.all(this.gates.map((g) => g.close()));
  }

  /**
   * The gates on the NICs, holding: each listening and attached once per instance, protecting again for a
   * later run. When a NIC's gate cannot listen or attach, the run does not start and every gate passes
   * again (the NICs attached so far stay attached; a later run attaches the rest).
   */
  private async holdOutput(): Promise<OutputGate[]> {
    const { vm, nicIds, runDir } = this.opts;
    for (const gate of this.gates) gate.protect();
    try {
      for (const nicId of nicIds.slice(this.gates.length)) {
        this.gates.push(
          await OutputGate.listen({
            sockets: outputGateSockets(runDir, nicId),
            name: `${vm.spec.name}/${nicId}`,
            onSoftLimit: () => this.primary?.endEpochSoon(),
            log: this.opts.log,
          }),
        );
      }
      for (; this.attached < nicIds.length; this.attached++) await attachOutputGate(vm.qmp, nicIds[this.attached]!, this.gates[this.attached]!);
    } catch (e) {
      for (const gate of this.gates) gate.unprotect();
      throw e;
    }
    return this.gates;
  }
}

/** The checkpoint stream's local end: the dialer's unix socket, whose other side is the TLS stream to the peer. */
function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath, () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
