/**
 * Choosing the accelerator: KVM where it runs guests, TCG (software emulation: correct, much slower)
 * everywhere else.
 *
 * `/dev/kvm` opening is not proof: on this lab's nested, paravirtualized KVM it opens, QEMU starts, and
 * guests crawl or hang. So `auto` boots a real guest under KVM (see `kvm-probe-guest.S`) with a short
 * deadline and uses KVM only if it finished with the right answer. The verdict is cached per boot of the
 * host (keyed by /proc/sys/kernel/random/boot_id) because it cannot change without a reboot or a new QEMU,
 * and the probe costs up to its timeout where KVM is broken.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { missingProgram } from '../util/exec.js';
import { optionValue, type Accel } from './command-line.js';
import { KVM_PROBE_DEBUG_EXIT_DEVICE, KVM_PROBE_EXIT_OK, KVM_PROBE_EXIT_WRONG_SUM, kvmProbeBootSector } from './kvm-probe-guest.js';
import { silentLog, type DriverLog } from './log.js';
import { findProgram } from '../util/proc.js';
import { TailBuffer } from './tail-buffer.js';
import type { AccelRequest } from './vm-spec.js';

export type { Accel } from './command-line.js';

export interface AccelVerdict {
  accel: Accel;
  /** One sentence for logs and `lockstep doctor`. */
  reason: string;
}

export interface KvmProbeResult {
  usable: boolean;
  reason: string;
  /** The host boot the verdict belongs to. */
  bootId: string;
  /** The QEMU binary that was probed. */
  qemu: string;
  probedAt: string;
  durationMs: number;
  /** True when this answer came from the cache file rather than a probe just now. */
  cached: boolean;
}

export interface ProbeKvmOptions {
  /** Default /run/lockstep/kvm-probe.json. */
  cachePath?: string;
  /** How long the probe guest may take. A working KVM needs ~0.3 s including QEMU's start; 5 s leaves room
   * for a loaded host. */
  timeoutMs?: number;
  qemuBinary?: string;
  /** Probe even if a verdict for this boot is cached. */
  refresh?: boolean;
  log?: DriverLog;
}

export const DEFAULT_KVM_PROBE_CACHE = '/run/lockstep/kvm-probe.json';
const DEFAULT_PROBE_TIMEOUT_MS = 5_000;
/** Bound on waiting for a SIGKILLed probe QEMU to be reaped. */
const PROBE_KILL_WAIT_MS = 5_000;
const QEMU = 'qemu-system-x86_64';
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

/** One probe at a time per cache file in this process: concurrent callers share it. */
const inFlight = new Map<string, Promise<KvmProbeResult>>();
/** Verdicts this process has reached, by cache file: a process that cannot write the cache (not root)
 * still probes only once. */
const remembered = new Map<string, KvmProbeResult>();

/**
 * `tcg` → TCG. `kvm` → KVM, or `KVM_UNAVAILABLE` if /dev/kvm cannot be opened (the caller asked for it
 * explicitly, so it is not second-guessed with a probe). `auto` → KVM only if `probeKvm` says it works.
 */
export async function resolveAccel(
  requested: AccelRequest,
  opts: { log?: DriverLog; probe?: ProbeKvmOptions } = {},
): Promise<AccelVerdict> {
  const log = opts.log ?? silentLog;
  switch (requested) {
    case 'tcg':
      return { accel: 'tcg', reason: 'TCG was asked for' };
    case 'kvm': {
      const problem = await kvmDeviceProblem();
      if (problem !== undefined) {
        throw new LockstepError('KVM_UNAVAILABLE', `KVM was asked for, but ${problem}; use accel 'auto' or 'tcg'`, { reason: problem });
      }
      return { accel: 'kvm', reason: 'KVM was asked for' };
    }
    case 'auto': {
      const probe = await probeKvm({ log, ...opts.probe });
      const verdict: AccelVerdict = probe.usable
        ? { accel: 'kvm', reason: `KVM works: ${probe.reason}` }
        : { accel: 'tcg', reason: `using TCG: ${probe.reason}` };
      log.info(`accelerator: ${verdict.accel}`, { reason: verdict.reason, cached: probe.cached });
      return verdict;
    }
  }
}

/**
 * Whether KVM runs guests on this host, and why (for `lockstep doctor`). Throws only `MISSING_PREREQUISITE`
 * when QEMU itself is not installed; every KVM problem is an answer, not an error.
 */
export async function probeKvm(opts: ProbeKvmOptions = {}): Promise<KvmProbeResult> {
  const cachePath = opts.cachePath ?? DEFAULT_KVM_PROBE_CACHE;
  const running = inFlight.get(cachePath);
  if (running) return running;
  const p = probeOnce(cachePath, opts).finally(() => inFlight.delete(cachePath));
  inFlight.set(cachePath, p);
  return p;
}

