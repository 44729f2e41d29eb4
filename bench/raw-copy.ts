/**
 * The yardstick for a migration or a disk resync: the same number of bytes over the same path, TCP or
 * TLS, with nothing else to do. Two processes, like the two QEMUs: the receiver is this file run as a
 * child; the sender is the caller (`rawCopy`, over loopback) or another child (`rawCopyBetween`, from one
 * lab host's namespace to the other's address, e.g. over an A-Link). The receiver answers one byte once it
 * has everything, so the time covers delivery, not just the sender's writes into its socket buffer.
 *
 *   node dist/bench/raw-copy.js receive BYTES plain|TLS-JSON [HOST]  (prints {"port":N} once it listens)
 *   node dist/bench/raw-copy.js send JSON                         (prints {"ms":N} once the receiver has all)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { IssuedFiles } from '../src/pki/pki.js';

export interface RawCopyTls {
  /** The receiver's certificate (like the migration destination's). */
  server: IssuedFiles;
  /** The sender's. */
  client: IssuedFiles;
  /** The CN the receiver's certificate must carry. */
  serverName: string;
}

const CHUNK_BYTES = 4 * 1024 * 1024;
const HOST = '127.0.0.1';

/** Copies `bytes` random bytes to a receiver process and returns how long it took, connect included. */
export async function rawCopy(bytes: number, secure?: RawCopyTls): Promise<{ ms: number }> {
  const child = spawnReceiver([], bytes, secure, HOST);
  const exited = once(child, 'exit');
  try {
    const port = await listeningPort(child);
    const ms = await send(HOST, port, bytes, secure);
    await exited;
    return { ms };
  } finally {
    child.kill('SIGKILL');
  }
}

/**
 * Copies `bytes` random bytes from a process in network namespace `from` to a receiver in namespace `to`
 * listening on `address` (e.g. one lab host to the other's A-Link address), and returns how long it took.
 */
export async function rawCopyBetween(o: { bytes: number; from: string; to: string; address: string; secure?: RawCopyTls }): Promise<{ ms: number }> {
  const receiver = spawnReceiver(['nsenter', `--net=/run/netns/${o.to}`, '--'], o.bytes, o.secure, o.address);
  const exited = once(receiver, 'exit');
  let sender: ChildProcess | undefined;
  try {
    const port = await listeningPort(receiver);
    const job = JSON.stringify({ host: o.address, port, bytes: o.bytes, secure: o.secure ?? null });
    sender = spawn('nsenter', [`--net=/run/netns/${o.from}`, '--', process.execPath, fileURLToPath(import.meta.url), 'send', job], { stdio: ['ignore', 'pipe', 'inherit'] });
    const { ms } = JSON.parse(await firstLine(sender, 'sender')) as { ms: number };
    await exited;
    return { ms };
  } finally {
    receiver.kill('SIGKILL');
    sender?.kill('SIGKILL');
  }
}

function spawnReceiver(prefix: string[], bytes: number, secure: RawCopyTls | undefined, host: string): ChildProcess {
  const args = [process.execPath, fileURLToPath(import.meta.url), 'receive', String(bytes), secure ? JSON.stringify(secure.server) : 'plain', host];
  const [cmd, ...rest] = [...prefix, ...args];
  return spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'inherit'] });
}

async function listeningPort(child: ChildProcess): Promise<number> {
  return (JSON.parse(await firstLine(child, 'receiver')) as { port: number }).port;
}

/** The child's first output (one short JSON line), or an error if it exits first. */
function firstLine(child: ChildProcess, role: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`the raw copy's ${role} exited ${String(code)} before it answered`));
    child.once('exit', onExit);
    child.stdout!.once('data', (b: Buffer) => {
      child.off('exit', onExit);
      resolve(b.toString());
    });
  });
}

/** The sender: connects, writes `bytes`, and returns the time until the receiver's one-byte answer. */
async function send(host: string, port: number, bytes: number, secure: RawCopyTls | undefined): Promise<number> {
  const chunk = randomFillSync(Buffer.alloc(CHUNK_BYTES));
  const started = process.hrtime.bigint();
  const socket = secure ? await connectTls(host, port, secure) : await connectTcp(host, port);
  const acked = once(socket, 'data');
  for (let sent = 0; sent < bytes; sent += CHUNK_BYTES) {
    if (!socket.write(chunk.subarray(0, Math.min(CHUNK_BYTES, bytes - sent)))) await once(socket, 'drain');
  }
  await acked;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  socket.destroy();
  return ms;
}

async function connectTcp(host: string, port: number): Promise<net.Socket> {
  const socket = net.connect(port, host);
  await once(socket, 'connect');
  return socket;
}

async function connectTls(host: string, port: number, secure: RawCopyTls): Promise<tls.TLSSocket> {
  const socket = tls.connect({
    host,
    port,
    ...material(secure.client),
    // As the A-Link: the pair CA only, TLS 1.3, and the peer named by its CN (the certificates have no SAN).
    minVersion: 'TLSv1.3',
    checkServerIdentity: (_host, cert) => (cert.subject.CN === secure.serverName ? undefined : new Error(`server is ${cert.subject.CN}`)),
  });
  await once(socket, 'secureConnect');
  return socket;
}

function material(files: IssuedFiles): { cert: Buffer; key: Buffer; ca: Buffer } {
  return { cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca) };
}

/** The receiver: counts bytes, answers one byte when all have arrived, and exits. */
function receive(bytes: number, server: IssuedFiles | undefined, host: string): void {
  const onConnection = (socket: net.Socket): void => {
    let got = 0;
    socket.on('data', (b: Buffer) => {
      got += b.length;
      if (got >= bytes) socket.end('k', () => process.exit(0));
    });
  };
  const listener = server
    ? tls.createServer({ ...material(server), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, onConnection)
    : net.createServer(onConnection);
  listener.listen(0, host, () => process.stdout.write(JSON.stringify({ port: (listener.address() as net.AddressInfo).port }) + '\n'));
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'receive') {
  const tlsArg = process.argv[4];
  receive(Number(process.argv[3]), tlsArg === undefined || tlsArg === 'plain' ? undefined : (JSON.parse(tlsArg) as IssuedFiles), process.argv[5] ?? HOST);
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'send') {
  const job = JSON.parse(process.argv[3]!) as { host: string; port: number; bytes: number; secure: RawCopyTls | null };
  const ms = await send(job.host, job.port, job.bytes, job.secure ?? undefined);
  process.stdout.write(JSON.stringify({ ms }) + '\n');
}
