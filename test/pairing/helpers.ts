/**
 * Test helpers for pairing on loopback: free ports, a connected socket pair, a raw line client that talks
 * to a pairing port the way a broken or hostile host would, and a beacon sender standing in for a peer.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { formatBeacon } from '../../src/pairing/messages.js';
import type { Cleanup } from '../support/cleanup.js';

export const LOOPBACK = '127.0.0.1';
/** Loopback's broadcast address: a host's own beacons come back to it, as on a real cable. */
export const LOOPBACK_BROADCAST = '127.255.255.255';
export const SECRET = 'a pairing secret of some length';

export async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '0.0.0.0', r));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(r));
  return port;
}

export async function freeTcpPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Two ends of one TCP connection on loopback. */
export async function socketPair(cleanup: Cleanup): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, LOOPBACK);
  await once(client, 'connect');
  const [other] = await accepted;
  server.close();
  for (const s of [client, other]) {
    s.on('error', () => {});
    cleanup.add(() => s.destroy());
  }
  return [client, other];
}

/** A TCP connection that sends raw text and collects the lines it gets back. */
export class RawLines {
  readonly lines: string[] = [];
  readonly closed: Promise<void>;
  private buffered = '';
  private waiters: (() => void)[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on('error', () => {}); // the far side may reset us mid-write: that is what some tests want
    socket.on('data', (b: Buffer) => {
      this.buffered += b.toString('utf8');
      let i: number;
      while ((i = this.buffered.indexOf('\n')) >= 0) {
        this.lines.push(this.buffered.slice(0, i));
        this.buffered = this.buffered.slice(i + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((r) => socket.once('close', () => r()));
  }

  static async connect(port: number, cleanup: Cleanup): Promise<RawLines> {
    const socket = net.connect({ port, host: LOOPBACK });
    cleanup.add(() => socket.destroy());
    const raw = new RawLines(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return raw;
  }

  send(text: string): void {
    this.socket.write(text);
  }

  /** The `n`th line received (0-based), waiting up to 5 s for it. */
  async line(n: number): Promise<string> {
    const end = Date.now() + 5000;
    while (this.lines.length <= n) {
      if (Date.now() > end) throw new Error(`no line ${n} within 5 s (got ${JSON.stringify(this.lines)})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.lines[n]!;
  }
}

/** Sends `host`'s beacon to `toPort` on loopback every 100 ms, from `from` (any 127.x address), until cleanup. */
export async function beaconAs(cleanup: Cleanup, b: { host: string; pairId: string; pairingPort: number }, toPort: number, from = LOOPBACK): Promise<void> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, from, r));
  const send = (): void => s.send(formatBeacon(b), toPort, LOOPBACK);
  send();
  const timer = setInterval(send, 100);
  cleanup.add(() => {
    clearInterval(timer);
    s.close();
  });
}
