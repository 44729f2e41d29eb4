/**
 * The export of this host's copy of one VM disk, on the backup host: a `qemu-nbd` serving the image file on
 * a unix socket, which the replication server (`replication-stream.ts`) connects the owner's mirror to.
 *
 * Why each qemu-nbd option:
 * - `--cache=writethrough`: QEMU's mirror does not forward the guest's flushes (lab facts), so a write the
 *   owner's guest sees acknowledged must already be on this host's disk, or this host's own power loss
 *   would lose it from the copy;
 * - `--persistent --shared=1`: one client at a time (the owner's one stream), and the next one is served
 *   after it disconnects, so a new stream needs no new export. A second client while one is connected is
 *   not refused: it waits in the listen backlog until the first leaves;
 * - `--discard=unmap --detect-zeroes=unmap`: the mirror's zero writes and discards keep the copy sparse;
 * - `--aio=threads`: works on every file system the data directory may be on.
 *
 * qemu-nbd unlinks whatever is at its socket path before it binds, and only then opens the image. So a
 * second export on the same path would steal the path from a running one and, failing on the image lock,
 * leave a dead socket behind; a path that is a regular file would be deleted. `start` refuses both first.
 *
 * It runs under `setpriv --pdeathsig SIGKILL`, as QEMU does (`src/qemu/supervisor.ts`): a SIGKILLed daemon
 * leaves no writer on the copy behind, and the image lock is free for the next daemon.
 */
import { lstat, rm } from 'node:fs/promises';
import net from 'node:net';
import { silentLog, type DriverLog } from '../qemu/log.js';
import { QemuProcess } from '../qemu/qemu-process.js';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { missingProgram } from '../util/exec.js';
import { findProgram, sleep } from '../util/proc.js';
import { VOLUME_NAME_RE } from './storage-group.js';

export type CopyFormat = 'qcow2' | 'raw';

export interface CopyExportOptions {
  /** The volume's name (its VM's for a first disk): the NBD export's name, and how logs name the copy. */
  vm: string;
  /** The copy's image file. */
  disk: string;
  format: CopyFormat;
  socketPath: string;
  log?: DriverLog;
  /** Bound on qemu-nbd opening the image and answering an NBD handshake. */
  startTimeoutMs?: number;
  /**
   * `writethrough` (default, HA: every write on disk before its answer, see above). `writeback` only for a
   * client that flushes itself before it counts anything durable: the FT epoch disk (`src/ft/epoch-disk.ts`)
   * flushes once per committed epoch instead of once per write.
   */
  cache?: 'writethrough' | 'writeback';
}

export interface CopyExportExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last bytes qemu-nbd wrote to stderr/stdout. */
  stderrTail: string;
}

export interface CopyExportStopOptions {
  /** After SIGTERM (qemu-nbd flushes and exits at once when it is not stuck in I/O). */
  termMs?: number;
  /** After SIGKILL; past this the process is stuck in the kernel and `stop` throws COPY_EXPORT. */
  killMs?: number;
}

const START_TIMEOUT_MS = 10_000;
const PROBE_ATTEMPT_MS = 1_000;
const PROBE_RETRY_MS = 20;
const TERM_WAIT_MS = 3_000;
const KILL_WAIT_MS = 5_000;
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_MAX = 107;

/** The fixed newstyle NBD greeting (NBD protocol, "Newstyle negotiation"): 8 + 8 magic bytes, 2 flag bytes. */
const NBD_GREETING_MAGIC = Buffer.from('NBDMAGICIHAVEOPT', 'latin1');
const NBD_GREETING_BYTES = 18;
/** Our client flags (FIXED_NEWSTYLE | NO_ZEROES), then NBD_OPT_ABORT (2) with no data. */
const NBD_ABORT = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('IHAVEOPT', 'latin1'), Buffer.from([0, 0, 0, 2, 0, 0, 0, 0])]);
/** The server's answer to NBD_OPT_ABORT: reply magic, option, NBD_REP_ACK, length 0. */
const NBD_ABORT_REPLY_BYTES = 20;

export class CopyExport {
  readonly vm: string;
  readonly disk: string;
  readonly socketPath: string;
  readonly pid: number;
  /** Resolves once qemu-nbd has exited and its socket file is removed; never rejects. */
  readonly exited: Promise<CopyExportExit>;
  private stopping: Promise<CopyExportExit> | null = null;

