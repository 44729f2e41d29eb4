/**
 * The QEMU processes of one host, started and stopped on the decision core's orders. Each start is an
 * *instance* named by the core; everything that happens to it (started, failed to start, exited and why) is
 * reported back with that instance id, so a late event of an old instance can never be mistaken for the
 * current one. The runner decides nothing: whether a VM should run is the core's call.
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { describeError } from '../util/errors.js';
import { run } from '../util/exec.js';
import { createQcow2, exists } from '../storage/disk-image.js';
import { VmSupervisor, reapStale, type VmExit, type VmInstance } from '../qemu/supervisor.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import type { VmEvent, VmName } from '../core/types.js';
import type { DaemonConfig } from './config.js';
import { parseVmHardware, type VmHardware } from './vm-definition.js';

export type VmRunState = 'starting' | 'running' | 'stopping';

export interface RunningVm {
  name: VmName;
  instance: number;
  state: VmRunState;
  pid: number | null;
  startedAt: string | null;
}

export interface LastExit extends VmExit {
  instance: number;
  at: string;
  expected: boolean;
}

interface Slot {
  instance: number;
  state: VmRunState;
  qemu: VmInstance | null;
  startedAt: string | null;
  /** A stop arrived while QEMU was still starting: stop it as soon as it is up. */
  stopWanted: boolean;
}

/** Longest a graceful stop (ACPI power button) may take before SIGKILL. The watchdog may kill sooner. */
const GRACEFUL_STOP_MS = 5000;

export class VmRunner {
  private readonly slots = new Map<VmName, Slot>();
  private readonly lastExits = new Map<VmName, LastExit>();
  private readonly supervisor = new VmSupervisor();
  private readonly runRoot: string;

  constructor(
    private readonly config: DaemonConfig,
    private readonly report: (vm: VmName, event: VmEvent) => void,
    private readonly onPidsChanged: (pids: number[]) => void,
    private readonly log: (line: string) => void,
  ) {
    this.runRoot = path.join(config.dataDir, 'run', 'vms');
  }

  /** At daemon start: a QEMU left by a crashed predecessor runs without authority; kill it before anything. */
  async reapLeftovers(): Promise<void> {
    for (const pid of await reapStale(this.runRoot)) this.log(`reaped a QEMU (pid ${pid}) left by an earlier lockstepd`);
  }

  start(name: VmName, instance: number, hardwareRaw: unknown): void {
    const busy = this.slots.get(name);
    if (busy) {
      // The core starts a VM only once its previous instance is gone; a second start is a driver bug upstream.
      this.report(name, { kind: 'start-failed', instance, reason: `instance ${busy.instance} is still ${busy.state}` });
      return;
    }
    const slot: Slot = { instance, state: 'starting', qemu: null, startedAt: null, stopWanted: false };
    this.slots.set(name, slot);
    void this.launch(name, slot, hardwareRaw);
  }

