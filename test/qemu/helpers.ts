/**
 * Test helpers for the QEMU driver: temporary directories, bare QEMUs to talk QMP to, and a fake QMP server
 * that can misbehave on purpose. Every process or server a helper starts is registered with `cleanup` so a
 * failing test still leaves nothing running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { QmpClient } from '../../src/qemu/qmp.js';
import { isLockstepError } from '../../src/util/errors.js';

import { Cleanup } from '../support/cleanup.js';
export { Cleanup };

export async function tempDir(cleanup: Cleanup, prefix = 'lockstep-qemu-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface BareQemu {
  child: ChildProcess;
  pid: number;
  socketPath: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A QEMU with no guest, paused (`-S`), with QMP on a unix socket: enough to exercise QMP for real. */
export async function startBareQemu(cleanup: Cleanup, dir: string): Promise<BareQemu> {
  const socketPath = path.join(dir, 'qmp.sock');
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-machine', 'pc', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '32', '-S',
      '-chardev', `socket,id=qmp,path=${socketPath},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  cleanup.add(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  await waitFor(async () => {
    // Connect and leave at once: proves the socket answers; QEMU serves one client at a time.
    try {
      const probe = await QmpClient.connect(socketPath, { timeoutMs: 2000 });
      await probe.close();
      return true;
    } catch (e) {
      if (isLockstepError(e, 'QMP_DISCONNECTED')) return false;
      throw e;
    }
  }, 10_000);
  return { child, pid: child.pid!, socketPath, exited };
}

/** Polls `check` every 50 ms until it is true; throws after `timeoutMs`. */
export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}\r\n';

export interface FakeRequest {
  execute: string;
  id: string;
  arguments?: Record<string, unknown>;
}

/**
 * A fake QMP server on a unix socket. `onConnection` gets each socket; `requests(socket, handler)` parses
 * what the client sends, one JSON object per line.
 */
export async function fakeQmpServer(
  cleanup: Cleanup,
  dir: string,
  onConnection: (socket: net.Socket) => void,
): Promise<{ path: string; server: net.Server }> {
  const socketPath = path.join(dir, `fake-${Math.random().toString(36).slice(2, 8)}.sock`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined); // the client may close first
    onConnection(s);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { path: socketPath, server };
}

export function onRequests(socket: net.Socket, handler: (req: FakeRequest) => void): void {
  let buf = '';
  socket.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') handler(JSON.parse(line) as FakeRequest);
    }
  });
}

/** The usual opening: greet, then accept qmp_capabilities; later requests go to `handler`. */
export function standardServer(handler: (req: FakeRequest, socket: net.Socket) => void): (socket: net.Socket) => void {
  return (socket) => {
    socket.write(GREETING);
    onRequests(socket, (req) => {
      if (req.execute === 'qmp_capabilities') socket.write(JSON.stringify({ return: {}, id: req.id }) + '\r\n');
      else handler(req, socket);
    });
  };
}

/** Rejection helper: resolves with the error a promise rejects with, fails if it resolves. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection, got a value');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