  private constructor(
    opts: CopyExportOptions,
    private readonly proc: QemuProcess,
    private readonly log: DriverLog,
  ) {
    this.vm = opts.vm;
    this.disk = opts.disk;
    this.socketPath = opts.socketPath;
    this.pid = proc.pid;
    this.exited = proc.exit.then(async ({ code, signal }) => {
      // A SIGKILLed qemu-nbd leaves its socket file: a client must find nothing there, not a dead socket.
      await rm(this.socketPath, { force: true });
      const exit = { code, signal, stderrTail: proc.stderrTail() };
      if (this.stopping === null) {
        this.log.warn(`the copy export of VM ${this.vm} died`, { vm: this.vm, pid: this.pid, code, signal, stderr: exit.stderrTail.trim() });
      }
      return exit;
    });
  }

  /**
   * Starts qemu-nbd on `disk` and resolves once the socket answers an NBD handshake. Throws
   * `INVALID_ARGUMENT` (VM name, format, socket path), `MISSING_PREREQUISITE`, or `COPY_EXPORT` with
   * qemu-nbd's stderr (the image is missing or locked by another process, the socket path is in use…);
   * no process is left behind then.
   */
  static async start(opts: CopyExportOptions): Promise<CopyExport> {
    const log = opts.log ?? silentLog;
    checkOptions(opts);
    const qemuNbd = await findProgram('qemu-nbd');
    if (qemuNbd === undefined) throw missingProgram('qemu-nbd');
    if ((await findProgram('setpriv')) === undefined) throw missingProgram('setpriv');
    await claimSocketPath(opts);

    const args = [
      '--pdeathsig', 'SIGKILL', '--', qemuNbd,
      `--socket=${opts.socketPath}`, `--format=${opts.format}`, `--export-name=${opts.vm}`,
      '--persistent', '--shared=1', `--cache=${opts.cache ?? 'writethrough'}`, '--aio=threads', '--discard=unmap', '--detect-zeroes=unmap',
      opts.disk,
    ];
    let proc: QemuProcess;
    try {
      proc = await QemuProcess.start('setpriv', args, 'setpriv');
    } catch (e) {
      if (isLockstepError(e, 'MISSING_PREREQUISITE')) throw e;
      throw new LockstepError('COPY_EXPORT', `could not run qemu-nbd for the copy of VM ${opts.vm}: ${describeError(e)}`, { vm: opts.vm }, { cause: e });
    }
    const failure = await waitReady(proc, opts.socketPath, opts.startTimeoutMs ?? START_TIMEOUT_MS);
    if (failure !== null) {
      proc.signal('SIGKILL');
      await proc.exitWithin(KILL_WAIT_MS);
      await rm(opts.socketPath, { force: true });
      const stderr = proc.stderrTail().trim();
      throw new LockstepError(
        'COPY_EXPORT',
        `qemu-nbd could not export the copy of VM ${opts.vm} (${opts.disk}): ${failure}${stderr ? `: ${stderr}` : ''}`,
        { vm: opts.vm, disk: opts.disk, socketPath: opts.socketPath, stderr },
      );
    }
    log.info(`exporting the copy of VM ${opts.vm}`, { vm: opts.vm, disk: opts.disk, socketPath: opts.socketPath, pid: proc.pid });
    return new CopyExport(opts, proc, log);
  }

  /**
   * Stops qemu-nbd (SIGTERM, then SIGKILL after `termMs`) and resolves once it is gone and its socket file
   * removed. Idempotent: a second call gets the same promise. Throws `COPY_EXPORT` if it survives SIGKILL.
   */
  stop(opts: CopyExportStopOptions = {}): Promise<CopyExportExit> {
    this.stopping ??= this.stopNow(opts.termMs ?? TERM_WAIT_MS, opts.killMs ?? KILL_WAIT_MS);
    return this.stopping;
  }

  private async stopNow(termMs: number, killMs: number): Promise<CopyExportExit> {
    this.proc.signal('SIGTERM');
    if (!(await this.proc.exitWithin(termMs))) {
      this.log.warn(`the copy export of VM ${this.vm} ignored SIGTERM for ${termMs} ms: SIGKILL`, { vm: this.vm, pid: this.pid });
      this.proc.signal('SIGKILL');
      if (!(await this.proc.exitWithin(killMs))) {
        throw new LockstepError('COPY_EXPORT', `qemu-nbd (pid ${this.pid}) exporting VM ${this.vm} did not exit after SIGKILL (stuck in the kernel)`, {
          vm: this.vm,
          pid: this.pid,
        });
      }
    }
    return this.exited;
  }
}

