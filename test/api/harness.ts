/**
 * A lockstepd's API surroundings for the API tests, real where they can run in a test: a state database on
 * disk, the decision core's driver with its watchdog thread and VM runner, a pair CA made by openssl, the
 * user database and audit log, a self-signed certificate, and the HTTPS server on 127.0.0.1 (any free port).
 * Only the peer cannot exist here: its A-Link and quorum ports are fakes that send nowhere. The peer wins
 * the tie-break, so this lone host never has authority and never starts a QEMU.
 */
import https from 'node:https';
import http from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_TIMING } from '../../src/core/types.js';
import type { DaemonConfig } from '../../src/daemon/config.js';
import { ConfigFile } from '../../src/daemon/config-file.js';
import { LivePreferences } from '../../src/daemon/live-preferences.js';
import { StateDb } from '../../src/daemon/state-db.js';
import { Watchdog } from '../../src/daemon/watchdog.js';
import { VmRunner, vmSerialLog } from '../../src/daemon/vm-runner.js';
import { CoreDriver } from '../../src/daemon/core-driver.js';
import type { ApiContext } from '../../src/daemon/api.js';
import { createPairCa } from '../../src/pki/pki.js';
import { UserStore } from '../../src/users/user-store.js';
import { AuditLog } from '../../src/audit/audit-log.js';
import { ManagementServer } from '../../src/api/management-server.js';
import { loadManagementTls } from '../../src/api/management-tls.js';
import type { LimiterOptions } from '../../src/users/login-limiter.js';
import type { StreamLimits } from '../../src/api/event-stream.js';
import type { Notifier } from '../../src/notify/notifier.js';
import { Notifications } from '../../src/notify/notifications.js';
import { HostClockReader } from '../../src/daemon/host-clock.js';
import { run } from '../../src/util/exec.js';
import { Cleanup } from '../support/cleanup.js';
import { readSensors } from '../../src/health/sensors.js';
import { HostNetworks } from '../../src/daemon/networks.js';
import { PeerReports } from '../../src/daemon/peer-report.js';
import { HistorySampler } from '../../src/history/sampler.js';
import { historySources } from '../../src/daemon/history-sources.js';
import { VcdStore } from '../../src/storage/vcd-store.js';
import { LogTail } from '../../src/daemon/log-tail.js';
import { SnapshotStore, daemonSnapshotPorts } from '../../src/daemon/snapshots.js';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
  text: string;
  /** The body as it came (a binary answer's: `text` is then its bytes mis-decoded). */
  bytes: Buffer;
}

export interface Harness {
  dir: string;
  config: DaemonConfig;
  db: StateDb;
  api: ApiContext;
  /** This process's networks behind `GET /v1/networks`: `sample()` takes what the health loop would. */
  networks: HostNetworks;
  driver: CoreDriver | null;
  users: UserStore;
  audit: AuditLog;
  /** The config file lockstepd would have read (the preference setters rewrite it), and the live preferences. */
  configFile: string;
  live: LivePreferences;
  /** The notifier started with the config's notifications (`config` option), its log lines collected. */
  notifier: Notifier | null;
  /** The notifications as they are now (a preference setter may start, reconfigure or stop the notifier). */
  notifications: Notifications;
  notifyLog: string[];
  server: ManagementServer;
  port: number;
  ca: Buffer;
  /** The injected clock: `advance` moves it. */
  clock: { now: number; advance(ms: number): void };
  /** One request over HTTPS; `token` as a Bearer header, `raw` sent as the body as is. */
  request(method: string, path: string, opts?: { body?: unknown; raw?: string | Buffer; token?: string; headers?: Record<string, string> }): Promise<Answer>;
  /** POST /api/v1/session; the token. */
  login(name: string, password: string): Promise<string>;
  /** Tells the event log's followers of entries a test appended to `db` itself. */
  logged(): void;
  /** The resource history: `sampleNow()` takes a round; running on its own timer only with `historyIntervalMs`. */
  history: HistorySampler;
  /** The daemon's recent log as the support bundle reads it: the VM runner's lines. */
  daemonLog: LogTail;
}

export const ADMIN = { name: 'admin', password: 'correct horse battery' };

export const SAMPLE_VM = {
  name: 'web',
  vcpus: 1,
  memoryMiB: 128,
  diskMiB: 16,
  guest: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'console=ttyS0' },
  nics: [{ mac: '52:54:00:12:34:56', address: '10.10.3.50' }],
  protection: 'ha',
  desired: 'stopped',
};

