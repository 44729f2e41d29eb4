/**
 * Finding the peer on the private network (the first A-Link) before it has any certificate: each unpaired
 * host broadcasts a beacon every `intervalMs` on the discovery port and listens on that port; the peer's
 * address is the source of a beacon with our pair id and the peer's host id.
 *
 * A beacon proves nothing: anyone on the cable can send one. It only says where to knock; the pairing
 * exchange that follows is what is authenticated. So beacons are cheap to ignore: our own (broadcasts come
 * back to the sender), other pairs', other hosts', and malformed ones are counted, warned about once per
 * kind, and never stop discovery.
 */
import dgram from 'node:dgram';
import { LockstepError } from '../util/errors.js';
import { formatBeacon, parseBeacon, type Beacon } from './messages.js';

export const DISCOVERY_PORT_DEFAULT = 7791;
export const BEACON_INTERVAL_MS_DEFAULT = 300;

export interface DiscoveryOptions {
  self: string;
  peer: string;
  pairId: string;
  /** This host's address on the private network: a beacon from it under our id is our own. */
  local: string;
  /** Where beacons go: the broadcast address of the private network. */
  broadcast: string;
  /** The UDP port beacons are sent to and received on; 0 binds any port (tests) and beacons go to it. */
  port: number;
  /** Advertised in our beacons: where we accept the exchange (0: we dial, being the CA host). */
  pairingPort: number;
  intervalMs?: number;
  log: (line: string) => void;
}

/** Where the peer is: the source address of its beacon and the port it advertised. */
export interface PeerSighting {
  address: string;
  pairingPort: number;
}

export interface DiscoveryStats {
  sent: number;
  /** Beacons from the peer. */
  fromPeer: number;
  /** Our own beacons, come back. */
  own: number;
  /** Well-formed beacons of another pair or another host; `lastStranger` says whose. */
  strangers: number;
  lastStranger: string | null;
  /** Datagrams that are not beacons. */
  malformed: number;
}

export class Discovery {
  readonly stats: DiscoveryStats = { sent: 0, fromPeer: 0, own: 0, strangers: 0, lastStranger: null, malformed: 0 };
  private latest: PeerSighting | null = null;
  private waiters: ((s: PeerSighting) => void)[] = [];
  private readonly warned = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private boundPort = 0;

  private constructor(
    private readonly o: DiscoveryOptions,
    private readonly socket: dgram.Socket,
  ) {}

  /** Binds the port (throws `PAIRING` when it cannot) and sends the first beacon at once. */
  static async start(o: DiscoveryOptions): Promise<Discovery> {
    const socket = dgram.createSocket({ type: 'udp4' });
    const d = new Discovery(o, socket);
    // Bound to the wildcard address: on Linux a socket bound to a unicast address does not receive broadcasts.
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(o.port, '0.0.0.0', () => {
        socket.off('error', reject);
        resolve();
      });
    }).catch((e: unknown) => {
      socket.close();
      throw new LockstepError('PAIRING', `cannot listen for pairing beacons on UDP port ${o.port}: ${(e as Error).message}`, { port: o.port }, { cause: e });
    });
    socket.setBroadcast(true);
    socket.on('error', (e) => d.warnOnce(`socket ${e.message}`, `pairing discovery socket: ${e.message}`));
    socket.on('message', (msg, rinfo) => d.receive(msg, rinfo.address));
    d.boundPort = (socket.address() as { port: number }).port;
    d.beacon();
    d.timer = setInterval(() => d.beacon(), o.intervalMs ?? BEACON_INTERVAL_MS_DEFAULT);
    return d;
  }

  /** The UDP port in use (the bound one when `port` was 0). */
  get port(): number {
    return this.boundPort;
  }

  /** The peer's latest beacon: it may have restarted on another pairing port. */
  get peer(): PeerSighting | null {
    return this.latest;
  }

  /** Whether the peer has beaconed from `address`. */
  heardPeerFrom(address: string): boolean {
    return this.latest?.address === address;
  }

  /** The peer's first beacon; throws `PAIRING` at `deadline` (epoch ms) without one. */
  waitForPeer(deadline: number): Promise<PeerSighting> {
    if (this.latest) return Promise.resolve(this.latest);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(this.notFoundError());
      }, Math.max(0, deadline - Date.now()));
      const waiter = (s: PeerSighting): void => {
        clearTimeout(timer);
        resolve(s);
      };
      this.waiters.push(waiter);
    });
  }

  /** `PAIRING`: no beacon from the peer, with what was heard instead. */
  notFoundError(): LockstepError {
    const s = this.stats;
    const strangers = s.strangers > 0 ? `; heard ${s.strangers} beacon(s) of others, the last from ${s.lastStranger}` : '';
    return new LockstepError(
      'PAIRING',
      `no pairing beacon from ${this.o.peer} of pair ${this.o.pairId} on UDP port ${this.boundPort} (sent ${s.sent} to ${this.o.broadcast})${strangers}: ` +
        `is ${this.o.peer} pairing too, on this network, with the same pair id?`,
      { peer: this.o.peer, pairId: this.o.pairId, ...s },
    );
  }

  close(): Promise<void> {
    clearInterval(this.timer);
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private beacon(): void {
    const b = formatBeacon({ pairId: this.o.pairId, host: this.o.self, pairingPort: this.o.pairingPort });
    this.socket.send(b, this.boundPort, this.o.broadcast, (e) => {
      // The cable may be unplugged or its address not configured yet: keep trying until the deadline.
      if (e) this.warnOnce(`send ${(e as NodeJS.ErrnoException).code ?? e.message}`, `pairing beacon to ${this.o.broadcast} not sent: ${e.message}`);
      else this.stats.sent++;
    });
  }

  private receive(datagram: Buffer, from: string): void {
    let b: Beacon;
    try {
      b = parseBeacon(datagram);
    } catch (e) {
      this.stats.malformed++;
      this.warnOnce('malformed', `ignoring datagrams on the pairing port that are not beacons (first from ${from}): ${(e as Error).message}`);
      return;
    }
    if (b.pairId === this.o.pairId && b.host === this.o.self) {
      this.stats.own++;
      if (from !== this.o.local) this.warnOnce('impostor', `a host at ${from} also beacons as ${this.o.self} of pair ${this.o.pairId}: are both hosts configured with the same id?`);
      return;
    }
    if (b.pairId !== this.o.pairId || b.host !== this.o.peer) {
      this.stats.strangers++;
      this.stats.lastStranger = `${b.host} of pair ${b.pairId} at ${from}`;
      this.warnOnce('stranger', `ignoring the beacon of ${this.stats.lastStranger}: we pair ${this.o.self} with ${this.o.peer} as pair ${this.o.pairId}`);
      return;
    }
    this.stats.fromPeer++;
    const first = this.latest === null;
    this.latest = { address: from, pairingPort: b.pairingPort };
    if (first) this.o.log(`found ${this.o.peer} at ${from}`);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(this.latest);
  }

  private warnOnce(kind: string, message: string): void {
    if (this.warned.has(kind)) return;
    this.warned.add(kind);
    this.o.log(message);
  }
}