function checkOptions(o: CopyExportOptions): void {
  const bad = (field: string, why: string): never => {
    throw new LockstepError('INVALID_ARGUMENT', `copy export: '${field}' ${why}`, { field });
  };
  if (typeof o.vm !== 'string' || !VOLUME_NAME_RE.test(o.vm)) bad('vm', 'must be a volume name (a VM name, [a-z][a-z0-9-]{0,30}, or <vm>.disk<N>)');
  if (o.format !== 'qcow2' && o.format !== 'raw') bad('format', 'must be qcow2 or raw');
  if (o.cache !== undefined && o.cache !== 'writethrough' && o.cache !== 'writeback') bad('cache', 'must be writethrough or writeback');
  if (typeof o.disk !== 'string' || o.disk === '') bad('disk', 'must be an image file path');
  if (typeof o.socketPath !== 'string' || o.socketPath === '') bad('socketPath', 'must be a path');
  if (Buffer.byteLength(o.socketPath) > UNIX_SOCKET_PATH_MAX) bad('socketPath', `is longer than a unix socket path may be (${UNIX_SOCKET_PATH_MAX} bytes)`);
}

/**
 * Makes the socket path free for qemu-nbd, which unlinks it unchecked: refuses a path that is not a socket
 * or where a server answers; removes a socket nobody listens on (left by a SIGKILLed export).
 */
async function claimSocketPath(o: CopyExportOptions): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(o.socketPath)).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new LockstepError('COPY_EXPORT', `cannot check the socket path ${o.socketPath}: ${describeError(e)}`, { vm: o.vm, socketPath: o.socketPath }, { cause: e });
  }
  const fail = (why: string): never => {
    throw new LockstepError('COPY_EXPORT', `will not export the copy of VM ${o.vm} on ${o.socketPath}: ${why}`, { vm: o.vm, socketPath: o.socketPath });
  };
  if (!isSocket) fail('something that is not a socket is there');
  if (await answers(o.socketPath)) fail('a server is listening there already (another export?)');
  await rm(o.socketPath, { force: true });
}

/** True if something accepts a connection on the unix socket. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Probes until qemu-nbd greets, exits, or the deadline passes: null when ready, else why not. */
async function waitReady(proc: QemuProcess, socketPath: string, timeoutMs: number): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  const exited = proc.exit.then(({ code, signal }) => `it exited (${signal ?? `code ${code}`})`);
  let last = 'no answer';
  while (Date.now() < deadline) {
    const attemptMs = Math.max(1, Math.min(PROBE_ATTEMPT_MS, deadline - Date.now()));
    const outcome = await Promise.race([probeNbd(socketPath, attemptMs).then((why) => ({ why })), exited]);
    if (typeof outcome === 'string') return outcome;
    if (outcome.why === null) return null;
    last = outcome.why;
    const waited = await Promise.race([sleep(PROBE_RETRY_MS), exited]);
    if (typeof waited === 'string') return waited;
  }
  return `no NBD handshake on the socket within ${timeoutMs} ms (last: ${last})`;
}

/**
 * Connects, checks the NBD greeting, and leaves politely (NBD_OPT_ABORT, then its ACK or the close) so
 * that qemu-nbd logs no failed negotiation. Null once greeted, else why not. qemu-nbd binds its socket
 * before it opens the image, so a connection may be accepted and then closed when the open fails.
 */
function probeNbd(socketPath: string, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    let got = Buffer.alloc(0);
    let greeted = false;
    let settled = false;
    const done = (result: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(greeted ? null : `no greeting within ${timeoutMs} ms`), timeoutMs);
    s.on('error', (e) => done(greeted ? null : e.message));
    s.on('close', () => done(greeted ? null : 'closed before the greeting'));
    s.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (!greeted && got.length >= NBD_GREETING_BYTES) {
        if (!got.subarray(0, NBD_GREETING_MAGIC.length).equals(NBD_GREETING_MAGIC)) return done('not an NBD server greeting');
        greeted = true;
        s.write(NBD_ABORT);
      }
      if (greeted && got.length >= NBD_GREETING_BYTES + NBD_ABORT_REPLY_BYTES) done(null);
    });
  });
}
