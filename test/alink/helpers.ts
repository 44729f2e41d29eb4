/**
 * Test helpers for the A-Link: a pair's certificates (from `src/pki/`), sample messages, a TCP proxy that
 * can cut a path (reset) or stall it (as a pulled cable does: nothing closes, nothing arrives), and a way
 * to wait for events with a bound.
 */
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import type { EventEmitter } from 'node:events';
import type { Heartbeat, PairPropose, VmRecord } from '../../src/core/types.js';
import { createPairCa, issueCert } from '../../src/pki/pki.js';
import { loadAlinkTls, type AlinkTlsMaterial } from '../../src/alink/tls.js';
import { Alink, type AlinkEvents, type AlinkOptions, type AlinkPathSpec } from '../../src/alink/alink.js';

export const LOOPBACK = '127.0.0.1';

/** Fast timings so that path loss shows within a second. */
export const FAST = { pingIntervalMs: 50, pathTimeoutMs: 400, connectTimeoutMs: 1000, reconnectMinMs: 50, reconnectMaxMs: 400 };

export interface PairCerts {
  dir: string;
  /** host id → TLS material signed by this pair's CA. */
  material(host: string): Promise<AlinkTlsMaterial>;
  cleanup(): Promise<void>;
}

/** A pair CA in a temporary directory; certificates are issued on demand. */
export async function pairCerts(pairId: string): Promise<PairCerts> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `lockstep-alink-${pairId}-`));
  const ca = await createPairCa(dir, pairId);
  const cache = new Map<string, Promise<AlinkTlsMaterial>>();
  return {
    dir,
    material(host) {
      let m = cache.get(host);
      if (!m) {
        m = issueCert(ca, dir, { commonName: host, ips: [LOOPBACK] }).then(loadAlinkTls);
        cache.set(host, m);
      }
      return m;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export function vmRecord(name: string, owner: string): VmRecord {
  return {
    config: { name, desired: 'running', protection: 'ha', version: 1, by: owner, removed: false, hardware: { memoryMiB: 128 } },
    owner: { host: owner, epoch: 1, seq: 1 },
  };
}

export function heartbeat(from: string, seq: number, vms: Record<string, VmRecord> = {}): Heartbeat {
  return {
    kind: 'heartbeat',
    from,
    incarnation: 1,
    seq,
    echo: { incarnation: -1, seq: 0 },
    epoch: 3,
    authority: 'pair',
    hostState: 'paired',
    health: 97.5,
    quorumReachable: ['quorum1'],
    activeQuorum: 'quorum1',
    quorumEpoch: 0,
    vms,
    running: Object.keys(vms),
    mirrors: Object.fromEntries(Object.keys(vms).map((vm) => [vm, { stream: `${from}.1.1`, state: 'ready' as const }])),
    copies: {},
    ftRoomShort: [],
    migrations: {},
    incoming: {},
  };
}

export function pairPropose(from: string, epoch: number): PairPropose {
  return { kind: 'pair-propose', from, epoch, activeQuorum: null, vms: { web: vmRecord('web', from) } };
}

/** Events of one kind collected as they come, with a bounded wait for the next matching one. */
export class Recorder<K extends keyof AlinkEvents> {
  readonly seen: AlinkEvents[K][] = [];
  private waiters: { match: (args: AlinkEvents[K]) => boolean; resolve: (args: AlinkEvents[K]) => void }[] = [];

  constructor(emitter: EventEmitter<AlinkEvents>, event: K) {
    emitter.on(event, ((...args: AlinkEvents[K]) => {
      this.seen.push(args);
      this.waiters = this.waiters.filter((w) => {
        if (!w.match(args)) return true;
        w.resolve(args);
        return false;
      });
    }) as never);
  }

  /** The next event (after now) that matches, or a rejection after `timeoutMs`. */
  next(match: (args: AlinkEvents[K]) => boolean = () => true, timeoutMs = 5000, what = 'event'): Promise<AlinkEvents[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (args) => {
          clearTimeout(timer);
          resolve(args);
        },
      });
    });
  }

  /** A matching event seen already, or the next one. */
  async some(match: (args: AlinkEvents[K]) => boolean = () => true, timeoutMs = 5000, what = 'event'): Promise<AlinkEvents[K]> {
    const had = this.seen.find(match);
    return had ?? this.next(match, timeoutMs, what);
  }
}

