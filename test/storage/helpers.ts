/**
 * Test helpers for the storage layer: temporary directories, qemu-io as a one-shot NBD client, qemu-io
 * driven line by line (standing in for QEMU's NBD client, whose requests can be left pending on purpose),
 * a TCP port that accepts and never answers, and reading a socket's first bytes.
 * Everything a helper starts is registered with `cleanup`, so a failing test leaves nothing running.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { run, type RunResult } from '../../src/util/exec.js';
import { Cleanup } from '../support/cleanup.js';

export { Cleanup };

export async function tempDir(cleanup: Cleanup, prefix = 'lockstep-storage-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The qemu-io URI of export `vm` on a unix socket. */
export function nbdUri(vm: string, socketPath: string): string {
  return `nbd+unix:///${vm}?socket=${socketPath}`;
}

/** Runs qemu-io once with `commands` on `image` (format `fmt`); never throws on a failed command. */
export function qemuIo(fmt: 'raw' | 'qcow2', image: string, commands: string[], opts: { readOnly?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
  const args = ['-f', fmt, ...(opts.readOnly ? ['-r'] : []), image, ...commands.flatMap((c) => ['-c', c])];
  return run('qemu-io', args, { allowFailure: true, timeoutMs: opts.timeoutMs ?? 10_000 });
}

/** True if every command's output says it succeeded ("wrote"/"read" lines, no "failed"/"Pattern"). */
export function ioOk(r: RunResult): boolean {
  const all = r.stdout + r.stderr;
  return r.code === 0 && !/failed|Pattern verification|Could not|error/i.test(all);
}

/**
 * A port on `host` that accepts connections and never sends anything (a peer whose TLS never answers):
 * what a dial meets on a path that hangs. Its connections are held until cleanup.
 */
export async function blackHole(cleanup: Cleanup, host = '127.0.0.1'): Promise<number> {
  const held = new Set<net.Socket>();
  const server = net.createServer((c) => {
    held.add(c);
    c.on('error', () => {});
    c.on('close', () => held.delete(c));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  cleanup.add(async () => {
    for (const c of held) c.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as net.AddressInfo).port;
}

/** Connects to a unix socket and resolves with its first `n` bytes (the socket stays open), or rejects after `timeoutMs`. */
export function firstBytes(cleanup: Cleanup, socketPath: string, n: number, timeoutMs = 2000): Promise<{ socket: net.Socket; bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    cleanup.add(() => socket.destroy());
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => {
      socket.off('data', onData);
      reject(new Error(`${got} of ${n} bytes from ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (b: Buffer): void => {
      chunks.push(b);
      got += b.length;
      if (got < n) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      const all = Buffer.concat(chunks);
      if (all.length > n) socket.unshift(all.subarray(n));
      resolve({ socket, bytes: all.subarray(0, n) });
    };
    socket.on('data', onData);
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

const PROMPT = 'qemu-io> ';

/**
 * qemu-io reading commands from a pipe: it opens the image at start (the NBD handshake), then runs one
 * command per line and prints its prompt when it is ready for the next. `command` resolves with what the
 * command printed, so a command left pending shows as a promise that does not resolve.
 */
export class InteractiveQemuIo {
  private out = '';
  private waiter: { resolve: (text: string) => void } | null = null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ReturnType<typeof spawn>;

  constructor(cleanup: Cleanup, uri: string) {
    this.child = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
    const child = this.child;
    this.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    child.stdout!.on('data', (b: Buffer) => this.take(b));
    child.stderr!.on('data', (b: Buffer) => this.take(b));
    child.stdin!.on('error', () => {});
    cleanup.add(async () => {
      child.kill('SIGKILL');
      await this.exited;
    });
  }

  /** Everything printed since the last command's answer. */
  get pending(): string {
    return this.out;
  }

  /** Resolves at the first prompt: qemu-io has opened the image. Resolves with the output if it exits instead. */
  ready(): Promise<string> {
    return this.untilPrompt();
  }

  /** Sends one command; resolves with its output once qemu-io prompts again (or exits). */
  command(line: string): Promise<string> {
    this.child.stdin!.write(`${line}\n`);
    return this.untilPrompt();
  }

  private untilPrompt(): Promise<string> {
    return new Promise((resolve) => {
      this.waiter = { resolve };
      this.check();
      void this.exited.then(() => {
        if (this.waiter?.resolve === resolve) {
          this.waiter = null;
          const text = this.out;
          this.out = '';
          resolve(text);
        }
      });
    });
  }

  private take(b: Buffer): void {
    this.out += b.toString('utf8');
    this.check();
  }

  private check(): void {
    const at = this.out.indexOf(PROMPT);
    if (this.waiter === null || at === -1) return;
    const text = this.out.slice(0, at);
    this.out = this.out.slice(at + PROMPT.length);
    const { resolve } = this.waiter;
    this.waiter = null;
    resolve(text);
  }
}