  stop(name: VmName, instance: number, reason: string): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance) return;
    slot.stopWanted = true;
    if (slot.qemu && slot.state !== 'stopping') {
      slot.state = 'stopping';
      this.log(`stopping VM ${name} (instance ${instance}): ${reason}`);
      void slot.qemu.stop({ gracefulMs: GRACEFUL_STOP_MS });
    }
  }

  /** Daemon shutdown: stop every VM gracefully (the core will decide again at the next boot). */
  async shutdown(): Promise<void> {
    await Promise.all(
      [...this.slots.values()].map(async (slot) => {
        slot.stopWanted = true;
        if (!slot.qemu) return;
        slot.state = 'stopping';
        await slot.qemu.stop({ gracefulMs: GRACEFUL_STOP_MS });
        await slot.qemu.exited;
      }),
    );
  }

  running(): RunningVm[] {
    return [...this.slots.entries()]
      .map(([name, s]) => ({ name, instance: s.instance, state: s.state, pid: s.qemu?.pid ?? null, startedAt: s.startedAt }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  lastExit(name: VmName): LastExit | null {
    return this.lastExits.get(name) ?? null;
  }

  pids(): number[] {
    return [...this.slots.values()].flatMap((s) => (s.qemu ? [s.qemu.pid] : []));
  }

  /** QMP `query-status` of every running VM within the timeout: the health monitor's QEMU check. */
  async qmpResponsive(timeoutMs: number): Promise<'ok' | 'failed'> {
    const qemus = [...this.slots.values()].flatMap((s) => (s.qemu && s.state === 'running' ? [s.qemu] : []));
    const answers = await Promise.all(
      qemus.map((q) =>
        q.qmp.execute('query-status', undefined, { timeoutMs }).then(
          () => true,
          () => false,
        ),
      ),
    );
    return answers.every(Boolean) ? 'ok' : 'failed';
  }

  private async launch(name: VmName, slot: Slot, hardwareRaw: unknown): Promise<void> {
    let qemu: VmInstance;
    try {
      const spec = await this.prepare(name, parseVmHardware(hardwareRaw));
      qemu = await this.supervisor.start(spec, { runDir: path.join(this.runRoot, name) });
    } catch (e) {
      this.slots.delete(name);
      this.log(`VM ${name} (instance ${slot.instance}) failed to start: ${describeError(e)}`);
      this.report(name, { kind: 'start-failed', instance: slot.instance, reason: describeError(e) });
      return;
    }
    slot.qemu = qemu;
    slot.startedAt = new Date().toISOString();
    slot.state = 'running';
    this.onPidsChanged(this.pids());
    this.log(`started VM ${name} (instance ${slot.instance}, QEMU pid ${qemu.pid})`);
    void qemu.exited.then((exit) => this.onExit(name, slot, exit));
    this.report(name, { kind: 'started', instance: slot.instance });
    if (slot.stopWanted) this.stop(name, slot.instance, 'stop asked while starting');
  }

  private onExit(name: VmName, slot: Slot, exit: VmExit): void {
    if (this.slots.get(name) === slot) this.slots.delete(name);
    this.onPidsChanged(this.pids());
    const expected = slot.stopWanted;
    this.lastExits.set(name, { ...exit, instance: slot.instance, at: new Date().toISOString(), expected });
    const detail = exit.signal ? ` (${exit.signal})` : exit.code !== null ? ` (exit ${exit.code})` : '';
    this.log(`VM ${name} (instance ${slot.instance}) exited: ${exit.cause}${detail}${expected ? '' : ' — not asked to stop'}`);
    // A guest that powered off, or a QEMU told to quit, left no write in flight: its disk is what it acknowledged.
    const clean = exit.shutdownReason === 'guest-shutdown' || exit.shutdownReason === 'host-qmp-quit';
    this.report(name, { kind: 'exited', instance: slot.instance, cause: exit.cause, expected, clean });
  }

  /** The host-local half of starting a VM: its disk in this host's data directory and its tap. */
  private async prepare(name: VmName, hw: VmHardware): Promise<VmSpec> {
    const disksDir = path.join(this.config.dataDir, 'disks');
    await mkdir(disksDir, { recursive: true });
    const disk = path.join(disksDir, `${name}.qcow2`);
    if (!(await exists(disk))) await createQcow2(disk, hw.diskMiB);
    const tap = tapName(name);
    await ensureTap(tap, this.config.businessBridge);
    return {
      name,
      vcpus: hw.vcpus,
      memoryMiB: hw.memoryMiB,
      accel: this.config.accel,
      boot: hw.guest,
      disks: [{ id: 'vda', path: disk, format: 'qcow2', cache: 'writeback' }],
      nics: [{ id: 'net0', mac: hw.nic.mac, tap }],
    };
  }
}

/** Interface names are at most 15 bytes: `t-NAME`, or for a long name its start and a short hash, still unique. */
export function tapName(vm: string): string {
  const plain = `t-${vm}`;
  if (plain.length <= 15) return plain;
  return `t-${vm.slice(0, 8)}-${createHash('sha256').update(vm).digest('hex').slice(0, 4)}`;
}

async function ensureTap(tap: string, bridge: string): Promise<void> {
  const shown = await run('ip', ['link', 'show', 'dev', tap], { allowFailure: true });
  if (shown.code !== 0) await run('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  await run('ip', ['link', 'set', tap, 'master', bridge, 'up']);
}
