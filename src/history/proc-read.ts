/**
 * The reads behind the resource history: small files of `/proc` and `/sys`, read with `fs/promises` (on
 * libuv's thread pool, so the daemon's main thread, where the A-Link heartbeats run, only parses a few
 * hundred bytes). Each answers a value or why not; a process that exited between being listed and being
 * read is such an answer, not a failure.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isInterfaceName, parseCpuTimes, parseMeminfo, parseNetDev, parseProcessStat, parseResidentBytes, type CpuTimes, type Memory, type Parsed, type ProcessTimes } from './proc.js';

/** Where the kernel's files are: `/proc` (a test may point elsewhere). */
export interface KernelFiles {
  proc: string;
}

export const KERNEL_FILES: KernelFiles = { proc: '/proc' };

/** A file's text, or why not with the errno's code (ENOENT: it is not there). */
type Read = { ok: true; value: string } | { ok: false; reason: string; code: string | undefined; gone?: true };

async function text(file: string): Promise<Read> {
  try {
    return { ok: true, value: await readFile(file, 'utf8') };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { ok: false, reason: `cannot read ${file}: ${code ?? (e as Error).message}`, code };
  }
}

function then<A, B>(p: Parsed<A> | Read, f: (a: A) => Parsed<B>): Parsed<B> {
  if (p.ok) return f(p.value as A);
  return p.gone ? { ok: false, reason: p.reason, gone: true } : { ok: false, reason: p.reason };
}

export async function readCpuTimes(k: KernelFiles = KERNEL_FILES): Promise<Parsed<CpuTimes>> {
  return then(await text(path.join(k.proc, 'stat')), parseCpuTimes);
}

export async function readMemory(k: KernelFiles = KERNEL_FILES): Promise<Parsed<Memory>> {
  return then(await text(path.join(k.proc, 'meminfo')), parseMeminfo);
}

/** A file of a process's directory; "exited" when the directory is gone (ENOENT, or ESRCH while it goes). */
async function processFile(pid: number, name: string, k: KernelFiles): Promise<Read> {
  const t = await text(path.join(k.proc, String(pid), name));
  if (!t.ok && (t.code === 'ENOENT' || t.code === 'ESRCH')) return { ...t, reason: `process ${pid} has exited`, gone: true };
  return t;
}

/** A process's CPU time and start. */
export async function readProcessTimes(pid: number, k: KernelFiles = KERNEL_FILES): Promise<Parsed<ProcessTimes>> {
  return then(await processFile(pid, 'stat', k), parseProcessStat);
}

export async function readResidentBytes(pid: number, k: KernelFiles = KERNEL_FILES): Promise<Parsed<number>> {
  return then(await processFile(pid, 'status', k), parseResidentBytes);
}

/**
 * An interface's received and sent byte counters, in this process's network namespace (the daemon's: its
 * host's), from `/proc/net/dev`: /proc/net follows the reader's namespace, where /sys shows its mounter's (the
 * lab enters lockstepd into its namespace with nsenter, keeping the root namespace's /sys).
 */
export async function readInterfaceBytes(ifname: string, k: KernelFiles = KERNEL_FILES): Promise<Parsed<{ rxBytes: number; txBytes: number }>> {
  if (!isInterfaceName(ifname)) return { ok: false, reason: `'${ifname}' is not an interface name` };
  const dev = await text(path.join(k.proc, 'net', 'dev'));
  if (!dev.ok) return { ok: false, reason: dev.reason };
  return parseNetDev(dev.value, ifname);
}
