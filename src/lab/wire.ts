/**
 * The lab's A-Link wire: a small C forwarder (`src/lab/wire/wire.c`) that stands in for the kernel bridge
 * between the two fabric ends of an A-Link and delays every frame, because this kernel has no netem (see
 * `docs/wire.md`). This module builds it once into the cache, starts it in the fabric namespace, changes its
 * delay while it runs, reads its counters and stops it.
 *
 * Thrown errors: `MISSING_PREREQUISITE` (no gcc, no C headers, no `ip`), `INVALID_ARGUMENT` (a bad spec),
 * `COMMAND_FAILED` (the build failed, the wire exited or stayed silent instead of becoming ready, or did not
 * answer a request for its counters).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { assert } from '../util/assert.js';
import { LockstepError, isLockstepError } from '../util/errors.js';
import { inNetns, missingProgram, run, runIn } from '../util/exec.js';
import { isAlive, signalProcess, sleep, waitGone } from '../util/proc.js';
import { cacheDir, repoRoot } from '../util/paths.js';

/** Name of the compiled program; also how `stopWire` recognises a wire among the machine's processes. */
export const WIRE_PROGRAM = 'lockstep-wire';
/** The largest one-way delay the wire accepts (10 s): beyond any SplitSite test, so above it is a typo. */
export const WIRE_DELAY_US_MAX = 10_000_000;

/** Part of the build's identity: changing a flag builds a new binary under a new hash. */
const CFLAGS: readonly string[] = ['-O2', '-std=gnu11', '-Wall', '-Wextra'];
/** Binding two sockets takes milliseconds; seconds mean something is wrong (e.g. `ip` waiting on a lock). */
const READY_TIMEOUT_MS = 5_000;
/** The wire exits on SIGTERM within one loop turn; past this it is stuck and gets SIGKILL. */
const STOP_TIMEOUT_MS = 5_000;
const KILL_TIMEOUT_MS = 2_000;
const STATS_TIMEOUT_MS = 2_000;
const POLL_INTERVAL_MS = 20;
/** How much of the wire's stderr is kept for an error message when it fails to start. */
const STARTUP_STDERR_BYTES_MAX = 8 * 1024;

function wireSourcePath(): string {
  return path.join(repoRoot(), 'src', 'lab', 'wire', 'wire.c');
}

let building: Promise<string> | undefined;

/**
 * The path of the compiled wire: `cacheDir()/wire/<hash of source and flags>/lockstep-wire`, built with gcc
 * the first time (per process the build runs once; across processes the cache makes it once per content).
 * Throws `MISSING_PREREQUISITE` when gcc or the C library headers are missing, `COMMAND_FAILED` when the
 * compiler rejects the source.
 */
export function wireBinary(): Promise<string> {
  building ??= buildWire().catch((e: unknown) => {
    building = undefined; // a failed build (gcc missing) may succeed once the package is installed
    throw e;
  });
  return building;
}

