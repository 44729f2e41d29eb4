/**
 * Test helpers for disk mirroring on real QEMU: a bare QEMU (TCG, no guest) with one qcow2 data disk laid
 * out as the product lays it out, guest writes through the disk's device, the peer's copy behind qemu-nbd,
 * and ways to read and compare the copy. Everything started is registered with `cleanup`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { QmpClient } from '../../src/qemu/qmp.js';
import { run } from '../../src/util/exec.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup, waitFor } from '../qemu/helpers.js';

export interface DiskQemu {
  qmp: QmpClient;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** What HMP's qemu-io commands said, in order. */
  ioResults: IoResults;
  /** What QEMU wrote on stderr so far. */
  stderr: () => string;
}

export interface DiskQemuOptions {
  format?: 'qcow2' | 'raw';
  /** Names this QEMU's QMP socket (and RAM file) in `dir`, so that several can run there one after the other. */
  tag?: string;
  /** RAM in a shared file in `dir`, as lockstepd's VMs have it. */
  ramFile?: boolean;
}

/**
 * HMP's qemu-io prints its results on QEMU's stdout, not in the monitor's answer (which is empty). QEMU runs
 * monitor commands one at a time, in the order sent, so the n-th result line answers the n-th command.
 */
export class IoResults {
  private buffered = '';
  private readonly lines: string[] = [];
  private readonly waiters: ((line: string) => void)[] = [];

  feed(chunk: Buffer): void {
    this.buffered += chunk.toString('utf8');
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      // One result line per command ("wrote …", "write failed: …"); the statistics line after it is not one.
      if (!/^(wrote|write failed|read|read failed)\b/.test(line)) continue;
      const waiter = this.waiters.shift();
      if (waiter) waiter(line);
      else this.lines.push(line);
    }
  }

  /** Claims the next result line, in command order; call it when sending the command. */
  next(timeoutMs = 10_000): Promise<string> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no qemu-io result on QEMU's stdout within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }
}

