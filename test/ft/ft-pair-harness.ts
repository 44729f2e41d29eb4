/**
 * An FT pair on one machine, for the FT pair test and bench: the lab guest (record service on TCP 7070, its
 * disk a qcow2) on a "primary" QEMU with its RAM in a shared file and its NIC behind an output gate; the
 * backup's copy of the disk served by qemu-nbd behind an epoch disk, fed by the primary's write-blocking
 * mirror; `FtPrimary` → `FtBackup` over a unix socket pair (optionally through a relay that can damage a
 * checkpoint on its way).
 *
 * The network: one namespace per test file with a bridge; each pair's two taps (the primary's and, for the
 * resumed VM, the backup's) are persistent taps on that bridge, so a client on the bridge (a unix-socket to
 * TCP proxy inside the namespace, so the test binds nothing outside it) reaches the guest at the same IP and
 * MAC wherever it runs, once the bridge has learnt the MAC's port (announce-self after the resume).
 *
 * Everything started is registered with `cleanup`.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CheckpointStore } from '../../src/ft/checkpoint-store.js';
import { EpochDisk } from '../../src/ft/epoch-disk.js';
import { FtBackup } from '../../src/ft/ft-backup.js';
import { FtPrimary } from '../../src/ft/ft-primary.js';
import { OutputGate, outputGateSockets } from '../../src/ft/output-commit.js';
import { DEFAULT_OUTPUT_LIMITS } from '../../src/ft/output-queue.js';
import { PAGE_BYTES } from '../../src/ft/ram-tracker.js';
import { GUEST_READY_MARKER, RECORD_SERVICE_PORT, ensureGuestImage, guestKernelCmdline } from '../../src/lab/guest-image.js';
import { deleteNamespace, ensureAddress, ensureBridge, ensureNamespace, setLinkUp, setMaster } from '../../src/lab/netns.js';
import { VmSupervisor, type VmInstance } from '../../src/qemu/supervisor.js';
import type { VmSpec } from '../../src/qemu/vm-spec.js';
import { CopyExport } from '../../src/storage/copy-export.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { DiskMirror } from '../../src/storage/disk-mirror.js';
import { inNetns, runIn } from '../../src/util/exec.js';
import type { Cleanup } from '../support/cleanup.js';
import { shmDir, socketPair } from './helpers.js';

export const VM = 'ftvm';
const BRIDGE = 'brft';
const HOST_IP = '10.10.5.1';
const GUEST_IP = '10.10.5.50';
const MAC = '52:54:00:4c:53:20';
const MEMORY_MIB = 128;
const DISK_MIB = 64;
const BOOT_TIMEOUT_MS = 90_000;
const REPLY_TIMEOUT_MS = 60_000;
const PROXY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'unix-tcp-proxy.js');

/** A namespace with the bridge the pairs' taps join; the host side of the guest's subnet is on the bridge. */
export async function pairNetwork(cleanup: Cleanup, tag: string): Promise<string> {
  const ns = `${tag}-${process.pid}`;
  await ensureNamespace(ns);
  cleanup.add(() => deleteNamespace(ns));
  await ensureBridge(ns, BRIDGE);
  await ensureAddress(ns, BRIDGE, `${HOST_IP}/24`);
  await setLinkUp(ns, BRIDGE, true);
  return ns;
}