/** Resolves when `cond()` holds, checking every 10 ms; rejects after `timeoutMs`. */
export async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A TCP proxy standing in for one A-Link cable. `reset()` cuts it with a reset (connections destroyed, new
 * ones refused); `stall()` is a pulled cable (connections stay open and carry nothing, new ones hang);
 * `heal()` restores it.
 */
export class CableProxy {
  private server!: net.Server;
  private pairs = new Set<[net.Socket, net.Socket | null]>();
  private mode: 'pass' | 'reset' | 'stall' = 'pass';
  port = 0;

  private constructor(private readonly targetPort: number) {}

  static async start(targetPort: number): Promise<CableProxy> {
    const p = new CableProxy(targetPort);
    p.server = net.createServer((client) => p.accept(client));
    await new Promise<void>((resolve) => p.server.listen(0, LOOPBACK, resolve));
    p.port = (p.server.address() as net.AddressInfo).port;
    return p;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {});
    if (this.mode === 'reset') return void client.resetAndDestroy();
    const pair: [net.Socket, net.Socket | null] = [client, null];
    this.pairs.add(pair);
    client.once('close', () => this.drop(pair));
    if (this.mode === 'stall') {
      client.pause();
      return;
    }
    this.connect(pair);
  }

  private connect(pair: [net.Socket, net.Socket | null]): void {
    const [client] = pair;
    const upstream = net.connect(this.targetPort, LOOPBACK);
    upstream.on('error', () => {});
    pair[1] = upstream;
    upstream.once('close', () => this.drop(pair));
    client.pipe(upstream);
    upstream.pipe(client);
  }

  private drop(pair: [net.Socket, net.Socket | null]): void {
    this.pairs.delete(pair);
    pair[0].destroy();
    pair[1]?.destroy();
  }

  reset(): void {
    this.mode = 'reset';
    for (const pair of [...this.pairs]) {
      pair[0].resetAndDestroy();
      pair[1]?.resetAndDestroy();
      this.drop(pair);
    }
  }

  stall(): void {
    this.mode = 'stall';
    for (const [a, b] of this.pairs) {
      if (b === null) continue;
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }

  heal(): void {
    const was = this.mode;
    this.mode = 'pass';
    if (was !== 'stall') return;
    // A cable plugged back in carries on the connections that survived: nothing was lost, only delayed.
    for (const pair of [...this.pairs]) {
      if (pair[1] === null) {
        this.connect(pair);
      } else {
        pair[0].pipe(pair[1]);
        pair[1].pipe(pair[0]);
      }
    }
  }

  async close(): Promise<void> {
    for (const pair of [...this.pairs]) this.drop(pair);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Two Alinks of one pair on loopback: host2 listens (ports chosen by the system), host1 dials. */
export async function loopbackPair(
  certs: PairCerts,
  pathNames: string[],
  opts: { timing?: AlinkOptions['timing']; proxies?: boolean; host1Paths?: string[] } = {},
): Promise<{ host1: Alink; host2: Alink; proxies: Map<string, CableProxy>; close: () => Promise<void> }> {
  const host2 = new Alink({
    self: 'host2',
    peer: 'host1',
    paths: pathNames.map((name) => ({ name, local: LOOPBACK, peer: LOOPBACK, port: 0 })),
    tls: await certs.material('host2'),
    timing: opts.timing ?? FAST,
  });
  await host2.start();
  const proxies = new Map<string, CableProxy>();
  const paths: AlinkPathSpec[] = [];
  for (const s of host2.status()) {
    if (opts.host1Paths && !opts.host1Paths.includes(s.name)) continue;
    let port = s.port;
    if (opts.proxies) {
      const p = await CableProxy.start(s.port);
      proxies.set(s.name, p);
      port = p.port;
    }
    paths.push({ name: s.name, local: LOOPBACK, peer: LOOPBACK, port });
  }
  const host1 = new Alink({ self: 'host1', peer: 'host2', paths, tls: await certs.material('host1'), timing: opts.timing ?? FAST });
  await host1.start();
  return {
    host1,
    host2,
    proxies,
    close: async () => {
      await Promise.all([host1.close(), host2.close()]);
      await Promise.all([...proxies.values()].map((p) => p.close()));
    },
  };
}
