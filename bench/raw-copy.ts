/**
 * The yardstick for a migration: the same number of bytes over the same loopback, TCP or TLS, with nothing
 * else to do. Two processes, like the two QEMUs: the receiver is this file run as a child, the sender is
 * the caller. The receiver answers one byte once it has everything, so the time covers delivery, not just
 * the sender's writes into its socket buffer.
 *
 *   node dist/bench/raw-copy.js receive BYTES [TLS-JSON]   (prints {"port":N} once it listens)
 */
import { spawn } from 'node:child_process';
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
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'receive', String(bytes), ...(secure ? [JSON.stringify(secure.server)] : [])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  try {
    const [line] = (await once(child.stdout!, 'data')) as [Buffer];
    const { port } = JSON.parse(line.toString()) as { port: number };
    const chunk = randomFillSync(Buffer.alloc(CHUNK_BYTES));
    const started = process.hrtime.bigint();
    const socket = secure ? await connectTls(port, secure) : await connectTcp(port);
    const acked = once(socket, 'data');
    for (let sent = 0; sent < bytes; sent += CHUNK_BYTES) {
      if (!socket.write(chunk.subarray(0, Math.min(CHUNK_BYTES, bytes - sent)))) await once(socket, 'drain');
    }
    await acked;
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    socket.destroy();
    await exited;
    return { ms };
  } finally {
    child.kill('SIGKILL');
  }
}

async function connectTcp(port: number): Promise<net.Socket> {
  const socket = net.connect(port, HOST);
  await once(socket, 'connect');
  return socket;
}

async function connectTls(port: number, secure: RawCopyTls): Promise<tls.TLSSocket> {
  const socket = tls.connect({
    host: HOST,
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
function receive(bytes: number, server: IssuedFiles | undefined): void {
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
  listener.listen(0, HOST, () => process.stdout.write(JSON.stringify({ port: (listener.address() as net.AddressInfo).port }) + '\n'));
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'receive') {
  receive(Number(process.argv[3]), process.argv[4] === undefined ? undefined : (JSON.parse(process.argv[4]) as IssuedFiles));
}
