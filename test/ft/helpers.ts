/**
 * Helpers for the FT tests: the pattern guest on a boot disk with its RAM in a shared file, a unix socket
 * connection standing in for the A-Link, and directories on tmpfs (the RAM files and the backup's image live
 * there, as in the product). Everything is registered with `cleanup`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { CheckpointEngine } from '../../src/ft/checkpoint.js';
import { CheckpointSender, receiveCheckpoints, type ReceiveOutcome } from '../../src/ft/checkpoint-link.js';
import { CheckpointStore } from '../../src/ft/checkpoint-store.js';
import { PAGE_BYTES } from '../../src/ft/ram-tracker.js';
import { VmSupervisor, type VmInstance } from '../../src/qemu/supervisor.js';
import { waitFor } from '../qemu/helpers.js';
import type { VmSpec } from '../../src/qemu/vm-spec.js';
import { Cleanup } from '../support/cleanup.js';
import { patternGuestBootSector, type PatternRegion } from './pattern-guest.js';

export const MiB = 1024 * 1024;

/** A directory under /dev/shm (tmpfs), removed at cleanup. */
export async function shmDir(cleanup: Cleanup, prefix = 'lockstep-ft-test-'): Promise<string> {
  const dir = await mkdtemp(path.join('/dev/shm', prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The spec of a pattern-guest VM whose boot disk is written into `dir` (each host its own copy) and whose
 * RAM is `ramFile`. */
export async function patternVmSpec(o: { name: string; memoryMiB: number; region: PatternRegion; dir: string; ramFile: string }): Promise<VmSpec> {
  const disk = path.join(o.dir, `${o.name}-boot.img`);
  // SeaBIOS does not boot a disk of one sector: pad it to 1 MiB.
  await writeFile(disk, Buffer.concat([patternGuestBootSector(o.region), Buffer.alloc(MiB - 512)]));
  return {
    name: o.name,
    vcpus: 1,
    memoryMiB: o.memoryMiB,
    accel: 'tcg',
    disks: [{ id: 'boot', path: disk, format: 'raw' }],
    nics: [],
    memoryBackend: { path: o.ramFile },
  };
}

/** Starts `spec` and stops it at cleanup. */
export async function startVm(cleanup: Cleanup, sup: VmSupervisor, spec: VmSpec, runDir: string): Promise<VmInstance> {
  const vm = await sup.start(spec, { runDir });
  cleanup.add(() => vm.stop({ gracefulMs: 0, quitMs: 1000 }));
  return vm;
}

/** Both ends of a unix socket connection: `primary` connects, `backup` accepts. */
export async function socketPair(cleanup: Cleanup, dir: string, name = 'ft.sock'): Promise<{ primary: net.Socket; backup: net.Socket }> {
  const sockPath = path.join(dir, name);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(sockPath, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const primary = net.createConnection(sockPath);
  const backup = await accepted;
  server.close();
  cleanup.add(() => {
    primary.destroy();
    backup.destroy();
  });
  return { primary, backup };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A primary running the pattern guest (in its loop), a backup's store, and the checkpoint link between them. */
export interface CheckpointPair {
  primaryDir: string;
  backupDir: string;
  backupSup: VmSupervisor;
  vm: VmInstance;
  engine: CheckpointEngine;
  store: CheckpointStore;
  sender: CheckpointSender;
  received: Promise<ReceiveOutcome>;
  /** The primary's end of the link, for a test that writes to it directly. */
  primaryEnd: net.Socket;
}

export async function checkpointPair(cleanup: Cleanup, o: { name: string; memoryMiB: number; region: PatternRegion }): Promise<CheckpointPair> {
  const primaryDir = await shmDir(cleanup, 'lockstep-ft-primary-');
  const backupDir = await shmDir(cleanup, 'lockstep-ft-backup-');
  const primarySup = new VmSupervisor({ runRoot: path.join(primaryDir, 'run') });
  const backupSup = new VmSupervisor({ runRoot: path.join(backupDir, 'run') });
  cleanup.add(() => primarySup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  cleanup.add(() => backupSup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  const spec = await patternVmSpec({ name: o.name, memoryMiB: o.memoryMiB, region: o.region, dir: primaryDir, ramFile: path.join(primaryDir, `${o.name}.ram`) });
  const vm = await startVm(cleanup, primarySup, spec, path.join(primaryDir, 'run', o.name));
  // The guest is in its loop once it has printed 'A' and finished a pass.
  await waitFor(async () => /AB/.test(await readFile(vm.paths.serialLog, 'latin1')), 20_000, "the guest's first pass");
  const engine = await CheckpointEngine.open(vm);
  cleanup.add(() => engine.close());
  const store = await CheckpointStore.open(path.join(backupDir, 'store'), { vm: o.name, ramBytes: o.memoryMiB * MiB, pageBytes: PAGE_BYTES });
  cleanup.add(() => store.close());
  const link = await socketPair(cleanup, backupDir);
  const received = receiveCheckpoints(link.backup, store);
  const sender = new CheckpointSender(link.primary, { vm: o.name, ackTimeoutMs: 30_000 });
  return { primaryDir, backupDir, backupSup, vm, engine, store, sender, received, primaryEnd: link.primary };
}