async function probeOnce(cachePath: string, opts: ProbeKvmOptions): Promise<KvmProbeResult> {
  const log = opts.log ?? silentLog;
  const bootId = (await readFile(BOOT_ID_PATH, 'utf8')).trim();
  const qemu = await findProgram(opts.qemuBinary ?? QEMU);
  if (qemu === undefined) throw missingProgram(QEMU);
  if (!opts.refresh) {
    const known = remembered.get(cachePath);
    if (known && known.bootId === bootId && known.qemu === qemu) return { ...known, cached: true };
    const cached = await readCache(cachePath, bootId, qemu);
    if (cached) return cached;
  }
  const started = Date.now();
  const result = (usable: boolean, reason: string): KvmProbeResult => ({
    usable,
    reason,
    bootId,
    qemu,
    probedAt: new Date().toISOString(),
    durationMs: Date.now() - started,
    cached: false,
  });

  // Not cached: loading the kvm module or fixing permissions takes effect without a reboot, and this check
  // is cheap.
  const problem = await kvmDeviceProblem();
  if (problem !== undefined) return result(false, problem);

  const timeoutMs = opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  log.info('probing KVM with a test guest', { timeoutMs });
  const outcome = await runProbeGuest(qemu, timeoutMs);
  const verdict = result(outcome.usable, outcome.reason);
  remembered.set(cachePath, verdict);
  log.info(`KVM probe: ${verdict.usable ? 'usable' : 'not usable'}`, { reason: verdict.reason, durationMs: verdict.durationMs });
  await writeCache(cachePath, verdict).catch((e: unknown) => {
    log.warn('could not cache the KVM probe verdict; the next start probes again', { cachePath, error: String(e) });
  });
  return verdict;
}

/** Why /dev/kvm cannot be used, or undefined if it opens read-write. */
async function kvmDeviceProblem(): Promise<string | undefined> {
  try {
    const fh = await open('/dev/kvm', 'r+');
    await fh.close();
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return '/dev/kvm does not exist (no hardware virtualization, or the kvm module is not loaded)';
    if (code === 'EACCES' || code === 'EPERM') return `/dev/kvm cannot be opened by uid ${process.getuid?.() ?? '?'} (add the user to group 'kvm')`;
    return `/dev/kvm cannot be opened: ${(e as Error).message}`;
  }
}

async function runProbeGuest(qemu: string, timeoutMs: number): Promise<{ usable: boolean; reason: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-kvm-probe-'));
  try {
    const image = path.join(dir, 'probe.img');
    await writeFile(image, kvmProbeBootSector());
    const args = [
      '-machine', 'pc', '-accel', 'kvm', '-cpu', 'host',
      '-nodefaults', '-no-user-config', '-display', 'none', '-m', '64',
      '-drive', `file=${optionValue(image)},format=raw,if=ide`,
      '-device', KVM_PROBE_DEBUG_EXIT_DEVICE,
    ];
    const r = await runWithDeadline(qemu, args, timeoutMs);
    if (r.timedOut) {
      return {
        usable: false,
        reason: `a test guest under KVM did not finish a ${2 ** 24}-iteration loop within ${timeoutMs} ms (KVM opens but does not run guests at speed, e.g. nested virtualization)`,
      };
    }
    if (r.code === KVM_PROBE_EXIT_OK) return { usable: true, reason: `a test guest ran in long mode under KVM (${r.elapsedMs} ms including QEMU start)` };
    if (r.code === KVM_PROBE_EXIT_WRONG_SUM) return { usable: false, reason: 'a test guest under KVM computed a wrong result' };
    const detail = r.stderr.trim().split('\n').slice(-3).join(' / ') || (r.signal ? `killed by ${r.signal}` : 'no message');
    return { usable: false, reason: `QEMU could not run a guest under KVM (exit ${r.code ?? r.signal}): ${detail}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface DeadlineRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stderr: string;
  elapsedMs: number;
}

/** Runs QEMU to completion, or SIGKILLs it at the deadline and waits (bounded) until it is reaped. */
function runWithDeadline(cmd: string, args: readonly string[], timeoutMs: number): Promise<DeadlineRun> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr = new TailBuffer(4096);
    child.stderr.on('data', (b: Buffer) => stderr.push(b));
    let timedOut = false;
    let killWait: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      // A process in uninterruptible sleep ignores SIGKILL until it wakes: do not wait for ever.
      killWait = setTimeout(
        () => reject(new LockstepError('VM_STOP_FAILED', `the KVM probe QEMU (pid ${child.pid}) did not die after SIGKILL`, { pid: child.pid })),
        PROBE_KILL_WAIT_MS,
      );
    }, timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' ? missingProgram(QEMU, e) : e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (killWait) clearTimeout(killWait);
      resolve({ code, signal, timedOut, stderr: stderr.text(), elapsedMs: Date.now() - started });
    });
  });
}

async function readCache(cachePath: string, bootId: string, qemu: string): Promise<KvmProbeResult | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(cachePath, 'utf8'));
  } catch {
    return undefined; // missing or unreadable: probe again
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const c = parsed as Partial<Record<keyof KvmProbeResult, unknown>>;
  if (
    c.bootId !== bootId ||
    c.qemu !== qemu ||
    typeof c.usable !== 'boolean' ||
    typeof c.reason !== 'string' ||
    typeof c.probedAt !== 'string' ||
    typeof c.durationMs !== 'number'
  ) {
    return undefined;
  }
  return { usable: c.usable, reason: c.reason, bootId, qemu, probedAt: c.probedAt, durationMs: c.durationMs, cached: true };
}

async function writeCache(cachePath: string, verdict: KvmProbeResult): Promise<void> {
  await mkdir(path.dirname(cachePath), { recursive: true });
  // Write then rename, so a reader never sees half a file.
  const tmp = `${cachePath}.${process.pid}.tmp`;
  const { cached: _cached, ...stored } = verdict;
  await writeFile(tmp, JSON.stringify(stored, null, 2) + '\n');
  await rename(tmp, cachePath);
}
