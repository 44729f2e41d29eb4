/**
 * `run()` on a thread of its own, for programs a daemon runs all the time (the health checks' `ip`).
 *
 * Why: starting a program blocks the calling thread until the child has exec'd (libuv forks, then waits
 * on a pipe for the exec). On a loaded host that is the child's scheduling delay — 10–40 ms seen on the
 * lab's 2 cores, several times a second — and on lockstepd's main thread every such stall is a late
 * A-Link heartbeat and a longer measured round trip (which SplitSite then counts against FT). Here the
 * wait is the worker's; the main thread only sends the request and receives the result.
 *
 * Errors come back as the `LockstepError` that `run()` threw (code, message and fields; the cause's text
 * is in the message already).
 */
import { Worker } from 'node:worker_threads';
import { LockstepError, type ErrorCode } from './errors.js';
import type { RunOptions, RunResult } from './exec.js';

/** What the worker is asked (`exec-thread-worker.ts`). */
export interface ExecRequest {
  id: number;
  cmd: string;
  args: readonly string[];
  opts: RunOptions;
}

/** What it answers: the result, or the error as plain data. */
export type ExecReply =
  | { id: number; ok: true; result: RunResult }
  | { id: number; ok: false; error: { code: ErrorCode; message: string; fields: Record<string, unknown> } };

export class ExecThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (r: RunResult) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private closed: Error | null = null;

  constructor() {
    this.worker = new Worker(new URL('./exec-thread-worker.js', import.meta.url));
    this.worker.on('message', (reply: ExecReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else p.reject(new LockstepError(reply.error.code, reply.error.message, reply.error.fields));
    });
    this.worker.on('error', (e) => this.fail(new LockstepError('COMMAND_FAILED', `the exec thread failed: ${e.message}`, {}, { cause: e })));
    this.worker.on('exit', (code) => this.fail(new LockstepError('COMMAND_FAILED', `the exec thread exited (code ${code})`, { exitCode: code })));
    // Idle, the thread must not keep the process alive; a request in flight does (see `run`).
    this.worker.unref();
  }

  /** As `run()` from `exec.ts`, with the program started and waited for on the worker. */
  run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    return new Promise<RunResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) this.worker.ref();
      const request: ExecRequest = { id, cmd, args: [...args], opts };
      this.worker.postMessage(request);
    }).finally(() => {
      if (this.pending.size === 0 && !this.closed) this.worker.unref();
    });
  }

  /** Ends the thread; requests in flight reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.fail(new LockstepError('COMMAND_FAILED', 'the exec thread was closed', {}));
    // Referenced while it ends: an unreferenced worker's exit would not keep the loop alive to see it.
    this.worker.ref();
    await this.worker.terminate();
  }

  private fail(e: Error): void {
    this.closed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
