/**
 * Test helpers for the quorum server and client: a state directory with enrolled pairs and host
 * certificates, servers in-process or as real `lockstep-quorum` processes, and a raw line-level TLS
 * connection for talking to a server the way a broken or hostile host would. Everything a helper starts is
 * registered with `Cleanup`, so a failing test still leaves no process, port or directory behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createCa, createPairCa, issueCert, type CaFiles, type IssuedFiles } from '../../src/pki/pki.js';
import { LineSplitter } from '../../src/util/line-splitter.js';
import { askQuorum, type QuorumAnswer } from '../../src/quorum/client.js';
import { QuorumServer } from '../../src/quorum/server.js';
import { enrollPair, initServerState, type ServerIdentityFiles, type StoredPairRecord, readPairRecord } from '../../src/quorum/state.js';
import { repoRoot } from '../../src/util/paths.js';

import { Cleanup } from '../support/cleanup.js';
export { Cleanup };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function tempDir(cleanup: Cleanup, prefix = 'lockstep-quorum-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A quorum server's state directory (server identity for 127.0.0.1) with pair `p1` (hosts host1, host2)
 * and pair `p2` (host host3) enrolled, and a `rogue` CA that is enrolled nowhere (its `host1` certificate
 * has the right CN and the wrong signer).
 */
export interface World {
  dir: string;
  stateDir: string;
  server: ServerIdentityFiles;
  pairCa: { p1: CaFiles; p2: CaFiles };
  hosts: { host1: IssuedFiles; host2: IssuedFiles; host3: IssuedFiles; rogue: IssuedFiles };
}

export async function makeWorld(cleanup: Cleanup, opts: { enroll?: boolean } = {}): Promise<World> {
  const dir = await tempDir(cleanup);
  const stateDir = path.join(dir, 'quorum-state');
  const server = await initServerState(stateDir, 'quorum1', ['127.0.0.1']);
  const p1 = await createPairCa(path.join(dir, 'p1'), 'p1');
  const p2 = await createPairCa(path.join(dir, 'p2'), 'p2');
  const rogueCa = await createCa(path.join(dir, 'rogue'), 'lockstep pair p1');
  const hosts = {
    host1: await issueCert(p1, path.join(dir, 'p1'), { commonName: 'host1' }),
    host2: await issueCert(p1, path.join(dir, 'p1'), { commonName: 'host2' }),
    host3: await issueCert(p2, path.join(dir, 'p2'), { commonName: 'host3' }),
    rogue: await issueCert(rogueCa, path.join(dir, 'rogue'), { commonName: 'host1' }),
  };
  if (opts.enroll !== false) {
    await enrollPair(stateDir, 'p1', await readFile(p1.cert, 'utf8'));
    await enrollPair(stateDir, 'p2', await readFile(p2.cert, 'utf8'));
  }
  return { dir, stateDir, server, pairCa: { p1, p2 }, hosts };
}

export async function startServer(cleanup: Cleanup, world: World, opts: { leaseMs: number; log?: (l: string) => void }): Promise<QuorumServer> {
  const server = await QuorumServer.start({
    stateDir: world.stateDir,
    host: '127.0.0.1',
    port: 0,
    leaseMs: opts.leaseMs,
    reloadIntervalMs: 0,
    log: opts.log ?? (() => {}),
  });
  cleanup.add(() => server.close());
  return server;
}

export type HostName = keyof World['hosts'];

/** Asks as `as` (whose certificate is used) for `host` (its own name unless told). */
export function ask(
  world: World,
  port: number,
  as: HostName,
  opts: { pair?: string; host?: string; knownEpoch?: number; timeoutMs?: number } = {},
): Promise<QuorumAnswer> {
  const files = world.hosts[as];
  return askQuorum({
    address: '127.0.0.1',
    port,
    ca: world.server.ca,
    cert: files.cert,
    key: files.key,
    pair: opts.pair ?? (as === 'host3' ? 'p2' : 'p1'),
    host: opts.host ?? (as === 'rogue' ? 'host1' : as),
    knownEpoch: opts.knownEpoch ?? 0,
    timeoutMs: opts.timeoutMs ?? 3000,
  });
}

export function record(world: World, pair = 'p1'): Promise<StoredPairRecord> {
  return readPairRecord(world.stateDir, pair);
}

// ── a real lockstep-quorum process ─────────────────────────────────────────────────────────────────────

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  /** Everything the process printed so far, line by line. */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  killHard(): Promise<void>;
}

export const QUORUM_BIN = path.join(repoRoot(), 'bin', 'lockstep-quorum.js');

/** Runs `lockstep-quorum ARGS…` to completion. */
export function runQuorumCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [QUORUM_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts `lockstep-quorum serve` and waits until it listens. */
export async function spawnServer(cleanup: Cleanup, stateDir: string, opts: { port?: number; leaseMs: number }): Promise<ServerProcess> {
  const child = spawn(process.execPath, [QUORUM_BIN, 'serve', '--state', stateDir, '--listen', `127.0.0.1:${opts.port ?? 0}`, '--lease-ms', String(opts.leaseMs)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const killHard = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  cleanup.add(killHard);
  const lines: string[] = [];
  let partial = '';
  const port = await new Promise<number>((resolve, reject) => {
    const onData = (b: Buffer): void => {
      partial += b.toString();
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) {
        lines.push(l);
        const m = / listening on 127\.0\.0\.1:(\d+) /.exec(l);
        if (m) resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    void exited.then(({ code, signal }) => reject(new Error(`lockstep-quorum exited (${code ?? signal}) before listening: ${stderr}`)));
    setTimeout(() => reject(new Error(`lockstep-quorum did not listen within 10 s: ${lines.join('\n')}`)), 10_000).unref();
  });
  return { child, port, lines, exited, killHard };
}

// ── a raw line-level TLS connection ────────────────────────────────────────────────────────────────────

export interface RawConnection {
  socket: tls.TLSSocket;
  /** Reply lines received so far. */
  replies: string[];
  /** Resolves when the server closed the connection. */
  closed: Promise<void>;
  /** Waits until `n` replies arrived or the connection closed (rejects after `timeoutMs`). */
  waitReplies(n: number, timeoutMs?: number): Promise<string[]>;
}

export async function rawConnect(cleanup: Cleanup, world: World, port: number, as: HostName): Promise<RawConnection> {
  const files = world.hosts[as];
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: [await readFile(world.server.ca)],
    cert: await readFile(files.cert),
    key: await readFile(files.key),
    minVersion: 'TLSv1.3',
  });
  cleanup.add(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  const replies: string[] = [];
  const splitter = new LineSplitter(1 << 20);
  let notify = (): void => {};
  socket.on('data', (b: Buffer) => {
    for (const l of splitter.push(b).lines) replies.push(l.toString('utf8'));
    notify();
  });
  let isClosed = false;
  const closed = new Promise<void>((resolve) =>
    socket.on('close', () => {
      isClosed = true;
      resolve();
      notify();
    }),
  );
  const waitReplies = (n: number, timeoutMs = 20_000): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${replies.length} replies of ${n} after ${timeoutMs} ms`)), timeoutMs);
      const check = (): void => {
        if (replies.length >= n || isClosed) {
          clearTimeout(timer);
          notify = () => {};
          resolve(replies);
        }
      };
      notify = check;
      check();
    });
  return { socket, replies, closed, waitReplies };
}
