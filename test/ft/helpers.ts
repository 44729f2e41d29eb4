/**
 * Helpers for the FT tests: the pattern guest on a boot disk with its RAM in a shared file, a unix socket
 * connection standing in for the A-Link, and directories on tmpfs (the RAM files and the backup's image live
 * there, as in the product). Everything is registered with `cleanup`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { VmSupervisor, VmInstance } from '../../src/qemu/supervisor.js';
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