/** QEMU paused (`-S`) with `image` as disk `vda`: file node `vda-file`, format node `vda`, device `vda`. */
export async function startDiskQemu(cleanup: Cleanup, dir: string, image: string, opts: DiskQemuOptions = {}): Promise<DiskQemu> {
  const { format = 'qcow2', tag = '', ramFile = false } = opts;
  const socketPath = path.join(dir, tag === '' ? 'qmp.sock' : `qmp-${tag}.sock`);
  const ram = ramFile
    ? ['-object', `memory-backend-file,id=ram0,size=32M,mem-path=${path.join(dir, `ram-${tag}`)},share=on`, '-machine', 'memory-backend=ram0']
    : [];
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-machine', 'pc', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '32', '-S',
      ...ram,
      '-chardev', `socket,id=qmp,path=${socketPath},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control',
      '-blockdev', `driver=file,node-name=vda-file,filename=${image}`,
      '-blockdev', `driver=${format},node-name=vda,file=vda-file`,
      '-device', 'virtio-blk-pci,drive=vda,id=vda',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const ioResults = new IoResults();
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => ioResults.feed(b));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  cleanup.add(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  let qmp: QmpClient | undefined;
  await waitFor(async () => {
    try {
      qmp = await QmpClient.connect(socketPath, { timeoutMs: 2000 });
      return true;
    } catch (e) {
      if (isLockstepError(e, 'QMP_DISCONNECTED')) return false;
      throw e;
    }
  }, 10_000, 'QEMU’s QMP socket');
  cleanup.add(() => qmp!.close());
  return { qmp: qmp!, child, exited, ioResults, stderr: () => stderr };
}

/** Ends QEMU through QMP, so its qcow2 metadata is on disk before the image is compared. */
export async function quitQemu(q: DiskQemu): Promise<void> {
  await q.qmp.execute('quit').catch(() => undefined);
  await q.exited;
}

/**
 * A guest write, through the disk's own BlockBackend (`-d` + the QOM path of the virtio-blk device that
 * holds it; the id `vda` names the PCI proxy, which has none). This is the guest's path: through the
 * mirror's filter node. Without `-d`, qemu-io would open a new BlockBackend on the node `vda`, below the
 * filter, which the mirror refuses (write permission conflict). HMP takes the command in double quotes.
 * Throws unless qemu-io says it wrote.
 */
export async function guestWrite(q: DiskQemu, offset: number, bytes: number, pattern: number): Promise<void> {
  const result = q.ioResults.next();
  const answer = await q.qmp.execute<string>('human-monitor-command', {
    'command-line': `qemu-io -d /machine/peripheral/vda/virtio-backend "write -P ${pattern} ${offset} ${bytes}"`,
  });
  // The monitor answers only when the command itself is refused (no such device, bad syntax).
  if (answer.trim() !== '') throw new Error(`qemu-io refused the write of ${bytes} at ${offset}: ${answer.trim()}`);
  const line = await result;
  if (!line.startsWith('wrote ')) throw new Error(`guest write of ${bytes} at ${offset} failed: ${line}`);
}

/** The guest's flush (fsync), so what it wrote is on our disk and not in the host's page cache. */
export async function guestFlush(q: DiskQemu): Promise<void> {
  const answer = await q.qmp.execute<string>('human-monitor-command', { 'command-line': 'qemu-io -d /machine/peripheral/vda/virtio-backend "flush"' });
  if (answer.trim() !== '') throw new Error(`qemu-io refused the flush: ${answer.trim()}`);
}

export interface Peer {
  socketPath: string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * The peer's copy: qemu-nbd exporting `image` as `vm`, writing through (the mirror does not forward
 * flushes). `--shared=2` lets a test read the copy while the mirror is connected.
 */
export async function startPeer(cleanup: Cleanup, image: string, socketPath: string, vm: string, format: 'qcow2' | 'raw' = 'qcow2'): Promise<Peer> {
  const child = spawn(
    'qemu-nbd',
    [`--socket=${socketPath}`, `--format=${format}`, `--export-name=${vm}`, '--persistent', '--shared=2', '--cache=writethrough', image],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    child.kill(signal);
    await exited;
  };
  cleanup.add(async () => {
    child.kill('SIGCONT');
    await kill();
  });
  await waitFor(() => connects(socketPath), 10_000, 'qemu-nbd’s socket');
  return { socketPath, child, exited, kill };
}

function connects(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: socketPath });
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** True if the copy, read through a second NBD connection, holds `pattern` over the range. */
export async function copyHolds(peer: Peer, vm: string, offset: number, bytes: number, pattern: number): Promise<boolean> {
  const r = await run('qemu-io', ['-r', '-f', 'raw', `nbd+unix:///${vm}?socket=${peer.socketPath}`, '-c', `read -P ${pattern} ${offset} ${bytes}`], {
    allowFailure: true,
    timeoutMs: 10_000,
  });
  return r.code === 0 && r.stdout.startsWith('read ') && !/Pattern verification failed|failed/.test(r.stdout + r.stderr);
}

/** `qemu-img compare` of two qcow2 images (both formats given: a second `-f` would override the first). */
export async function imagesIdentical(a: string, b: string, formats: readonly ['qcow2' | 'raw', 'qcow2' | 'raw'] = ['qcow2', 'qcow2']): Promise<{ identical: boolean; output: string }> {
  const r = await run('qemu-img', ['compare', '-f', formats[0], '-F', formats[1], a, b], { allowFailure: true, timeoutMs: 30_000 });
  return { identical: r.code === 0, output: (r.stdout + r.stderr).trim() };
}

export async function nodeNames(qmp: QmpClient): Promise<string[]> {
  const nodes = await qmp.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true });
  return nodes.map((n) => n['node-name']).sort();
}

export async function jobIds(qmp: QmpClient): Promise<string[]> {
  const jobs = await qmp.execute<{ device: string }[]>('query-block-jobs');
  return jobs.map((j) => j.device);
}
