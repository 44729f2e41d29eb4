/**
 * The reads behind the resource history: small files of `/proc` and `/sys`, read with `fs/promises` (on
 * libuv's thread pool, so the daemon's main thread, where the A-Link heartbeats run, only parses a few
 * hundred bytes). Each answers a value or why not; a process that exited between being listed and being
 * read is such an answer, not a failure.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isInterfaceName, parseCounter, parseCpuTimes, parseMeminfo, parseProcessStat, parseResidentBytes, type CpuTimes, type Memory, type Parsed, type ProcessTimes } from './proc.js';

/** Where the kernel's files are: `/proc` and `/sys/class/net` (a test may point elsewhere). */
export interface KernelFiles {
  proc: string;
  net: string;
}

export const KERNEL_FILES: KernelFiles = { proc: '/proc', net: '/sys/class/net' };

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

/** An interface's received and sent byte counters, in this network namespace (the daemon's: its host's). */
export async function readInterfaceBytes(ifname: string, k: KernelFiles = KERNEL_FILES): Promise<Parsed<{ rxBytes: number; txBytes: number }>> {
  if (!isInterfaceName(ifname)) return { ok: false, reason: `'${ifname}' is not an interface name` };
  const dir = path.join(k.net, ifname, 'statistics');
  const [rx, tx] = await Promise.all([text(path.join(dir, 'rx_bytes')), text(path.join(dir, 'tx_bytes'))]);
  if (!rx.ok && rx.code === 'ENOENT') return { ok: false, reason: `no interface ${ifname} in this network namespace` };
  const rxBytes = then(rx, (s) => parseCounter(s, `${ifname}'s rx_bytes`));
  const txBytes = then(tx, (s) => parseCounter(s, `${ifname}'s tx_bytes`));
  if (!rxBytes.ok) return rxBytes;
  if (!txBytes.ok) return txBytes;
  return { ok: true, value: { rxBytes: rxBytes.value, txBytes: txBytes.value } };
}
