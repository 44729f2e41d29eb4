/**
 * This process's network namespace as sysfs shows it: a `/sys/class/net` whose interfaces are this
 * namespace's, whatever `/sys` here shows.
 *
 * Why: sysfs shows the network namespace of whoever mounted it, not of whoever reads it. lockstepd is put
 * into its host's namespace with `nsenter --net` (src/util/exec.ts says why not `ip netns exec`), which
 * keeps the mount table and so the root namespace's /sys: there `/sys/class/net/alink1` is not this host's
 * A-Link, or not there at all. Netlink (`ip`) sees the right namespace, but the link's speed is in sysfs
 * (and ethtool) only.
 *
 * How: a holder process, started once, in this network namespace and a mount namespace of its own
 * (`unshare --mount`), mounts a fresh sysfs at /sys — what `ip netns exec` does — and then waits. Its
 * mounts are reached through `/proc/<pid>/root`, so lockstepd reads plain files. The holder's mount table is
 * a slave of this one (`--propagation slave`): the lab's unmount of a powered-off host's disk reaches it, so
 * it keeps no file system alive (src/lab/host-disk.ts). It waits reading its stdin, a pipe from this process:
 * when this process ends, however it ends, the pipe closes and the holder exits. Before each use the holder is
 * checked to be in this network namespace still (a recycled pid would be another process's).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readlink } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { describeError } from '../util/errors.js';
import { missingProgram } from '../util/exec.js';

/** The holder says `ready` once its sysfs is mounted; one that takes longer is stopped. */
const READY_TIMEOUT_MS = 5000;
/** A holder that died (or never came up) is started again at most this often. */
const RESTART_MIN_MS = 10_000;
const EXIT_WAIT_MS = 1000;
/** The holder's stderr kept for the reason it failed. */
const STDERR_BYTES_MAX = 2048;

/**
 * The holder: the inherited /sys is unmounted first (in its own mount namespace only), because the kernel
 * refuses a file system mounted over itself, which is what sysfs would be where this namespace's is already
 * the one at /sys (lockstepd in the root namespace, on a real host).
 */
const HOLDER_SCRIPT = 'umount -l /sys 2>/dev/null; mount -t sysfs lockstep-sysfs /sys && echo ready && exec cat >/dev/null';

/** Where this namespace's `/sys/class/net` is now, or why it cannot be read. */
export type NetDir = { ok: true; dir: string } | { ok: false; reason: string };

export class NamespaceSysfs {
  private holder: ChildProcess | null = null;
  private starting: Promise<NetDir> | null = null;
  private lastStartMs = -Infinity;
  private lastFailure: string | null = null;
  private closed = false;

  /** `now` is a monotonic clock in ms (tests move it). */
  constructor(private readonly opts: { log: (line: string) => void; now?: () => number }) {}

  /** This namespace's `/sys/class/net`, starting the holder the first time and after it died. Never throws. */
  async netDir(): Promise<NetDir> {
    if (this.closed) return { ok: false, reason: 'closed' };
    const holder = this.holder;
    if (holder !== null && holder.exitCode === null && holder.signalCode === null) {
      if (await sameNetns(holder.pid!)) return { ok: true, dir: `/proc/${holder.pid}/root/sys/class/net` };
      this.lastFailure = `the sysfs holder (pid ${holder.pid}) is no longer in this network namespace`;
      holder.kill('SIGKILL');
      this.holder = null;
    }
    if (this.starting) return this.starting;
    const now = (this.opts.now ?? performance.now.bind(performance))();
    if (now - this.lastStartMs < RESTART_MIN_MS) {
      return { ok: false, reason: `${this.lastFailure ?? 'no sysfs holder'}; starting it again in ${Math.ceil((RESTART_MIN_MS - (now - this.lastStartMs)) / 1000)} s` };
    }
    this.lastStartMs = now;
    this.starting = this.start().finally(() => (this.starting = null));
    return this.starting;
  }

  /** Ends the holder (its sysfs mount goes with its mount namespace). */
  async close(): Promise<void> {
    this.closed = true;
    await this.starting;
    const holder = this.holder;
    this.holder = null;
    if (holder === null || holder.exitCode !== null || holder.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => holder.once('exit', () => resolve()));
    holder.stdin?.end();
    const timer = setTimeout(() => holder.kill('SIGKILL'), EXIT_WAIT_MS);
    await exited;
    clearTimeout(timer);
  }

  private async start(): Promise<NetDir> {
    const child = spawn('unshare', ['--mount', '--propagation', 'slave', '--', 'sh', '-c', HOLDER_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'], cwd: '/' });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString('utf8')).slice(-STDERR_BYTES_MAX)));
    child.stdin!.on('error', () => {
      /* the holder died: its exit tells */
    });
    const outcome = await new Promise<{ ready: true } | { ready: false; why: string }>((resolve) => {
      const timer = setTimeout(() => resolve({ ready: false, why: `it did not mount sysfs within ${READY_TIMEOUT_MS} ms` }), READY_TIMEOUT_MS);
      const done = (o: { ready: true } | { ready: false; why: string }): void => {
        clearTimeout(timer);
        resolve(o);
      };
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line === 'ready') done({ ready: true });
      });
      child.once('error', (e: NodeJS.ErrnoException) => done({ ready: false, why: e.code === 'ENOENT' ? missingProgram('unshare', e).message : describeError(e) }));
      child.once('exit', (code, signal) => done({ ready: false, why: `it exited (${signal ?? `status ${code}`}): ${stderr.trim() || 'no message'}` }));
    });
    if (!outcome.ready || this.closed) {
      child.kill('SIGKILL');
      this.lastFailure = `cannot mount this network namespace's sysfs: ${outcome.ready ? 'closed' : outcome.why}`;
      if (!this.closed) this.opts.log(`networks: ${this.lastFailure}`);
      return { ok: false, reason: this.lastFailure };
    }
    if (!(await sameNetns(child.pid!))) {
      child.kill('SIGKILL');
      this.lastFailure = `the sysfs holder (pid ${child.pid}) is not in this network namespace`;
      return { ok: false, reason: this.lastFailure };
    }
    child.once('exit', (code, signal) => {
      if (this.holder === child) this.holder = null;
      this.lastFailure = `the sysfs holder exited (${signal ?? `status ${code}`})`;
      if (!this.closed) this.opts.log(`networks: ${this.lastFailure}`);
    });
    this.holder = child;
    this.lastFailure = null;
    return { ok: true, dir: `/proc/${child.pid}/root/sys/class/net` };
  }
}

async function sameNetns(pid: number): Promise<boolean> {
  try {
    const [theirs, ours] = await Promise.all([readlink(`/proc/${pid}/ns/net`), readlink('/proc/self/ns/net')]);
    return theirs === ours;
  } catch {
    return false;
  }
}
