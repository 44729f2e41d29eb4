/**
 * `lockstepd`: the Availability Services of one host. Start-up, in order:
 *   1. the state database (its boot counter gives this run's incarnation) and the QEMU leftovers reaped;
 *   2. the local API (it answers from the first moment: "pairing" until the pair exists), and the management
 *      API when configured (src/api/: HTTPS, users, audit);
 *   3. pairing with the peer over the first A-Link, once in the pair's life (src/pairing/);
 *   4. the A-Link, the health monitor and the decision core's driver, wired together.
 * After that every decision is the core's (src/core/); this file only connects the parts.
 */
import { describePriority, raiseServicePriority } from '../platform/priority.js';
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { sleep } from '../util/proc.js';
import { ExecThread } from '../util/exec-thread.js';
import { DEFAULT_TIMING, type CoreConfig, type QuorumReply } from '../core/types.js';
import { Alink } from '../alink/alink.js';
import { PeerReports } from './peer-report.js';
import { loadAlinkTls, prepareAlinkTls } from '../alink/tls.js';
import { ReplicationDialer } from '../storage/replication-stream.js';
import { askQuorum, probeQuorum, type QuorumEndpoint } from '../quorum/client.js';
import { pairWithPeer, type PairFiles } from '../pairing/pairing.js';
import { HealthMonitor } from '../health/monitor.js';
import type { DaemonConfig } from './config.js';
import { ConfigFile } from './config-file.js';
import { LivePreferences } from './live-preferences.js';
import { StateDb } from './state-db.js';
import { VmRunner, vmSerialLog } from './vm-runner.js';
import { CopyServer } from './copy-server.js';
import { FtRoomWatch } from './ft-room.js';
import { parseVmHardware } from './vm-definition.js';
import { Watchdog } from './watchdog.js';
import { CoreDriver } from './core-driver.js';
import { startApiServer, type ApiContext, type LocalAccounts } from './api.js';
import { VcdStore } from '../storage/vcd-store.js';
import { SnapshotStore, daemonSnapshotPorts } from './snapshots.js';
import { openAccounts, startManagementApi, type Accounts, type RunningManagementApi } from '../api/management-api.js';
import { Notifications } from '../notify/notifications.js';
import { HostNetworks } from './networks.js';
import { readSensors } from '../health/sensors.js';
import { HostClockReader } from './host-clock.js';
import { HistorySampler } from '../history/sampler.js';
import { historySources } from './history-sources.js';
import { LogTail } from './log-tail.js';

/** The daemon's recent log lines kept for the support bundle (a day or more of a quiet pair). */
const DAEMON_LOG_TAIL_BYTES = 2 * 1024 * 1024;

/** A failed pairing attempt (peer not up yet, wrong secret) is retried this often; each failure is logged. */
const PAIRING_RETRY_MS = 2000;
const PAIRING_ATTEMPT_MS = 30_000;
/** A quorum exchange (connect, TLS, question, answer) must finish well within the lease it asks for. */
const QUORUM_EXCHANGE_MAX_MS = 1000;
const QMP_HEALTH_TIMEOUT_MS = 2000;
/** Time an A-Link path gets after start to connect before the health monitor counts it as failed. */
const ALINK_CONNECT_GRACE_MS = 5000;

export async function main(argv: string[]): Promise<number> {
  let configFile: string;
  try {
    const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true });
    if (!values.config) throw new Error('--config FILE is required');
    configFile = values.config;
  } catch (e) {
    console.error(`lockstepd: ${describeError(e)}\nusage: lockstepd --config FILE`);
    return 2;
  }
  try {
    const { config, file } = await ConfigFile.load(configFile);
    return await runDaemon(config, file);
  } catch (e) {
    console.error(`lockstepd: ${isLockstepError(e) ? `${e.code}: ` : ''}${describeError(e)}`);
    return 1;
  }
}

