/**
 * What the resource history reads from the kernel, parsed, and the arithmetic that turns two readings into
 * a rate: pure functions of the files' text (`/proc/stat`, `/proc/meminfo`, `/proc/<pid>/stat`,
 * `/proc/<pid>/status`, `/proc/net/dev`), so they are tested on real content and on
 * hand-made oddities alike. The reads are in `proc-read.ts`.
 *
 * A file that does not say what is expected is an error value (`{ ok: false, reason }`), never a throw: the
 * sampler records no point for that series this round and says why.
 */

/** `gone`: the process read has exited (its directory is gone): an expected outcome between two rounds. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string; gone?: true };

/**
 * The clock ticks of `/proc/stat` and `/proc/<pid>/stat` (USER_HZ). The kernel fixes it at 100 in its ABI
 * on every architecture Lockstep runs on (x86-64, arm64), whatever its internal HZ; `getconf CLK_TCK` says
 * so, and test/history/proc.test.ts checks it on the machine that runs the tests.
 */
export const USER_HZ = 100;

/** The host's CPU time since boot, in ticks, summed over every core (the `cpu` line of `/proc/stat`). */
export interface CpuTimes {
  busyTicks: number;
  totalTicks: number;
}

/**
 * The `cpu` line: user nice system idle iowait irq softirq steal guest guest_nice. Idle and iowait are not
 * busy. guest and guest_nice are already counted in user and nice (a KVM guest's time is its QEMU's user
 * time), so they are left out of the total rather than counted twice.
 */
export function parseCpuTimes(procStat: string): Parsed<CpuTimes> {
  const line = procStat.split('\n').find((l) => l.startsWith('cpu '));
  if (line === undefined) return { ok: false, reason: "/proc/stat has no 'cpu' line" };
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  if (f.length < 4 || f.some((n) => !Number.isFinite(n) || n < 0)) return { ok: false, reason: `/proc/stat's cpu line is not a list of tick counts: '${line}'` };
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  const totalTicks = user + nice + system + idle + iowait + irq + softirq + steal;
  return { ok: true, value: { busyTicks: totalTicks - idle - iowait, totalTicks } };
}

/** The share of the host's CPU time that was busy between two readings, 0 to 1; null when no time passed (or the counters went back). */
export function cpuBusyFraction(before: CpuTimes, after: CpuTimes): number | null {
  const total = after.totalTicks - before.totalTicks;
  const busy = after.busyTicks - before.busyTicks;
  if (total <= 0 || busy < 0) return null;
  return Math.min(1, busy / total);
}

export interface Memory {
  totalBytes: number;
  /** What the kernel estimates can be given to programs without swapping (MemAvailable): free plus reclaimable cache. */
  availableBytes: number;
}

/** MemTotal and MemAvailable of `/proc/meminfo` (in kB there: KiB). */
export function parseMeminfo(text: string): Parsed<Memory> {
  const kib = (key: string): number | null => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  const totalBytes = kib('MemTotal');
  const availableBytes = kib('MemAvailable');
  if (totalBytes === null) return { ok: false, reason: '/proc/meminfo has no MemTotal' };
  if (availableBytes === null) return { ok: false, reason: '/proc/meminfo has no MemAvailable (a kernel older than 3.14)' };
  return { ok: true, value: { totalBytes, availableBytes } };
}

/** A process's CPU time (user + system) in ticks, and when it started (ticks after boot): a pid reused by another process starts later. */
export interface ProcessTimes {
  cpuTicks: number;
  startTicks: number;
}

/**
 * `/proc/<pid>/stat`: `pid (comm) state ppid …`. The command name may hold spaces and parentheses, so the
 * fields are counted from the last `)`: utime and stime are fields 14 and 15, starttime field 22.
 */
export function parseProcessStat(text: string): Parsed<ProcessTimes> {
  const close = text.lastIndexOf(')');
  if (close < 0) return { ok: false, reason: "a process's stat has no '(comm)'" };
  const fields = text.slice(close + 1).trim().split(/\s+/);
  // fields[0] is field 3 (state): field n is fields[n - 3].
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const start = Number(fields[19]);
  if (![utime, stime, start].every((n) => Number.isInteger(n) && n >= 0)) return { ok: false, reason: "a process's stat does not have utime, stime and starttime where the kernel puts them" };
  return { ok: true, value: { cpuTicks: utime + stime, startTicks: start } };
}

/**
 * The CPU a process used between two readings, in cores: CPU seconds per second (1 is one core busy all the
 * time; a QEMU with two busy vCPUs shows about 2). Null when the readings are of different processes (the
 * pid was reused), no time passed, or the count went back.
 */
export function processCores(before: ProcessTimes, after: ProcessTimes, elapsedMs: number): number | null {
  if (before.startTicks !== after.startTicks || elapsedMs <= 0) return null;
  const ticks = after.cpuTicks - before.cpuTicks;
  if (ticks < 0) return null;
  return ticks / USER_HZ / (elapsedMs / 1000);
}

/** VmRSS of `/proc/<pid>/status`: the process's resident memory. A zombie or a kernel thread has none. */
export function parseResidentBytes(text: string): Parsed<number> {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(text);
  if (!m) return { ok: false, reason: "the process's status has no VmRSS (it has exited, or is a kernel thread)" };
  return { ok: true, value: Number(m[1]) * 1024 };
}

/** A counter file of `/sys/class/net/<if>/statistics/`: one unsigned integer. */
export function parseCounter(text: string, what: string): Parsed<number> {
  const t = text.trim();
  if (!/^\d{1,20}$/.test(t)) return { ok: false, reason: `${what} is not a counter: '${t.slice(0, 40)}'` };
  return { ok: true, value: Number(t) };
}

/** Bytes per second between two readings of a counter; null when no time passed or it went back (the interface was made again). */
export function counterRate(before: number, after: number, elapsedMs: number): number | null {
  if (elapsedMs <= 0 || after < before) return null;
  return (after - before) / (elapsedMs / 1000);
}

/**
 * An interface name that is safe in a path under `/sys/class/net/`: what the kernel allows (1 to 15
 * bytes, no `/`, no whitespace, not `.` or `..`). The config names the interfaces; this keeps a typo from
 * reading some other file.
 */
export function isInterfaceName(name: string): boolean {
  return /^[^/\s\0]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

/**
 * One interface's byte counters in `/proc/net/dev`: after two header lines, `name: rx-bytes packets errs drop
 * fifo frame compressed multicast tx-bytes …`.
 */
export function parseNetDev(text: string, ifname: string): Parsed<{ rxBytes: number; txBytes: number }> {
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0 || line.slice(0, colon).trim() !== ifname) continue;
    const fields = line.slice(colon + 1).trim().split(/\s+/);
    const rx = parseCounter(fields[0] ?? '', `${ifname}'s received bytes`);
    const tx = parseCounter(fields[8] ?? '', `${ifname}'s sent bytes`);
    if (!rx.ok) return rx;
    if (!tx.ok) return tx;
    return { ok: true, value: { rxBytes: rx.value, txBytes: tx.value } };
  }
  return { ok: false, reason: `no interface ${ifname} in this network namespace` };
}
