/**
 * One spawned QEMU process: its pid, its exit, the tail of what it wrote to stderr, and the promise that it
 * does not outlive this Node process when Node exits normally or on an uncaught exception (a `process.on
 * ('exit')` hook SIGKILLs every live one). A SIGKILLed lockstepd cannot run hooks: the supervisor starts QEMU
 * under `setpriv --pdeathsig SIGKILL` so the kernel kills it then, and `reapStale` covers whatever is left.
 */
import { spawn } from 'node:child_process';
import { LockstepError } from '../util/errors.js';
import { missingProgram } from '../util/exec.js';
import { TailBuffer } from './tail-buffer.js';

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Enough of stderr to hold QEMU's last few messages, bounded however much it writes. */
const STDERR_TAIL_BYTES = 16 * 1024;

const live = new Set<QemuProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) p.signal('SIGKILL');
  });
}

export class QemuProcess {
  readonly exit: Promise<ProcessExit>;
  private exitValue: ProcessExit | undefined;
  private readonly stderr = new TailBuffer(STDERR_TAIL_BYTES);

  private constructor(
    readonly pid: number,
    child: ReturnType<typeof spawn>,
  ) {
    child.stdout?.on('data', (b: Buffer) => this.stderr.push(b));
    child.stderr?.on('data', (b: Buffer) => this.stderr.push(b));
    this.exit = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.exitValue = { code, signal };
        live.delete(this);
        resolve(this.exitValue);
      });
    });
  }

  /**
   * Spawns `cmd args` and resolves once it runs. `programName` is what to name in MISSING_PREREQUISITE
   * if `cmd` cannot be executed.
   */
  static start(cmd: string, args: readonly string[], programName: string): Promise<QemuProcess> {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      // 'on', not 'once': an error after the spawn (a failed kill) must not become an unhandled 'error' event.
      child.on('error', (e: NodeJS.ErrnoException) => {
        reject(
          e.code === 'ENOENT'
            ? missingProgram(programName, e)
            : new LockstepError('VM_START_FAILED', `could not run ${cmd}: ${e.message}`, { cmd }, { cause: e }),
        );
      });
      child.once('spawn', () => {
        const p = new QemuProcess(child.pid!, child);
        live.add(p);
        installExitHook();
        resolve(p);
      });
    });
  }

  get hasExited(): boolean {
    return this.exitValue !== undefined;
  }

  /** True if the process exits (or had exited) within `ms`. */
  async exitWithin(ms: number): Promise<boolean> {
    if (this.exitValue) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const result = await Promise.race([this.exit.then(() => true as const), timedOut]);
    clearTimeout(timer);
    return result;
  }

  /** Sends a signal unless the process has been reaped (its pid could then belong to someone else). */
  signal(sig: NodeJS.Signals): boolean {
    if (this.exitValue) return false;
    try {
      process.kill(this.pid, sig);
      return true;
    } catch {
      return false;
    }
  }

  stderrTail(): string {
    return this.stderr.text();
  }
}