async function runDaemon(config: DaemonConfig, configFile: ConfigFile): Promise<number> {
  const recentLog = new LogTail(DAEMON_LOG_TAIL_BYTES);
  const log = (line: string): void => {
    const stamped = `${new Date().toISOString()} ${config.host} ${line}`;
    recentLog.add(stamped);
    console.log(stamped);
  };
  // First: the threads started from here on (libuv's, the workers) inherit the daemon's priority.
  const priority = raiseServicePriority();
  await mkdir(path.dirname(config.apiSocket), { recursive: true });
  const db = StateDb.open(path.join(config.dataDir, 'state', 'lockstepd.db'));
  const incarnation = db.nextIncarnation();
  log(`lockstepd starting (pid ${process.pid}, incarnation ${incarnation}, data ${config.dataDir})`);
  log(describePriority(priority));
  // Notifications follow the event log (src/notify/); started now so that deliveries left pending by the
  // previous run go out even before pairing. An outbox that cannot be opened costs the notifications only.
  const notifications = new Notifications({ pair: config.pair.id, host: config.host, outboxFile: path.join(config.dataDir, 'state', 'notify.db'), source: db, log }, config.notifications);
  // Programs lockstepd runs while serving (the health checks' `ip`, the networks' `ip` — which interface
  // holds each A-Link address —, the clock's adjtimex) run here, off the main thread (why: src/util/exec-thread.ts).
  const healthExec = new ExecThread();

  let driver: CoreDriver | null = null;
  let alink: Alink | null = null;
  let health: HealthMonitor | null = null;
  const pairing = { state: 'pairing' as 'pairing' | 'paired', lastError: null as string | null };
  const pkiDir = path.join(config.dataDir, 'pki');
  let pki: PairFiles | null = null;

  const watchdog = new Watchdog((pids) => log(`WATCHDOG fired: authority ran out; killed QEMU pids ${pids.join(', ')}`));
  // The replication streams need the pair's certificates: made after pairing, reached through these.
  let dialer: ReplicationDialer | null = null;
  let checkpointDialer: ReplicationDialer | null = null;
  let copies: CopyServer | null = null;
  // This host's virtual CDs: the API's uploads, and the images a starting VM's CD drive takes.
  const vcds = new VcdStore(config.host, config.storageGroups);
  const runner = new VmRunner(config, {
    report: (vm, event) => driver?.submit({ type: 'vm-event', vm, event }),
    reportStorage: (vm, event) => driver?.submit({ type: 'storage', vm, event }),
    onPidsChanged: (pids) => watchdog.setPids(pids),
    copyReleased: (vm) => copies?.released(vm) ?? Promise.resolve(),
    dialer: () => dialer,
    checkpointDialer: () => checkpointDialer,
    takeResumePoint: (vm) => copies?.takeResumePoint(vm) ?? null,
    ftAllowed: (vm) => driver?.runsAsFt(vm) ?? false,
    migrationTls: () => (pki ? { files: pki, credsDir: path.join(config.dataDir, 'run', 'migration-tls'), peer: config.pair.peer } : null),
    adoptExport: (vm, socketPath) => copies?.adopt(vm, socketPath),
    disownExport: (vm) => copies?.disown(vm),
    findVcd: (name) => vcds.find(name),
    log,
  });
  await runner.reapLeftovers();
  // This host's snapshots and imported images: what a crash cut off is failed and swept before any is taken.
  const snapshots = new SnapshotStore(config.host, config.storageGroups, db, daemonSnapshotPorts({ driver: () => driver, runner: () => runner, log }));
  try {
    for (const line of await snapshots.recover()) log(line);
  } catch (e) {
    log(`cannot sweep the snapshots' leftovers: ${describeError(e)}`);
  }
  try {
    for (const file of await vcds.sweepLeftovers()) log(`removed ${file}, an upload of a virtual CD cut off when lockstepd last stopped`);
  } catch (e) {
    // A VCD directory that cannot be read fails its uploads and listings with the reason; it need not stop the daemon.
    log(`cannot sweep the virtual CDs' leftover uploads: ${describeError(e)}`);
  }

  // This host's networks, as netlink tells them in this namespace (src/network/link-reader.ts): read on
  // request from the start, their counters sampled by the health loop once paired.
  const networks = new HostNetworks({
    host: config.host,
    config,
    alink: () => alink?.status() ?? null,
    health: () => health?.current() ?? null,
    run: (cmd, args, opts) => healthExec.run(cmd, args, opts),
  });
  // Either host answers for the pair: the peer's own networks and health components, asked over the
  // A-Link on request (src/daemon/peer-report.ts); the peer's requests answered with this host's.
  const peerReports = new PeerReports({
    self: config.host,
    peer: config.pair.peer,
    link: () => alink,
    own: async () => ({ networks: await networks.list(), health: health?.current() ?? null }),
    log,
  });
  // The resource history (src/history/): measured from the start, paired or not, every 5 s. Its reads are
  // small kernel files read off this thread, and its storage usage is time-bounded, so the A-Link's
  // heartbeats on this thread do not wait for it.
  const history = new HistorySampler(
    historySources({ host: config.host, storageGroups: config.storageGroups, driver: () => driver, running: () => runner.running(), health: () => health?.current() ?? null }, config),
    { log },
  );

  // Whoever follows the event log live (the management API's event stream) is told of each append.
  const logListeners = new Set<() => void>();
  const clock = new HostClockReader((cmd, args, opts) => healthExec.run(cmd, args, opts));
  const apiContext: ApiContext = {
    host: config.host,
    startedAt: new Date().toISOString(),
    incarnation,
    pairing: () => ({ ...pairing }),
    driver: () => driver,
    running: () => runner.running(),
    lastExit: (vm) => runner.lastExit(vm),
    changeMedium: (vm, image) => runner.changeMedium(vm, image),
    alink: () => alink?.status() ?? null,
    health: () => health?.current() ?? null,
    networks: () => networks.list(),
    sensors: () => readSensors(),
    peer: () => peerReports.ask(),
    storageGroups: config.storageGroups,
    vcds,
    snapshots,
    pairCaPem: async () => (pki ? readFile(pki.ca, 'utf8') : null),
    recentLog: (opts) => db.recentLog(opts),
    logAfter: (afterId, limit) => db.logAfter(afterId, limit),
    onLogged: (listener) => {
      logListeners.add(listener);
      return () => logListeners.delete(listener);
    },
    notifyPending: () => notifications.pending(),
    // What may change while lockstepd runs: written to its config file, then given to who holds it.
    preferences: {
      live: new LivePreferences({ config, file: configFile, notifications, setResyncRate: (rate) => runner.setResyncRate(rate), log }),
      clock: () => clock.read(),
    },
    history,
    consoleLogFile: (vm) => vmSerialLog(config.dataDir, vm),
    daemonLog: () => recentLog.text(),
  };
  // The host's users and audit log, served by the local socket to root and by the management API to users.
  // Accounts that cannot be opened cost user management, auditing and the management API, never the
  // Availability Services.
  let accounts: Accounts | null = null;
  let localAccounts: LocalAccounts;
  try {
    accounts = openAccounts(config, apiContext);
    localAccounts = accounts;
  } catch (e) {
    localAccounts = { error: isLockstepError(e) ? e : new LockstepError('USERS_DB', describeError(e), {}, { cause: e }) };
    log(`accounts not available (no user management, changes not audited): ${localAccounts.error.code}: ${describeError(e)}`);
  }
  const server = await startApiServer(config.apiSocket, apiContext, localAccounts, log);
  log(`API listening on ${config.apiSocket}`);
  history.start();
  // The management API serves the same resources over HTTPS to users (src/api/); one that cannot start costs
  // the remote access only, never the Availability Services.
  let management: RunningManagementApi | null = null;
  if (config.managementApi && accounts === null) log('management API not started: it needs the accounts');
  else if (config.managementApi && accounts !== null) {
    try {
      management = await startManagementApi({ host: config.host, dataDir: config.dataDir, managementApi: config.managementApi }, apiContext, accounts, log);
      log(`management API listening on https://${config.managementApi.address}:${management.port}/api/v1${management.selfSigned ? ' (self-signed certificate)' : ''}`);
    } catch (e) {
      log(`management API not started: ${isLockstepError(e) ? `${e.code}: ` : ''}${describeError(e)}`);
    }
  }

  let stopping: Promise<void> | null = null;
  const shutdown = (why: string): Promise<void> => {
    stopping ??= (async () => {
      log(`${why}: stopping`);
      driver?.stop();
      peerReports.close();
      await history.stop();
      await health?.stop();
      await healthExec.close();
      await runner.shutdown();
      await dialer?.close();
      await checkpointDialer?.close();
      await copies?.close();
      alink?.close();
      await watchdog.close();
      await notifications.stop();
      await management?.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      accounts?.close();
      db.close();
    })();
    return stopping;
  };
  const finished = new Promise<number>((resolve) => {
    process.once('SIGTERM', () => void shutdown('SIGTERM').then(() => resolve(0)));
    process.once('SIGINT', () => void shutdown('SIGINT').then(() => resolve(0)));
  });

  pki = await pairUntilDone(config, pkiDir, pairing, log, () => stopping !== null);
  if (pki === null) return finished;
  pairing.state = 'paired';
  pairing.lastError = null;

  const tlsMaterial = await loadAlinkTls(pki);
  alink = new Alink({
    self: config.host,
    peer: config.pair.peer,
    paths: config.alink.map((p) => ({ name: p.name, local: p.local, peer: p.peer, port: p.port })),
    tls: tlsMaterial,
    log: { info: (m) => log(`A-Link: ${m}`), warn: (m) => log(`A-Link: ${m}`) },
  });
  // HA's data path over the A-Link addresses, authenticated like the A-Link (docs/ha.md).
  const tlsContext = prepareAlinkTls(tlsMaterial, config.host);
  const streamLog = { info: (m: string) => log(`replication: ${m}`), warn: (m: string) => log(`replication: ${m}`) };
  dialer = new ReplicationDialer({
    self: config.host,
    peer: config.pair.peer,
    tls: tlsContext,
    paths: config.alink.map((p) => ({ name: p.name, address: p.peer, port: config.dataPorts.replication, local: p.local })),
    socketDir: path.join(config.dataDir, 'run', 'streams'),
    log: streamLog,
  });
  dialer.on('broken', (volume, stream, reason) => runner.streamBroken(volume, stream, reason));
  dialer.on('connected', (volume, stream, via) => log(`replication stream ${stream} of volume ${volume} connected over ${via}`));
  // FT's checkpoint streams, the same transport on their own port. A broken one is cut at once (unlike a
  // mirror's, nothing waits on it): the FT run sees its stream end and holds the guest's output.
  checkpointDialer = new ReplicationDialer({
    self: config.host,
    peer: config.pair.peer,
    tls: tlsContext,
    paths: config.alink.map((p) => ({ name: p.name, address: p.peer, port: config.dataPorts.checkpoint, local: p.local })),
    socketDir: path.join(config.dataDir, 'run', 'ft-streams'),
    log: { info: (m: string) => log(`FT checkpoints: ${m}`), warn: (m: string) => log(`FT checkpoints: ${m}`) },
  });
  const liveCheckpointDialer = checkpointDialer;
  liveCheckpointDialer.on('broken', (vm, stream, reason) => {
    log(`FT checkpoint stream ${stream} of VM ${vm} broken: ${reason}`);
    liveCheckpointDialer.cut(vm);
  });
  const copyServer = new CopyServer(config, tlsContext, (vm, event) => driver?.submit({ type: 'storage', vm, event }), log);
  copies = copyServer;
  await copyServer.start();
  const coreConfig = coreConfigOf(config);
  const quorumEndpoint = (id: string): QuorumEndpoint => {
    const q = config.quorum.find((s) => s.id === id);
    if (!q) throw new Error(`the core asked for quorum server ${id}, which is not configured`);
    const timeoutMs = Math.min(QUORUM_EXCHANGE_MAX_MS, coreConfig.quorumLeaseMs / 3);
    return { address: q.address, port: q.port, ca: q.ca, cert: pki!.cert, key: pki!.key, timeoutMs };
  };
  const liveAlink = alink;
  driver = new CoreDriver(coreConfig, incarnation, db, runner, watchdog, {
    sendPeer: (msg) => void liveAlink.send(msg),
    serveCopy: (vm, hardware, ft) => copyServer.serve(vm, hardware, ft),
    unserveCopy: (vm, reason, takeover) => void copyServer.unserve(vm, reason, takeover),
    copyProtection: (vm, hardware, ft) => copyServer.reconcile(vm, hardware, ft),
    askQuorum: (id, knownEpoch): Promise<QuorumReply> => askQuorum({ ...quorumEndpoint(id), pair: config.pair.id, host: config.host, knownEpoch }),
    probeQuorum: (id) => probeQuorum(quorumEndpoint(id)),
    restartServices: (reason) => void restartSelf(reason, shutdown, log),
    alertsLogged: () => notifications.nudge(),
    logged: () => {
      for (const listener of logListeners) listener();
    },
  }, log);
  const liveDriver = driver;
  alink.on('message', (msg) => liveDriver.submit({ type: 'peer-message', msg }));
  alink.on('rtt', (rttMs) => liveDriver.submit({ type: 'alink-rtt', rttMs }));
  alink.on('daemon-message', (msg) => peerReports.handle(msg));
  alink.on('daemon-invalid', (kind, id, reason) => peerReports.invalid(kind, id, reason));
  alink.on('path-up', (name) => log(`A-Link path ${name} up`));
  alink.on('path-down', (name, reason) => log(`A-Link path ${name} down: ${reason}`));

  health = new HealthMonitor({
    intervalMs: config.timing.healthIntervalMs,
    dataDir: config.dataDir,
    interfaces: { mgmt: config.mgmtInterface, business: config.businessInterface },
    run: (cmd, args, opts) => healthExec.run(cmd, args, opts),
    // A path that has not come up yet since start is not a fault until it had time to connect: otherwise
    // every boot would begin with a component failure (and the core's reboot attempt for it).
    alinkPaths: () => Object.fromEntries(liveAlink.status().map((p) => [p.name, p.up || (p.changedAt === null && Date.now() - alinkStartedAt < ALINK_CONNECT_GRACE_MS)])),
    qemu: () => runner.qmpResponsive(QMP_HEALTH_TIMEOUT_MS),
    injectFile: path.join(config.dataDir, 'health-inject.json'),
    log,
  });
  health.on('snapshot', (snapshot) => liveDriver.submit({ type: 'health', wallMs: Date.now(), health: snapshot }));
  health.on('round', () => void networks.sample());
  const ftRoom = new FtRoomWatch({
    memoryDir: config.ft.memoryDir,
    backed: () => liveDriver.ftVmsBacked().flatMap(({ vm, hardware }) => {
      try {
        return [{ vm, ramBytes: parseVmHardware(hardware).memoryMiB * 1024 * 1024, served: copyServer.servesFtRun(vm) }];
      } catch {
        return []; // hardware this host cannot read: its copy is refused when served, with the reason
      }
    }),
    report: (short) => liveDriver.submit({ type: 'ft-room', short }),
    log,
  });
  health.on('round', () => void ftRoom.check());

  const alinkStartedAt = Date.now();
  alink.start();
  health.start();
  driver.start();
  log(`paired with ${config.pair.peer} (pair ${config.pair.id}); Availability Services running`);
  return finished;
}