async function buildWire(): Promise<string> {
  const source = await fs.readFile(wireSourcePath());
  const hash = createHash('sha256').update(JSON.stringify(CFLAGS)).update('\0').update(source).digest('hex').slice(0, 16);
  const dir = path.join(cacheDir(), 'wire', hash);
  const binary = path.join(dir, WIRE_PROGRAM);
  if (await isExecutable(binary)) return binary;

  // Build in a private directory, from the exact bytes that were hashed, then rename into place: a reader
  // never sees a half-written binary, and two concurrent builders both end with a complete one.
  await fs.mkdir(dir, { recursive: true });
  const work = await fs.mkdtemp(path.join(dir, '.build-'));
  try {
    const src = path.join(work, 'wire.c');
    const out = path.join(work, WIRE_PROGRAM);
    await fs.writeFile(src, source);
    try {
      await run('gcc', [...CFLAGS, '-o', out, src]);
    } catch (e) {
      throw explainBuildFailure(e);
    }
    await fs.rename(out, binary);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  return binary;
}

/** gcc without libc6-dev fails on the first header or at link time: say which package is missing. */
function explainBuildFailure(e: unknown): unknown {
  if (!isLockstepError(e, 'COMMAND_FAILED')) return e;
  const stderr = String(e.fields['stderr'] ?? '');
  if (/fatal error: [\w/.]+\.h: No such file|cannot find crt1\.o|cannot find -lc\b/.test(stderr)) {
    return new LockstepError(
      'MISSING_PREREQUISITE',
      "the C library headers are not installed: install the Debian package 'libc6-dev' (or run `npm run setup`)",
      { package: 'libc6-dev' },
      { cause: e },
    );
  }
  return new LockstepError('COMMAND_FAILED', `building ${WIRE_PROGRAM} failed: ${stderr.trim()}`, e.fields, { cause: e });
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await fs.access(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface WireSpec {
  /** The namespace holding both interfaces (the lab's fabric). */
  netns: string;
  /** The two interfaces the wire joins; neither may be a bridge port. */
  ifA: string;
  ifB: string;
  /** Delay added to every frame in each direction, 0 … `WIRE_DELAY_US_MAX`; the RTT grows by twice this. */
  oneWayDelayUs: number;
  /** Own session and no tie to the caller: the lab CLI exits, the wire keeps running (record its pid). */
  detached?: boolean;
  /**
   * The wire's stderr is appended here: ready line, delay changes, counters on SIGUSR1 and at exit. Without
   * it that output is read only until the wire is ready (for the error message) and dropped afterwards,
   * and `wireStats` cannot be used.
   */
  logFile?: string;
  /** Enables live delay changes through `setWireDelay`; written with the initial delay here. */
  delayFile?: string;
  /** Per-direction buffer limits (defaults in wire.c: 16 MiB, 16384 frames); beyond them frames are dropped. */
  queueBytesMax?: number;
  queueFramesMax?: number;
}

/**
 * Starts a wire in `spec.netns` and resolves once it forwards (its sockets are bound and it said "ready" on
 * a descriptor kept for that). Throws `INVALID_ARGUMENT` for a bad spec, `MISSING_PREREQUISITE` when gcc or
 * `ip` is missing, `COMMAND_FAILED` when the wire exits or stays silent instead (no such namespace or
 * interface, an interface still in a bridge …), with its own message.
 */
export async function startWire(spec: WireSpec): Promise<{ pid: number }> {
  validateSpec(spec);
  for (const ifname of [spec.ifA, spec.ifB]) await refuseBridgePort(spec.netns, ifname);
  const binary = await wireBinary();
  if (spec.delayFile !== undefined) await writeDelayFile(spec.delayFile, spec.oneWayDelayUs);

  const wireArgs = ['--ready-fd', '3'];
  if (spec.delayFile !== undefined) wireArgs.push('--delay-file', path.resolve(spec.delayFile));
  if (spec.queueBytesMax !== undefined) wireArgs.push('--queue-bytes', String(spec.queueBytesMax));
  if (spec.queueFramesMax !== undefined) wireArgs.push('--queue-frames', String(spec.queueFramesMax));
  wireArgs.push(spec.ifA, spec.ifB, String(spec.oneWayDelayUs));

  let logFd: number | undefined;
  let logStartBytes = 0;
  if (spec.logFile !== undefined) {
    await fs.mkdir(path.dirname(spec.logFile), { recursive: true });
    logStartBytes = await fileSize(spec.logFile);
    logFd = openSync(spec.logFile, 'a');
  }
  // nsenter execs the program after entering the namespace, so the child's pid is the wire's.
  // Descriptor 3 carries the one "ready" line; stdin/stdout are unused.
  const child = (() => {
    try {
      const [cmd, args] = inNetns(spec.netns, binary, wireArgs);
      return spawn(cmd, args, {
        detached: spec.detached === true,
        stdio: ['ignore', 'ignore', logFd ?? 'pipe', 'pipe'],
      });
    } finally {
      if (logFd !== undefined) closeSync(logFd); // the child has its own copy
    }
  })();

  const readyPipe = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  const stderrPipe = child.stderr;
  let stderr = '';
  stderrPipe?.on('data', (b: Buffer) => {
    if (stderr.length < STARTUP_STDERR_BYTES_MAX) stderr += b.toString('utf8');
  });

  const outcome = await new Promise<{ ready: true } | { ready: false; why: string; code?: number; error?: unknown }>(
    (resolve) => {
      let readyText = '';
      const timer = setTimeout(() => resolve({ ready: false, why: `did not report ready within ${READY_TIMEOUT_MS} ms` }), READY_TIMEOUT_MS);
      const settle = (v: Parameters<typeof resolve>[0]): void => {
        clearTimeout(timer);
        resolve(v);
      };
      readyPipe.on('data', (b: Buffer) => {
        readyText += b.toString('utf8');
        if (readyText.includes('ready\n')) settle({ ready: true });
      });
      readyPipe.on('error', () => {
        /* the exit event tells the story */
      });
      child.on('error', (e) => settle({ ready: false, why: e.message, error: e }));
      // 'close' rather than 'exit': it comes after the last of the wire's stderr has been read.
      child.on('close', (code, signal) =>
        settle({ ready: false, why: `exited before forwarding (${signal ?? `exit ${code}`})`, code: code ?? undefined }),
      );
    },
  );

  readyPipe.destroy();
  if (outcome.ready) {
    // From here on the wire's stderr goes to the log file or nowhere: a pipe nobody reads would fill up and
    // block the wire. It ignores SIGPIPE, so writes to the closed pipe merely fail.
    stderrPipe?.destroy();
    child.unref();
    assert(child.pid !== undefined, 'a spawned wire that said ready has a pid');
    return { pid: child.pid };
  }

  if ((outcome.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') throw missingProgram('ip', outcome.error);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); // silent: do not leave it behind
  stderrPipe?.destroy();
  child.unref();
  const said = spec.logFile !== undefined ? await readFrom(spec.logFile, logStartBytes) : stderr;
  const detail = said
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.includes('usage: '))
    .join('; ');
  throw new LockstepError(
    'COMMAND_FAILED',
    `${WIRE_PROGRAM} ${spec.ifA}<->${spec.ifB} in namespace ${spec.netns} ${outcome.why}${detail ? `: ${detail}` : ''}`,
    { netns: spec.netns, ifA: spec.ifA, ifB: spec.ifB, exitCode: outcome.code, stderr: said },
    { cause: outcome.error },
  );
}

/**
 * Stops the wire with this pid: SIGTERM (it prints its counters and exits), SIGKILL if it is still there
 * after `STOP_TIMEOUT_MS`. Resolves when the process is gone; `false` when there was no wire with that pid
 * (already gone — a pid the lab recorded may since belong to another program, which is left alone).
 */
export async function stopWire(pid: number): Promise<boolean> {
  if (!(await isWireRunning(pid))) return false;
  if (!signalProcess(pid, 'SIGTERM')) return false;
  if (await waitGone(pid, STOP_TIMEOUT_MS)) return true;
  signalProcess(pid, 'SIGKILL');
  if (await waitGone(pid, KILL_TIMEOUT_MS)) return true;
  throw new LockstepError('COMMAND_FAILED', `${WIRE_PROGRAM} (pid ${pid}) survived SIGKILL for ${KILL_TIMEOUT_MS} ms`, { pid });
}

/** True when `pid` is a live (not zombie) lockstep-wire process. */
export async function isWireRunning(pid: number): Promise<boolean> {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    if (path.basename(cmdline.split('\0')[0] ?? '') !== WIRE_PROGRAM) return false;
    return await isAlive(pid);
  } catch {
    return false;
  }
}

/**
 * A port still in a bridge would have its frames both bridged and forwarded, and broadcasts would loop.
 * Asked over netlink (`ip` inside the namespace), which sees the namespace whatever /sys shows: programs entered into a
 * namespace with nsenter keep the root namespace's /sys, where the wire's own check cannot look.
 */
async function refuseBridgePort(netns: string, ifname: string): Promise<void> {
  const r = await runIn(netns, 'ip', ['-json', 'link', 'show', 'dev', ifname], { allowFailure: true });
  if (r.code !== 0) return; // a missing interface is the wire's to report, with its own message
  const master = (JSON.parse(r.stdout) as { master?: string }[])[0]?.master;
  if (master !== undefined) {
    throw new LockstepError('COMMAND_FAILED', `${ifname} is a port of ${master}: take it out first (ip link set ${ifname} nomaster), or its frames would be both bridged and forwarded`, {
      netns,
      ifname,
      master,
    });
  }
}

/**
 * Changes the delay of a running wire without a restart (no frame lost): writes `delayFile` (the one given
 * to `startWire`) and sends SIGHUP, on which the wire re-reads it. Frames already queued keep their time.
 */
export async function setWireDelay(opts: { pid: number; delayFile: string; oneWayDelayUs: number }): Promise<void> {
  validateDelay(opts.oneWayDelayUs);
  if (!(await isWireRunning(opts.pid))) {
    throw new LockstepError('COMMAND_FAILED', `no ${WIRE_PROGRAM} runs with pid ${opts.pid}`, { pid: opts.pid });
  }
  await writeDelayFile(opts.delayFile, opts.oneWayDelayUs);
  signalProcess(opts.pid, 'SIGHUP');
}

export interface WireDirectionStats {
  /** Frames and bytes delivered; a GSO super-frame counts once, with its full length. */
  frames: number;
  bytes: number;
  gsoFrames: number;
  /** Dropped because the direction's buffer was full (frames or bytes). */
  queueDrops: number;
  /** Dropped by the kernel before the wire read them (its socket buffer overflowed). */
  kernelDrops: number;
  /** The kernel refused to send them (interface down, MTU mismatch …). */
  sendErrors: number;
  oversize: number;
  rxErrors: number;
  /** The largest frame seen: above the MTU means super-frames went through whole. */
  maxFrame: number;
  queuedFrames: number;
  queuedBytes: number;
}

export interface WireStats {
  delayUs: number;
  /** ifA → ifB */
  a2b: WireDirectionStats;
  /** ifB → ifA */
  b2a: WireDirectionStats;
}

/**
 * The counters of a running wire started with a `logFile`: sends SIGUSR1 and reads the line it appends.
 * Throws `COMMAND_FAILED` when no wire runs with that pid or none answers within `STATS_TIMEOUT_MS`.
 */
export async function wireStats(opts: { pid: number; logFile: string }): Promise<WireStats> {
  if (!(await isWireRunning(opts.pid))) {
    throw new LockstepError('COMMAND_FAILED', `no ${WIRE_PROGRAM} runs with pid ${opts.pid}`, { pid: opts.pid });
  }
  const from = await fileSize(opts.logFile);
  signalProcess(opts.pid, 'SIGUSR1');
  const deadline = Date.now() + STATS_TIMEOUT_MS;
  for (;;) {
    const line = (await readFrom(opts.logFile, from)).split('\n').find((l) => l.startsWith(`${WIRE_PROGRAM}: stats `));
    if (line !== undefined) return parseWireStats(line);
    if (Date.now() > deadline) {
      throw new LockstepError(
        'COMMAND_FAILED',
        `${WIRE_PROGRAM} (pid ${opts.pid}) wrote no counters to ${opts.logFile} within ${STATS_TIMEOUT_MS} ms`,
        { pid: opts.pid, logFile: opts.logFile },
      );
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

const DIRECTION_FIELDS: Readonly<Record<string, keyof WireDirectionStats>> = {
  frames: 'frames',
  bytes: 'bytes',
  gso_frames: 'gsoFrames',
  queue_drops: 'queueDrops',
  kernel_drops: 'kernelDrops',
  send_errors: 'sendErrors',
  oversize: 'oversize',
  rx_errors: 'rxErrors',
  max_frame: 'maxFrame',
  queued_frames: 'queuedFrames',
  queued_bytes: 'queuedBytes',
};

/** Parses a counters line (`lockstep-wire: stats|exit delay_us=… a2b.frames=… …`) as wire.c prints it. */
export function parseWireStats(line: string): WireStats {
  const blank = (): WireDirectionStats => ({
    frames: 0, bytes: 0, gsoFrames: 0, queueDrops: 0, kernelDrops: 0, sendErrors: 0,
    oversize: 0, rxErrors: 0, maxFrame: 0, queuedFrames: 0, queuedBytes: 0,
  });
  const stats: WireStats = { delayUs: -1, a2b: blank(), b2a: blank() };
  let fields = 0;
  for (const token of line.split(/\s+/)) {
    const m = /^(?:(a2b|b2a)\.)?(\w+)=(\d+)$/.exec(token);
    if (!m) continue;
    const [, dir, key, value] = m as unknown as [string, 'a2b' | 'b2a' | undefined, string, string];
    if (dir === undefined) {
      if (key === 'delay_us') stats.delayUs = Number(value);
      continue;
    }
    const field = DIRECTION_FIELDS[key];
    if (field === undefined) continue; // a newer wire may count more: ignore what we do not know
    stats[dir][field] = Number(value);
    fields++;
  }
  // The line comes from our own C program: a mismatch is a bug in one of the two, not bad input.
  assert(stats.delayUs >= 0 && fields === 2 * Object.keys(DIRECTION_FIELDS).length, `unexpected wire counters: ${line}`);
  return stats;
}

function validateSpec(spec: WireSpec): void {
  if (!/^[^\s/]+$/.test(spec.netns)) invalid(`not a network namespace name: '${spec.netns}'`, { netns: spec.netns });
  for (const name of [spec.ifA, spec.ifB]) {
    // Linux: at most 15 bytes, no '/', ':' or whitespace.
    if (!/^[^\s/:]{1,15}$/.test(name)) invalid(`not an interface name: '${name}'`, { interface: name });
  }
  if (spec.ifA === spec.ifB) invalid(`a wire needs two different interfaces, got '${spec.ifA}' twice`, { interface: spec.ifA });
  validateDelay(spec.oneWayDelayUs);
  if (spec.queueBytesMax !== undefined && !(Number.isSafeInteger(spec.queueBytesMax) && spec.queueBytesMax > 0)) {
    invalid(`queueBytesMax must be a positive whole number, not ${spec.queueBytesMax}`, { queueBytesMax: spec.queueBytesMax });
  }
  if (spec.queueFramesMax !== undefined && !(Number.isSafeInteger(spec.queueFramesMax) && spec.queueFramesMax > 0)) {
    invalid(`queueFramesMax must be a positive whole number, not ${spec.queueFramesMax}`, { queueFramesMax: spec.queueFramesMax });
  }
}

function validateDelay(us: number): void {
  if (!Number.isSafeInteger(us) || us < 0 || us > WIRE_DELAY_US_MAX) {
    invalid(`the one-way delay must be a whole number of microseconds from 0 to ${WIRE_DELAY_US_MAX}, not ${us}`, {
      oneWayDelayUs: us,
    });
  }
}

function invalid(message: string, fields: Record<string, unknown>): never {
  throw new LockstepError('INVALID_ARGUMENT', message, fields);
}

/** Written whole and renamed into place, so the wire never reads half a number. */
async function writeDelayFile(file: string, us: number): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await fs.writeFile(tmp, `${us}\n`);
  await fs.rename(tmp, file);
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return 0;
  }
}

async function readFrom(file: string, offset: number): Promise<string> {
  let fh: FileHandle | undefined;
  try {
    fh = await fs.open(file, 'r');
    const size = (await fh.stat()).size;
    if (size <= offset) return '';
    const buf = Buffer.alloc(Math.min(size - offset, 64 * 1024));
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    return buf.subarray(0, bytesRead).toString('utf8');
  } catch {
    return '';
  } finally {
    await fh?.close();
  }
}