/** A persistent tap on the bridge: QEMU attaches to it by name, and it stays when QEMU dies. */
async function bridgedTap(cleanup: Cleanup, ns: string, tap: string): Promise<void> {
  await runIn(ns, 'ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  cleanup.add(() => runIn(ns, 'ip', ['link', 'del', tap]));
  await setMaster(ns, tap, BRIDGE);
  await setLinkUp(ns, tap, true);
}

/**
 * Stands between the primary's and the backup's ends of the stream: passes bytes both ways until `damageNext()`,
 * then flips one byte in the middle of the next large chunk (a checkpoint's; seal records are tiny).
 */
class DamagingRelay {
  private armed = false;
  damaged = false;
  constructor(a: net.Socket, b: net.Socket) {
    a.on('data', (chunk: Buffer) => {
      if (this.armed && chunk.length > 1024) {
        chunk = Buffer.from(chunk);
        chunk[chunk.length >> 1]! ^= 0x40;
        this.armed = false;
        this.damaged = true;
      }
      b.write(chunk);
    });
    b.on('data', (chunk: Buffer) => a.write(chunk));
    for (const [x, y] of [[a, b], [b, a]] as const) {
      x.on('error', () => undefined);
      x.on('close', () => y.destroy());
    }
  }
  damageNext(): void {
    this.armed = true;
  }
}

export interface PairOptions {
  cleanup: Cleanup;
  ns: string;
  /** Distinguishes this pair's taps and directories from the file's other pairs. */
  index: number;
  /** FT epochs; null: the guest runs unprotected (no gate, no mirror, no backup), or as HA with `ha`. */
  epochMs: number | null;
  /** With `epochMs` null: HA, the disk mirrored write-blocking into a copy served as lockstepd serves HA's (no gate, no checkpoints). */
  ha?: boolean;
  /** Put a `DamagingRelay` on the stream. */
  relay?: boolean;
  /** The gate's soft limit on held bytes (default the gate's, 4 MiB), past which the epoch ends early. */
  heldBytesSoftMax?: number;
}

export interface FtPair {
  vm: VmInstance;
  gate: OutputGate | null;
  primary: FtPrimary | null;
  backup: FtBackup | null;
  disk: EpochDisk | null;
  relay: DamagingRelay | null;
  /** The backup's qemu-nbd of the copy (stopping it breaks the epoch disk). */
  backupCopy: { stop(): Promise<unknown> };
  /** The primary's disk and the backup's copy of it (qcow2 files). */
  sourceDisk: string;
  copyDisk: string | null;
  /** The proxy's unix socket: each connection to it is one TCP connection to the guest's record service. */
  proxySocket: string;
  /** The primary host dies: SIGKILL of its QEMU, its end of the stream and its gate gone. */
  killPrimary(): Promise<void>;
  /** The backup's failover, with the VM on the backup's tap and its copy of the disk. */
  takeOver(): ReturnType<FtBackup['takeOver']>;
}

export async function startPair(o: PairOptions): Promise<FtPair> {
  const { cleanup, ns, index } = o;
  const image = await ensureGuestImage();
  const primaryDir = await shmDir(cleanup, 'lockstep-ftpair-primary-');
  const backupDir = await shmDir(cleanup, 'lockstep-ftpair-backup-');
  const primaryTap = `tftp${index}`;
  const backupTap = `tftb${index}`;
  await bridgedTap(cleanup, ns, primaryTap);
  await bridgedTap(cleanup, ns, backupTap);

  const base = (disk: string, tap: string, gate: OutputGate | null): VmSpec => ({
    name: VM,
    vcpus: 1,
    memoryMiB: MEMORY_MIB,
    accel: 'tcg',
    boot: { kernel: image.kernel, initrd: image.initrd, cmdline: guestKernelCmdline({ ip: `${GUEST_IP}/24`, gateway: HOST_IP, hostname: VM }) },
    disks: [{ id: 'vda', path: disk, format: 'qcow2' }],
    nics: [{ id: 'net0', mac: MAC, tap, ...(gate ? { outputGate: gate.sockets } : {}) }],
  });

  // The primary. Its gate listens before QEMU starts (QEMU connects while building the NIC).
  const runDir = path.join(primaryDir, 'run', VM);
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  let primary: FtPrimary | null = null;
  const gate =
    o.epochMs === null
      ? null
      : await OutputGate.listen({
          sockets: outputGateSockets(runDir, 'net0'),
          name: `${VM}/net0`,
          ...(o.heldBytesSoftMax ? { limits: { ...DEFAULT_OUTPUT_LIMITS, heldBytesSoftMax: o.heldBytesSoftMax } } : {}),
          onSoftLimit: () => primary?.endEpochSoon(),
        });
  if (gate) cleanup.add(() => gate.close());
  const primarySup = new VmSupervisor({ runRoot: path.join(primaryDir, 'run') });
  cleanup.add(() => primarySup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  const sourceDisk = path.join(primaryDir, 'data.qcow2');
  await createQcow2(sourceDisk, DISK_MIB);
  const vm = await primarySup.start(
    { ...base(sourceDisk, primaryTap, gate), ...(o.epochMs === null ? {} : { memoryBackend: { path: path.join(primaryDir, `${VM}.ram`) } }) },
    { netns: ns, runDir, paused: true },
  );
  // Tracking attached before the guest runs: the mirror's rule (disk-mirror.ts).
  const mirror = o.epochMs === null && !o.ha ? null : await DiskMirror.attach(vm.qmp, { disk: 'vda', vm: VM });
  if (mirror) cleanup.add(() => mirror.stop());
  await vm.qmp.execute('cont');

  // The proxy, inside the namespace, on the bridge's side.
  const proxySocket = path.join(primaryDir, 'proxy.sock');
  const [cmd, args] = inNetns(ns, process.execPath, [PROXY, proxySocket, GUEST_IP, String(RECORD_SERVICE_PORT)]);
  const proxy = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const proxyExited = new Promise((resolve) => proxy.once('close', resolve));
  cleanup.add(async () => {
    proxy.kill('SIGKILL');
    await proxyExited;
  });
  await new Promise((resolve, reject) => {
    createInterface({ input: proxy.stdout! }).once('line', resolve);
    proxy.once('close', () => reject(new Error('the proxy exited before it listened')));
  });
  await waitUntil(async () => (await readFile(vm.paths.serialLog, 'utf8').catch(() => '')).includes(GUEST_READY_MARKER), BOOT_TIMEOUT_MS, 'the guest to boot');
  if (o.ha && mirror !== null) {
    // HA's copy: qemu-nbd writing through (the default, as lockstepd's HA copy export), the mirror straight into it.
    const copyDisk = path.join(backupDir, 'copy.qcow2');
    await createQcow2(copyDisk, DISK_MIB);
    const copy = await CopyExport.start({ vm: VM, disk: copyDisk, format: 'qcow2', socketPath: path.join(backupDir, 'copy.sock') });
    cleanup.add(() => copy.stop());
    await mirror.start({ socketPath: copy.socketPath, exportName: VM, streamId: `hapair.${index}`, mode: 'full' });
    await waitUntil(async () => (await mirror.status()).state === 'ready', BOOT_TIMEOUT_MS, 'the HA mirror to be in sync');
    const unprotected = () => Promise.reject(new Error('HA: no FT backup'));
    return { vm, gate: null, primary: null, backup: null, disk: null, relay: null, backupCopy: copy, sourceDisk, copyDisk, proxySocket, killPrimary: unprotected, takeOver: unprotected };
  }
  if (o.epochMs === null || gate === null || mirror === null) {
    const none = { stop: () => Promise.resolve() };
    return { vm, gate: null, primary: null, backup: null, disk: null, relay: null, backupCopy: none, sourceDisk, copyDisk: null, proxySocket, killPrimary: () => Promise.reject(new Error('unprotected')), takeOver: () => Promise.reject(new Error('unprotected')) };
  }

  // The backup: its own copy of the disk, qemu-nbd (writeback: the epoch disk flushes at each commit) behind
  // the epoch disk, which the primary's mirror syncs into.
  const copyDisk = path.join(backupDir, 'copy.qcow2');
  await createQcow2(copyDisk, DISK_MIB);
  const copy = await CopyExport.start({ vm: VM, disk: copyDisk, format: 'qcow2', socketPath: path.join(backupDir, 'copy.sock'), cache: 'writeback' });
  cleanup.add(() => copy.stop());
  const disk = await EpochDisk.start({ vm: VM, socketPath: path.join(backupDir, 'ft-disk.sock'), copySocketPath: copy.socketPath });
  cleanup.add(() => disk.close());
  await mirror.start({ socketPath: path.join(backupDir, 'ft-disk.sock'), exportName: VM, streamId: `ftpair.${index}`, mode: 'full' });
  const store = await CheckpointStore.open(path.join(backupDir, 'store'), { vm: VM, ramBytes: MEMORY_MIB * 1024 * 1024, pageBytes: PAGE_BYTES });
  cleanup.add(() => store.close());

  const link = await socketPair(cleanup, backupDir, 'ft.sock');
  const primaryEnd = link.primary;
  let backupEnd = link.backup;
  let relay: DamagingRelay | null = null;
  if (o.relay) {
    const inner = await socketPair(cleanup, backupDir, 'ft-relay.sock');
    relay = new DamagingRelay(link.backup, inner.primary);
    backupEnd = inner.backup;
  }
  const backup = new FtBackup({ stream: backupEnd, store, disk, copy });
  primary = await FtPrimary.start({ vm, gates: [gate], mirrors: [mirror], stream: primaryEnd, epochMs: o.epochMs });
  const p = primary;
  cleanup.add(() => p.stop());
  // The guest's output (its ARP answers too) leaves from the first ack on, and the first checkpoint is the full
  // image (seconds here): a client's ARP started before it could give up (EHOSTUNREACH after 3 s).
  await waitUntil(() => p.stats.peerCommittedEpoch >= 1 || p.stats.state !== 'protecting', BOOT_TIMEOUT_MS, 'the first checkpoint to be acked');
  if (p.stats.state !== 'protecting') throw new Error(`FT protection failed at the start: ${p.stats.lostBecause}`);
  const backupSup = new VmSupervisor({ runRoot: path.join(backupDir, 'run') });
  cleanup.add(() => backupSup.stopAll({ gracefulMs: 0, quitMs: 1000 }));

  return {
    vm,
    gate,
    primary,
    backup,
    disk,
    relay,
    backupCopy: copy,
    sourceDisk,
    copyDisk,
    proxySocket,
    async killPrimary() {
      process.kill(vm.pid, 'SIGKILL');
      await vm.exited;
      primaryEnd.destroy();
      await gate.close();
    },
    takeOver: () => backup.takeOver(backupSup, base(copyDisk, backupTap, null), { netns: ns, runDir: path.join(backupDir, 'run', VM) }),
  };
}

async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One connection to the record service through the proxy: one TCP connection to the guest, kept open. */
export class LineClient {
  private readonly replies: string[] = [];
  private waiting: (() => void) | null = null;
  private closed = false;
  private constructor(private readonly socket: net.Socket) {
    createInterface({ input: socket }).on('line', (l) => {
      this.replies.push(l);
      this.waiting?.();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
  }

  static async open(cleanup: Cleanup, proxySocket: string): Promise<LineClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(proxySocket, () => resolve(s));
      s.once('error', reject);
    });
    cleanup.add(() => socket.destroy());
    return new LineClient(socket);
  }

  /** Whether a reply came that nobody took yet. */
  get unread(): number {
    return this.replies.length;
  }

  send(line: string): void {
    this.socket.write(`${line}\n`);
  }

  /** The next reply; throws if the connection closed or nothing came within `timeoutMs` (a bound, not a check). */
  async next(timeoutMs = REPLY_TIMEOUT_MS): Promise<string> {
    const until = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('the connection to the record service closed');
      const left = until - Date.now();
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiting = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiting = null;
    }
    return this.replies.shift()!;
  }

  async request(line: string, timeoutMs = REPLY_TIMEOUT_MS): Promise<string> {
    this.send(line);
    return this.next(timeoutMs);
  }
}