/** Pairs with the peer (once in the pair's life: the files then exist), retrying until it works or we stop. */
async function pairUntilDone(
  config: DaemonConfig,
  pkiDir: string,
  status: { lastError: string | null },
  log: (line: string) => void,
  stopped: () => boolean,
): Promise<PairFiles | null> {
  const first = config.alink[0]!;
  while (!stopped()) {
    try {
      return await pairWithPeer({
        self: config.host,
        peer: config.pair.peer,
        pairId: config.pair.id,
        secret: config.pair.secret,
        pkiDir,
        privateNet: { local: first.local, broadcast: first.broadcast },
        discoveryPort: config.pairingPorts.discovery,
        pairingPort: config.pairingPorts.exchange,
        timeoutMs: PAIRING_ATTEMPT_MS,
        log: (line: string) => log(`pairing: ${line}`),
      });
    } catch (e) {
      status.lastError = describeError(e);
      log(`pairing with ${config.pair.peer} failed: ${status.lastError}; retrying`);
      await sleep(PAIRING_RETRY_MS);
    }
  }
  return null;
}

export function coreConfigOf(config: DaemonConfig): CoreConfig {
  const { healthIntervalMs: _notTheCores, ...timing } = config.timing;
  return {
    ...DEFAULT_TIMING,
    ...timing,
    rttLimitMs: config.rttLimitMs,
    self: config.host,
    peer: config.pair.peer,
    quorumServers: config.quorum.map((q) => q.id),
    tiebreakWinner: config.pair.tiebreakWinner,
  };
}

/**
 * The seed's reboot attempt after a backup fault: stop everything this daemon runs, then start a fresh
 * daemon with the same arguments in its place (same namespace, same log). The core decides how often, by
 * the fault history it keeps across restarts (MTBF).
 */
async function restartSelf(reason: string, shutdown: (why: string) => Promise<void>, log: (line: string) => void): Promise<void> {
  await shutdown(`restarting services (${reason})`);
  const child = spawn(process.execPath, process.argv.slice(1), { detached: true, stdio: 'inherit' });
  child.unref();
  log(`restarted as pid ${child.pid}`);
  process.exit(0);
}