export async function startHarness(
  cleanup: Cleanup,
  opts: {
    withDriver?: boolean;
    /** Sample the resource history on its own timer at this interval (else only by `sampleNow`). */
    historyIntervalMs?: number;
    /** Where the sensors are read: a directory laid out like /sys (default: this machine's /sys). */
    sysfsRoot?: string;
    idleMs?: number;
    maxMs?: number;
    limiter?: LimiterOptions;
    metricsToken?: string;
    streamLimits?: Partial<StreamLimits>;
    storageGroups?: (dataDir: string) => unknown;
    /** More of lockstepd's config (notifications, quorum, splitsite …), made with the data directory. */
    config?: (dataDir: string) => Record<string, unknown>;
    /** The notifier's "send test" timeout. */
    testTimeoutMs?: number;
    /** How the peer's view is asked (default: over no A-Link, as before pairing). */
    peerReports?: (networks: HostNetworks) => PeerReports;
  } = {},
): Promise<Harness> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-api-test-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  // Written to a file, as lockstepd's is: the preference setters rewrite it (src/daemon/config-file.ts).
  const configFile = path.join(dir, 'lockstepd.json');
  await writeFile(configFile, `${JSON.stringify({
    host: 'host1',
    dataDir: dir,
    pair: { id: 'test', peer: 'host2', secret: 'a-long-enough-secret', tiebreakWinner: 'host2' },
    alink: [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }],
    // The test's own loopback stands for the management network: a real interface, up, with counters.
    mgmtInterface: 'lo',
    ...(opts.storageGroups !== undefined ? { storageGroups: opts.storageGroups(dir) } : {}),
    ...(opts.config?.(dir) ?? {}),
  }, null, 2)}\n`, { mode: 0o600 });
  const { config, file } = await ConfigFile.load(configFile);
  const db = StateDb.open(path.join(dir, 'state', 'lockstepd.db'));
  cleanup.add(() => db.close());
  const incarnation = db.nextIncarnation();
  // As lockstepd does: whoever follows the event log live is told of each append.
  const logListeners = new Set<() => void>();
  let driver: CoreDriver | null = null;
  let runner: VmRunner | null = null;
  const vcds = new VcdStore('host1', config.storageGroups);
  const daemonLog = new LogTail(1024 * 1024);
  if (opts.withDriver !== false) {
    const watchdog = new Watchdog(() => {});
    cleanup.add(() => watchdog.close());
    runner = new VmRunner(config, {
      report: (vm, event) => driver?.submit({ type: 'vm-event', vm, event }),
      reportStorage: (vm, event) => driver?.submit({ type: 'storage', vm, event }),
      onPidsChanged: (pids) => watchdog.setPids(pids),
      copyReleased: () => Promise.resolve(),
      dialer: () => null,
      checkpointDialer: () => null,
      takeResumePoint: () => null,
      ftAllowed: () => false,
      migrationTls: () => null,
      adoptExport: () => {},
      disownExport: () => {},
      findVcd: (name) => vcds.find(name),
      log: (line) => daemonLog.add(line),
    });
    const live = new CoreDriver(
      { ...DEFAULT_TIMING, self: 'host1', peer: 'host2', quorumServers: [], tiebreakWinner: 'host2' },
      incarnation,
      db,
      runner,
      watchdog,
      {
        sendPeer: () => {},
        serveCopy: () => {},
        unserveCopy: () => {},
        askQuorum: () => Promise.reject(new Error('no quorum server in this test')),
        probeQuorum: async () => false,
        restartServices: () => {},
        logged: () => {
          for (const l of logListeners) l();
        },
      },
      () => {},
    );
    driver = live;
    cleanup.add(() => live.stop());
  }
  // As lockstepd does: notifications over the event log when the config has them (src/daemon/main.ts).
  const notifyLog: string[] = [];
  const notifications = new Notifications(
    {
      pair: config.pair.id,
      host: config.host,
      outboxFile: path.join(dir, 'state', 'notify.db'),
      source: db,
      log: (l) => {
        notifyLog.push(l);
        daemonLog.add(l);
      },
      ...(opts.testTimeoutMs !== undefined ? { testTimeoutMs: opts.testTimeoutMs } : {}),
    },
    config.notifications,
  );
  cleanup.add(() => notifications.stop());
  const notifier = notifications.notifier();
  const live = new LivePreferences({ config, file, notifications, setResyncRate: (rate) => runner?.setResyncRate(rate), log: (l) => daemonLog.add(l) });
  const hostClock = new HostClockReader(run);
  const pairCa = await createPairCa(dir, 'test');
  // This process's networks as lockstepd reads its own (no A-Link interface here: alink1 is missing).
  const networks = new HostNetworks({ host: 'host1', config, alink: () => null, health: () => null });
  const peerReports =
    opts.peerReports?.(networks) ??
    new PeerReports({ self: 'host1', peer: 'host2', link: () => null, own: async () => ({ networks: await networks.list(), health: null }), log: () => {} });
  cleanup.add(() => peerReports.close());
  const history = new HistorySampler(
    historySources({ host: 'host1', storageGroups: config.storageGroups, driver: () => driver, running: () => runner?.running() ?? [], health: () => null }, config),
    { log: () => {}, ...(opts.historyIntervalMs !== undefined ? { intervalMs: opts.historyIntervalMs } : {}) },
  );
  if (opts.historyIntervalMs !== undefined) history.start();
  cleanup.add(() => history.stop());
  const snapshots = new SnapshotStore('host1', config.storageGroups, db, daemonSnapshotPorts({ driver: () => driver, runner: () => runner, log: () => {} }));
  const api: ApiContext = {
    host: 'host1',
    startedAt: new Date().toISOString(),
    incarnation,
    pairing: () => ({ state: driver ? 'paired' : 'pairing', lastError: null }),
    driver: () => driver,
    running: () => runner?.running() ?? [],
    lastExit: (vm) => runner?.lastExit(vm) ?? null,
    changeMedium: async (vm, image) => runner?.changeMedium(vm, image) ?? 'not-here',
    alink: () => null,
    health: () => null,
    networks: () => networks.list(),
    sensors: () => readSensors(opts.sysfsRoot),
    peer: () => peerReports.ask(),
    storageGroups: config.storageGroups,
    vcds,
    snapshots,
    pairCaPem: async () => readFile(pairCa.cert, 'utf8'),
    recentLog: (o) => db.recentLog(o),
    logAfter: (afterId, limit) => db.logAfter(afterId, limit),
    onLogged: (listener) => {
      logListeners.add(listener);
      return () => logListeners.delete(listener);
    },
    notifyPending: () => notifications.pending(),
    preferences: { live, clock: () => hostClock.read() },
    history,
    consoleLogFile: (vm) => vmSerialLog(config.dataDir, vm),
    daemonLog: () => daemonLog.text(),
  };
  const clock = {
    now: Date.now(),
    advance(ms: number) {
      this.now += ms;
    },
  };
  const now = (): number => clock.now;
  const users = UserStore.open(path.join(dir, 'state', 'users.db'), { now, ...(opts.idleMs ? { idleMs: opts.idleMs } : {}), ...(opts.maxMs ? { maxMs: opts.maxMs } : {}) });
  cleanup.add(() => users.close());
  const audit = AuditLog.open(path.join(dir, 'state', 'audit.db'), 'host1', (o) => db.recentLog(o));
  cleanup.add(() => audit.close());
  const tls = await loadManagementTls({ dataDir: dir, host: 'host1', address: '127.0.0.1', certFile: null, keyFile: null });
  const server = await ManagementServer.start({
    address: '127.0.0.1',
    port: 0,
    tls,
    api,
    users,
    audit,
    sessionMaxMs: opts.maxMs ?? 12 * 3600_000,
    now,
    ...(opts.limiter ? { limiter: opts.limiter } : {}),
    ...(opts.metricsToken ? { metricsToken: opts.metricsToken } : {}),
    ...(opts.streamLimits ? { streamLimits: opts.streamLimits } : {}),
    log: () => {},
  });
  cleanup.add(() => server.close());
  const port = server.port();
  const agent = new https.Agent({ ca: tls.cert, keepAlive: true, maxSockets: 8 });
  cleanup.add(() => agent.destroy());

  const request: Harness['request'] = (method, p, o = {}) =>
    new Promise<Answer>((resolve, reject) => {
      const payload = o.raw !== undefined ? o.raw : o.body !== undefined ? JSON.stringify(o.body) : undefined;
      const headers: Record<string, string | number> = { ...(o.headers ?? {}) };
      if (payload !== undefined) {
        headers['content-type'] ??= 'application/json';
        headers['content-length'] = Buffer.byteLength(payload);
      }
      if (o.token !== undefined) headers['authorization'] = `Bearer ${o.token}`;
      let settled = false;
      const settle = (f: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
      };
      const req = https.request({ host: '127.0.0.1', port, method, path: p, agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => settle(() => reject(e)));
        res.on('close', () => settle(() => reject(new Error(`ECONNRESET: the answer to ${method} ${p} was cut off`))));
        res.on('end', () => {
          const bytes = Buffer.concat(chunks);
          const text = bytes.toString('utf8');
          let body: unknown = null;
          try {
            body = text === '' ? null : JSON.parse(text);
          } catch {
            body = undefined;
          }
          settle(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, bytes }));
        });
      });
      // A CONNECT's answer comes as its own event, with the socket.
      req.on('connect', (res, socket) => {
        socket.destroy();
        settle(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: null, text: '', bytes: Buffer.alloc(0) }));
      });
      // A hard limit, not only on silence: a test must fail, never hang.
      const timer = setTimeout(() => {
        settle(() => reject(new Error(`no answer to ${method} ${p} within 20 s`)));
        req.destroy();
      }, 20_000);
      req.on('error', (e) => settle(() => reject(e)));
      req.end(payload);
    });

  const login = async (name: string, password: string): Promise<string> => {
    const r = await request('POST', '/api/v1/session', { body: { name, password } });
    if (r.status !== 201) throw new Error(`login of ${name} answered ${r.status} ${r.text}`);
    return r.body.token as string;
  };

  return { dir, config, configFile, live, db, api, networks, driver, users, audit, notifier, notifications, notifyLog, server, port, ca: tls.cert, clock, request, login, logged: () => logListeners.forEach((l) => l()), history, daemonLog };
}
