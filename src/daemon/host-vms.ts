/**
 * The VMs of one host: turns each definition into a QEMU process through the supervisor, with its disk in
 * the host's data directory and its tap on the host's business bridge, and keeps the record of how each
 * one is doing (running, stopped, crashed, with the cause of its last exit).
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { run } from '../util/exec.js';
import { createQcow2, exists } from '../storage/disk-image.js';
import { VmSupervisor, reapStale, type VmExit, type VmInstance } from '../qemu/supervisor.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import type { DaemonConfig } from './config.js';
import type { VmDefinition } from './vm-definition.js';
import { VmStore } from './vm-store.js';

export type VmRunState = 'starting' | 'running' | 'stopping' | 'stopped' | 'crashed';

export interface VmStatus {
  name: string;
  host: string;
  protection: VmDefinition['protection'];
  desired: VmDefinition['desired'];
  state: VmRunState;
  pid: number | null;
  address: string;
  mac: string;
  startedAt: string | null;
  lastExit: (VmExit & { at: string }) | null;
}

interface Entry {
  def: VmDefinition;
  state: VmRunState;
  instance: VmInstance | null;
  startedAt: string | null;
  lastExit: (VmExit & { at: string }) | null;
}

const GRACEFUL_STOP_MS = 5000;

export class HostVms {
  private readonly entries = new Map<string, Entry>();
  private readonly store: VmStore;
  private readonly supervisor: VmSupervisor;
  private readonly runRoot: string;

  constructor(
    private readonly config: DaemonConfig,
    private readonly log: (line: string) => void,
  ) {
    this.store = new VmStore(path.join(config.dataDir, 'vms'));
    this.runRoot = path.join(config.dataDir, 'run', 'vms');
    this.supervisor = new VmSupervisor();
  }

  /** At daemon start: kill QEMUs a crashed predecessor left, then start every VM that should run. */
  async boot(): Promise<void> {
    const reaped = await reapStale(this.runRoot);
    for (const pid of reaped) this.log(`reaped a QEMU (pid ${pid}) left by an earlier lockstepd`);
    for (const def of await this.store.list()) {
      this.entries.set(def.name, { def, state: 'stopped', instance: null, startedAt: null, lastExit: null });
      if (def.desired === 'running') await this.start(def.name);
    }
  }

  async define(def: VmDefinition): Promise<VmStatus> {
    if (this.entries.has(def.name)) throw new LockstepError('VM_ALREADY_EXISTS', `VM '${def.name}' exists already on ${this.config.host}`, { vm: def.name });
    await this.store.save({ ...def, desired: 'stopped' });
    this.entries.set(def.name, { def: { ...def, desired: 'stopped' }, state: 'stopped', instance: null, startedAt: null, lastExit: null });
    this.log(`defined VM ${def.name}`);
    if (def.desired === 'running') await this.start(def.name);
    return this.status(def.name);
  }

  async start(name: string): Promise<VmStatus> {
    const entry = this.entry(name);
    await this.setDesired(entry, 'running');
    if (entry.instance) return this.status(name);
    entry.state = 'starting';
    try {
      const spec = await this.prepare(entry.def);
      const instance = await this.supervisor.start(spec, { runDir: path.join(this.runRoot, name) });
      entry.instance = instance;
      entry.state = 'running';
      entry.startedAt = new Date().toISOString();
      this.log(`started VM ${name} (QEMU pid ${instance.pid})`);
      void instance.exited.then((exit) => this.onExit(entry, instance, exit));
    } catch (e) {
      entry.state = 'crashed';
      throw e;
    }
    return this.status(name);
  }

  async stop(name: string): Promise<VmStatus> {
    const entry = this.entry(name);
    await this.setDesired(entry, 'stopped');
    const instance = entry.instance;
    if (instance) {
      entry.state = 'stopping';
      await instance.stop({ gracefulMs: GRACEFUL_STOP_MS });
      await instance.exited;
    }
    return this.status(name);
  }

  async remove(name: string): Promise<void> {
    await this.stop(name);
    await this.store.remove(name);
    this.entries.delete(name);
    this.log(`removed VM ${name} (its disk stays in ${path.join(this.config.dataDir, 'disks')})`);
  }

  /** Daemon shutdown: stop every VM gracefully, keeping their desired state for the next boot. */
  async shutdown(): Promise<void> {
    await Promise.all(
      [...this.entries.values()].map(async (entry) => {
        if (!entry.instance) return;
        entry.state = 'stopping';
        await entry.instance.stop({ gracefulMs: GRACEFUL_STOP_MS });
        await entry.instance.exited;
      }),
    );
  }

  list(): VmStatus[] {
    return [...this.entries.keys()].sort().map((n) => this.status(n));
  }

  status(name: string): VmStatus {
    const e = this.entry(name);
    return {
      name,
      host: this.config.host,
      protection: e.def.protection,
      desired: e.def.desired,
      state: e.state,
      pid: e.instance?.pid ?? null,
      address: e.def.nic.address,
      mac: e.def.nic.mac,
      startedAt: e.startedAt,
      lastExit: e.lastExit,
    };
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}' on ${this.config.host}`, { vm: name });
    return e;
  }

  private async setDesired(entry: Entry, desired: VmDefinition['desired']): Promise<void> {
    if (entry.def.desired === desired) return;
    entry.def = { ...entry.def, desired };
    await this.store.save(entry.def);
  }

  private onExit(entry: Entry, instance: VmInstance, exit: VmExit): void {
    if (entry.instance !== instance) return;
    entry.instance = null;
    entry.lastExit = { ...exit, at: new Date().toISOString() };
    const expected = entry.state === 'stopping';
    entry.state = expected ? 'stopped' : 'crashed';
    this.log(`VM ${entry.def.name} exited: ${exit.cause}${exit.signal ? ` (${exit.signal})` : exit.code !== null ? ` (exit ${exit.code})` : ''}${expected ? '' : ' — not asked to stop'}`);
  }

  /** The host-local half of starting a VM: its disk in this host's data directory and its tap. */
  private async prepare(def: VmDefinition): Promise<VmSpec> {
    const disksDir = path.join(this.config.dataDir, 'disks');
    await mkdir(disksDir, { recursive: true });
    const disk = path.join(disksDir, `${def.name}.qcow2`);
    if (!(await exists(disk))) await createQcow2(disk, def.diskMiB);
    const tap = tapName(def.name);
    await ensureTap(tap, this.config.businessBridge);
    return {
      name: def.name,
      vcpus: def.vcpus,
      memoryMiB: def.memoryMiB,
      accel: this.config.accel,
      boot: def.guest,
      disks: [{ id: 'vda', path: disk, format: 'qcow2', cache: 'writeback' }],
      nics: [{ id: 'net0', mac: def.nic.mac, tap }],
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
