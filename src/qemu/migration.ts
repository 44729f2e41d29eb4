/**
 * Live migration of a running VM from one QEMU to another, both driven over their `QmpClient`: QEMU's own
 * pre-copy migration over TCP (the A-Link), optionally inside QEMU's own TLS with the pair's certificates.
 *
 * Destination: a QEMU started with `incoming: true` (`-incoming defer`); `listenForMigration` sets it up and
 * opens the socket; `waitForIncomingMigration` follows the stream until the VM runs there, or it failed.
 * Source: `migrate` sets capabilities and parameters, starts the migration, reports progress and resolves
 * with QEMU's own figures; `cancelMigration` stops one under way.
 *
 * What QEMU 7.2 does that shapes this (measured on this kind of machine):
 * - Without the `return-path` capability the source declares a migration `completed` once it has sent the
 *   last byte, even when the destination then fails to load the device state and exits: the guest would run
 *   nowhere. With it (set on both sides) the source waits for the destination's verdict, and a refused
 *   stream fails the migration and resumes the source.
 * - After a failure or a cancel the source resumes the guest by itself, but `query-migrate` can say `failed`
 *   before the vCPUs run again: `migrate` waits (bounded) until the source runs as it did before.
 * - A destination whose stream breaks exits (7.2 has no `exit-on-error`): its QMP closing is how
 *   `waitForIncomingMigration` learns of it. A connection the destination refuses in the TLS handshake
 *   (another pair's certificate, a CN that is not the expected peer's, no TLS) leaves it listening, so the
 *   right source can still come; a source that refuses the destination after the handshake (the hostname)
 *   breaks the stream, and the destination exits.
 * - When the destination refuses the source's certificate, the source only hears "Cannot write to TLS
 *   channel: Input/output error" (or a reset, without TLS); the reason is on the destination's stderr.
 * - `query-migrate` on a destination that only listens has no `status`; its `socket-address` ports are
 *   strings.
 * - The source reports `completed` a moment before it has computed the final figures (fixed upstream in
 *   2024): a `query-migrate` right after the event can read total-time and downtime 0. We ask again.
 * - QEMU switches over as soon as what remains fits in `downtime-limit` at the bandwidth it measured, so on
 *   a fast link the downtime is close to the limit even for an idle guest: the limit is a target, not a cap.
 */
import { mkdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import type { IssuedFiles } from '../pki/pki.js';
import { NAME_RE } from '../protocol/peer.js';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import type { QmpClient } from './qmp.js';

/** Every `status` QEMU 7.2's `query-migrate` and MIGRATION event can report. */
const MIGRATION_STATUSES = [
  'none',
  'setup',
  'cancelling',
  'cancelled',
  'active',
  'postcopy-active',
  'postcopy-paused',
  'postcopy-recover',
  'completed',
  'failed',
  'colo',
  'pre-switchover',
  'device',
  'wait-unplug',
] as const;
export type MigrationStatus = (typeof MIGRATION_STATUSES)[number];

/** Mutual TLS with QEMU's `tls-creds-x509`, from the pair's certificates (`src/pki/`, `src/pairing/`). */
export interface MigrationTls {
  /** This host's certificate (CN = its host id, serverAuth + clientAuth), its key, and the pair CA. */
  files: IssuedFiles;
  /**
   * QEMU reads x509 credentials only from fixed names in one directory: this directory gets links to
   * `files` under those names (made if missing; only those names are touched).
   */
  credsDir: string;
  /** The peer's host id: the CN its certificate must carry (the destination's, on the source; the source's,
   * on the destination). */
  peer: string;
}

export interface ListenOptions {
  /** `tcp:ADDR:PORT` to listen on (the A-Link address); port 0 lets the kernel choose. */
  uri: string;
  tls?: MigrationTls;
  /** The source's `multifdChannels`: both sides must agree. Default: one stream. */
  multifdChannels?: number;
}

export interface Listening {
  /** The address QEMU listens on, with the port the kernel chose when 0 was asked for. */
  uri: string;
}

export interface MigrateOptions {
  /** `tcp:ADDR:PORT` of the destination's `listenForMigration`. */
  uri: string;
  /** Default: no cap. QEMU 7.2's own default, 128 MiB/s, made a 1 GiB guest take 9.8 s instead of 2.8 s (lab-facts.md). */
  maxBandwidthBytesPerS?: number;
  /** The pause QEMU aims for at switch-over; it switches over once the rest fits in it (a target, not a cap). */
  downtimeLimitMs: number;
  /** Throttle the vCPUs of a guest that dirties RAM faster than the link drains it, so the migration ends. */
  autoConverge: boolean;
  /**
   * Called once the guest is paused for the switch-over and before its devices are sent (QEMU's
   * `pause-before-switchover`); the migration continues when it resolves. Its time counts as downtime. If it
   * throws, the migration is cancelled and the source runs on.
   */
  pauseBeforeSwitchover?: () => Promise<void> | void;
  /** Called at each poll while the migration runs. */
  onProgress?: (progress: MigrationProgress) => void;
  tls?: MigrationTls;
  /** Cancel and fail if not completed by then (a guest that never converges). Default: no bound. */
  timeoutMs?: number;
  /** How often `query-migrate` is asked; MIGRATION events wake the loop between polls. Default 500 ms. */
  progressIntervalMs?: number;
  /**
   * RAM pages over this many extra connections (QEMU's `multifd`), each with its own sender thread and, under
   * TLS, its own session; the destination must be listening with the same number. Default: one stream.
   */
  multifdChannels?: number;
}

export interface MigrationProgress {
  status: MigrationStatus;
  /** QEMU's `total-time` so far. */
  elapsedMs: number | null;
  transferredBytes: number | null;
  remainingBytes: number | null;
  totalBytes: number | null;
  /** Pages the guest dirtied per second in the last pass, times the page size. */
  dirtyBytesPerS: number | null;
  /** QEMU's own throughput figure, in megabits per second. */
  mbps: number | null;
  /** What QEMU expects the switch-over pause to be at the current rate. */
  expectedDowntimeMs: number | null;
  /** Dirty-bitmap syncs so far: 1 during the first pass over RAM. */
  passes: number | null;
  /** With auto-converge: how much QEMU throttles the vCPUs now. */
  cpuThrottlePercent: number | null;
}

/** QEMU's own figures for a completed migration. */
export interface MigrationResult {
  /** `total-time`: from `migrate` to completion. */
  totalMs: number;
  /** `downtime`: how long the guest was paused at switch-over (a pre-switchover hook included). */
  downtimeMs: number;
  /** `ram.transferred`: every RAM byte sent, pages the guest dirtied again sent again. */
  transferredBytes: number;
  /** `setup-time`: before the first byte of RAM. */
  setupMs: number;
}

export interface IncomingResult {
  /** The destination's run state: `running`, or `paused` when it was started with `-S` or the source was
   * paused. */
  runState: string;
  running: boolean;
}

/** `query-migrate`, parsed. Numbers are null where QEMU left them out (they depend on the status). */
export interface MigrationInfo {
  /** `none` when QEMU reports no status (a destination that only listens). */
  status: MigrationStatus;
  totalMs: number | null;
  setupMs: number | null;
  downtimeMs: number | null;
  expectedDowntimeMs: number | null;
  cpuThrottlePercent: number | null;
  ram: MigrationRam | null;
  errorDesc: string | null;
  /** Where a destination listens (`socket-address`). */
  listening: { host: string; port: number }[];
}

export interface MigrationRam {
  transferred: number;
  remaining: number | null;
  total: number | null;
  dirtyPagesRate: number | null;
  pageSize: number | null;
  mbps: number | null;
  dirtySyncCount: number | null;
}

/** The largest `max-bandwidth` a JSON number carries exactly: no cap in practice (QEMU 7.2 allows up to SIZE_MAX). */
const UNLIMITED_BANDWIDTH = Number.MAX_SAFE_INTEGER;
/** QEMU 7.2's MAX_MIGRATE_DOWNTIME. */
const DOWNTIME_LIMIT_MAX_MS = 2_000_000;
const PROGRESS_INTERVAL_MS = 500;
/** After a failure: how long the source gets to resume its vCPUs. */
const RESUME_WAIT_MS = 10_000;
/** After `migrate_cancel`: how long QEMU gets to wind the migration down. */
const CANCEL_WAIT_MS = 30_000;
const RESUME_POLL_MS = 20;
/** After `completed`: how long QEMU gets to compute the final figures. */
const FIGURES_WAIT_MS = 2_000;
const TLS_CREDS_ID = 'lockstep-migration-tls';
const TLS_AUTHZ_ID = 'lockstep-migration-authz';
const TERMINAL: ReadonlySet<MigrationStatus> = new Set(['completed', 'failed', 'cancelled']);
const URI_RE = /^tcp:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/* ------------------------------------------------------------------ destination */

/**
 * Prepares a destination QEMU (started with `-incoming defer`) and has it listen on `uri`. Resolves once
 * QEMU listens, with the address it listens on. Throws `INVALID_ARGUMENT`, `QMP_ERROR` (e.g. the port is
 * taken, QEMU was not started with `-incoming`, the TLS files do not fit together), `QMP_PROTOCOL`.
 */
export async function listenForMigration(qmp: QmpClient, opts: ListenOptions): Promise<Listening> {
  checkedUri(opts.uri, { allowPortZero: true });
  if (opts.tls) checkPeer(opts.tls.peer);
  const multifd = multifdOf(opts.multifdChannels);
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'events', state: true },
      { capability: 'return-path', state: true },
      multifd.capability,
    ],
  });
  await replaceTlsObjects(qmp, opts.tls, 'server');
  await qmp.execute('migrate-set-parameters', {
    'tls-creds': opts.tls ? TLS_CREDS_ID : '',
    // QEMU compares it with the distinguished name of the client's certificate: exactly the peer's CN.
    'tls-authz': opts.tls ? TLS_AUTHZ_ID : '',
    ...multifd.parameters,
  });
  await qmp.execute('migrate-incoming', { uri: opts.uri });
  const info = parseMigrationInfo(await qmp.execute('query-migrate'));
  const at = info.listening[0];
  if (at === undefined) throw malformed('query-migrate', 'a destination that listens reported no socket-address');
  return { uri: `tcp:${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}` };
}

/**
 * Follows an incoming migration until the VM has landed here: resolves with the destination's run state.
 * Rejects with `MIGRATION_FAILED` when the stream failed or was cancelled (the destination QEMU exits then,
 * so it may be discarded), or when it has not completed within `timeoutMs` (a source that vanished leaves a
 * destination waiting on a silent socket).
 */
export async function waitForIncomingMigration(qmp: QmpClient, opts: { timeoutMs: number }): Promise<IncomingResult> {
  const deadline = Date.now() + opts.timeoutMs;
  const waker = new MigrationWaker(qmp);
  try {
    for (;;) {
      let info: MigrationInfo;
      try {
        info = parseMigrationInfo(await qmp.execute('query-migrate'));
      } catch (e) {
        if (!isLockstepError(e, 'QMP_DISCONNECTED')) throw e;
        throw new LockstepError('MIGRATION_FAILED', `the destination QEMU went away during the incoming migration (its stderr says why): ${e.message}`, {
          side: 'destination',
          status: 'failed',
        }, { cause: e });
      }
      if (info.status === 'completed') {
        const state = parseStatus(await qmp.execute('query-status'));
        return { runState: state.status, running: state.running };
      }
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new LockstepError('MIGRATION_FAILED', `the incoming migration ${info.status}${info.errorDesc ? `: ${info.errorDesc}` : ''}`, {
          side: 'destination',
          status: info.status,
          desc: info.errorDesc,
        });
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new LockstepError('MIGRATION_FAILED', `the incoming migration did not complete within ${opts.timeoutMs} ms (status ${info.status})`, {
          side: 'destination',
          status: info.status,
          timeoutMs: opts.timeoutMs,
        });
      }
      await waker.sleep(Math.min(left, PROGRESS_INTERVAL_MS));
    }
  } finally {
    waker.dispose();
  }
}

/** QEMU 7.2's `multifd-channels` range. */
const MULTIFD_CHANNELS_MAX = 255;

/** The capability and parameters for `channels` multifd connections, or for none (one stream). */
function multifdOf(channels: number | undefined): { capability: { capability: 'multifd'; state: boolean }; parameters: Record<string, number> } {
  if (channels === undefined) return { capability: { capability: 'multifd', state: false }, parameters: {} };
  checkInteger(channels, 'multifdChannels', 1, MULTIFD_CHANNELS_MAX);
  return { capability: { capability: 'multifd', state: true }, parameters: { 'multifd-channels': channels } };
}

/* ------------------------------------------------------------------ source */

/**
 * Migrates the VM behind `qmp` to the destination listening at `opts.uri` and resolves with QEMU's figures
 * once it has completed (the source is then `postmigrate`: stop it). Rejects with `MIGRATION_FAILED`
 * (QEMU's `error-desc` in the message and `fields.desc`) when the migration failed, was cancelled, timed out
 * or the pre-switchover hook threw; by then a source that was running runs again (`fields.sourceRunning`
 * says whether it did). QEMU refusing a setup command is `QMP_ERROR`; the source QEMU going away,
 * `QMP_DISCONNECTED`.
 */
export async function migrate(qmp: QmpClient, opts: MigrateOptions): Promise<MigrationResult> {
  checkedUri(opts.uri, { allowPortZero: false });
  checkInteger(opts.downtimeLimitMs, 'downtimeLimitMs', 1, DOWNTIME_LIMIT_MAX_MS);
  const bandwidth = opts.maxBandwidthBytesPerS ?? UNLIMITED_BANDWIDTH;
  checkInteger(bandwidth, 'maxBandwidthBytesPerS', 1, UNLIMITED_BANDWIDTH);
  if (opts.timeoutMs !== undefined) checkInteger(opts.timeoutMs, 'timeoutMs', 1, Number.MAX_SAFE_INTEGER);
  if (opts.tls) checkPeer(opts.tls.peer);
  const multifd = multifdOf(opts.multifdChannels);

  const wasRunning = parseStatus(await qmp.execute('query-status')).running;
  // Every capability and parameter is set each time, so nothing lingers from an earlier migration.
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'events', state: true },
      // Completion only once the destination has loaded the stream (see the top of this file).
      { capability: 'return-path', state: true },
      { capability: 'auto-converge', state: opts.autoConverge },
      { capability: 'pause-before-switchover', state: opts.pauseBeforeSwitchover !== undefined },
      multifd.capability,
    ],
  });
  await replaceTlsObjects(qmp, opts.tls, 'client');
  await qmp.execute('migrate-set-parameters', {
    'max-bandwidth': bandwidth,
    'downtime-limit': opts.downtimeLimitMs,
    'tls-creds': opts.tls ? TLS_CREDS_ID : '',
    // Checked against the destination's certificate; with no subjectAltName GnuTLS matches the CN.
    'tls-hostname': opts.tls ? opts.tls.peer : '',
    ...multifd.parameters,
  });
  const waker = new MigrationWaker(qmp);
  try {
    await qmp.execute('migrate', { uri: opts.uri });
    return await followOutgoing(qmp, opts, wasRunning, waker);
  } finally {
    waker.dispose();
  }
}

/**
 * Cancels the migration under way (`migrate_cancel`) and resolves with how it ended: `cancelled`; or
 * `completed` or `failed` when it got there before the cancel did; `none` when no migration had started.
 * Throws `MIGRATION_FAILED` when QEMU does not wind it down in time.
 */
export async function cancelMigration(qmp: QmpClient): Promise<MigrationStatus> {
  await qmp.execute('migrate_cancel');
  const deadline = Date.now() + CANCEL_WAIT_MS;
  for (;;) {
    const { status } = parseMigrationInfo(await qmp.execute('query-migrate'));
    if (status === 'none' || TERMINAL.has(status)) return status;
    if (Date.now() > deadline) {
      throw new LockstepError('MIGRATION_FAILED', `QEMU did not end the cancelled migration within ${CANCEL_WAIT_MS} ms (status ${status})`, { status });
    }
    await sleep(RESUME_POLL_MS);
  }
}

async function followOutgoing(qmp: QmpClient, opts: MigrateOptions, wasRunning: boolean, waker: MigrationWaker): Promise<MigrationResult> {
  const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
  const intervalMs = opts.progressIntervalMs ?? PROGRESS_INTERVAL_MS;
  let continued = false;
  for (;;) {
    const info = await queryOutgoing(qmp);
    switch (info.status) {
      case 'completed':
        return completedResult(await finalFigures(qmp, info));
      case 'failed':
      case 'cancelled':
        throw await ended(qmp, opts, info, wasRunning);
      case 'pre-switchover':
        // QEMU waits here for migrate-continue, so a poll that sees it again after we continued is stale.
        if (continued) break;
        continued = true;
        try {
          await opts.pauseBeforeSwitchover?.();
        } catch (e) {
          return abort(qmp, opts, wasRunning, `the pre-switchover hook failed: ${describeError(e)}`, e);
        }
        await qmp.execute('migrate-continue', { state: 'pre-switchover' });
        continue;
      default:
        opts.onProgress?.(progressOf(info));
    }
    if (Date.now() >= deadline) {
      return abort(qmp, opts, wasRunning, `it did not complete within ${opts.timeoutMs} ms (${describeProgress(info)})`);
    }
    await waker.sleep(Math.max(1, Math.min(intervalMs, deadline - Date.now())));
  }
}

/** `query-migrate` on the source. A source whose answers we cannot read may still be migrating: it is
 * cancelled rather than left to finish unseen. */
async function queryOutgoing(qmp: QmpClient): Promise<MigrationInfo> {
  const answer = await qmp.execute('query-migrate');
  try {
    return parseMigrationInfo(answer);
  } catch (e) {
    await qmp.execute('migrate_cancel').catch(() => undefined);
    throw e;
  }
}

/**
 * Cancels on our own account (timeout, hook failure) and rejects with why. A migration that completed
 * before the cancel landed is a success: the VM runs on the destination now.
 */
async function abort(qmp: QmpClient, opts: MigrateOptions, wasRunning: boolean, why: string, cause?: unknown): Promise<MigrationResult> {
  const status = await cancelMigration(qmp);
  const info = parseMigrationInfo(await qmp.execute('query-migrate'));
  if (status === 'completed') return completedResult(await finalFigures(qmp, info));
  const sourceRunning = await resumed(qmp, wasRunning);
  throw new LockstepError('MIGRATION_FAILED', `live migration to ${opts.uri} cancelled: ${why}${sourceRunning ? '' : '; the source did not resume'}`, {
    uri: opts.uri,
    status,
    desc: info.errorDesc,
    sourceRunning,
  }, cause === undefined ? {} : { cause });
}

/** The error for a migration QEMU reports failed or cancelled, once the source runs again. */
async function ended(qmp: QmpClient, opts: MigrateOptions, info: MigrationInfo, wasRunning: boolean): Promise<LockstepError> {
  const sourceRunning = await resumed(qmp, wasRunning);
  // A destination that refused the stream fails it through the return path without a reason of its own.
  const what = info.status === 'cancelled' ? 'was cancelled' : `failed: ${info.errorDesc ?? "QEMU gave no reason (the destination's stderr may)"}`;
  return new LockstepError('MIGRATION_FAILED', `live migration to ${opts.uri} ${what}${sourceRunning ? '' : '; the source did not resume'}`, {
    uri: opts.uri,
    status: info.status,
    desc: info.errorDesc,
    sourceRunning,
  });
}

/** Waits (bounded) until a source that ran before the migration runs again; whether it does. */
async function resumed(qmp: QmpClient, wasRunning: boolean): Promise<boolean> {
  const deadline = Date.now() + RESUME_WAIT_MS;
  for (;;) {
    const running = parseStatus(await qmp.execute('query-status')).running;
    if (running || !wasRunning || Date.now() > deadline) return running;
    await sleep(RESUME_POLL_MS);
  }
}

/** A completed migration's `query-migrate` once QEMU has filled in its figures (bounded: then as it is). */
async function finalFigures(qmp: QmpClient, completed: MigrationInfo): Promise<MigrationInfo> {
  const deadline = Date.now() + FIGURES_WAIT_MS;
  let info = completed;
  // No real migration takes 0 ms: its start is at `migrate`, its end after the switch-over.
  while (info.totalMs === 0 && Date.now() < deadline) {
    await sleep(RESUME_POLL_MS);
    info = parseMigrationInfo(await qmp.execute('query-migrate'));
  }
  return info;
}

function completedResult(info: MigrationInfo): MigrationResult {
  if (info.totalMs === null || info.downtimeMs === null || info.setupMs === null || info.ram === null) {
    throw malformed('query-migrate', 'reported completed without total-time, downtime, setup-time and ram: the outcome is unknown');
  }
  return { totalMs: info.totalMs, downtimeMs: info.downtimeMs, transferredBytes: info.ram.transferred, setupMs: info.setupMs };
}

function progressOf(info: MigrationInfo): MigrationProgress {
  const ram = info.ram;
  return {
    status: info.status,
    elapsedMs: info.totalMs,
    transferredBytes: ram?.transferred ?? null,
    remainingBytes: ram?.remaining ?? null,
    totalBytes: ram?.total ?? null,
    dirtyBytesPerS: ram?.dirtyPagesRate != null && ram.pageSize != null ? ram.dirtyPagesRate * ram.pageSize : null,
    mbps: ram?.mbps ?? null,
    expectedDowntimeMs: info.expectedDowntimeMs,
    passes: ram?.dirtySyncCount ?? null,
    cpuThrottlePercent: info.cpuThrottlePercent,
  };
}

function describeProgress(info: MigrationInfo): string {
  if (info.ram === null) return info.status;
  const mib = (n: number | null): string => (n === null ? '?' : (n / 2 ** 20).toFixed(0));
  return `${info.status}, ${mib(info.ram.transferred)} MiB sent, ${mib(info.ram.remaining)} MiB left, pass ${info.ram.dirtySyncCount ?? '?'}`;
}

/* ------------------------------------------------------------------ TLS */

/**
 * Links the pair's files under the names QEMU's `tls-creds-x509` reads. The host certificate is good for
 * both ends (serverAuth and clientAuth), so one directory serves a host as source and as destination.
 */
export async function linkTlsCreds(files: IssuedFiles, credsDir: string): Promise<void> {
  await mkdir(credsDir, { recursive: true, mode: 0o700 });
  const links: [string, string][] = [
    ['ca-cert.pem', files.ca],
    ['server-cert.pem', files.cert],
    ['server-key.pem', files.key],
    ['client-cert.pem', files.cert],
    ['client-key.pem', files.key],
  ];
  for (const [name, target] of links) {
    const link = path.join(credsDir, name);
    await rm(link, { force: true });
    await symlink(path.resolve(target), link);
  }
}

/**
 * Drops the TLS objects an earlier migration left and, when `tls` is given, adds fresh ones: QEMU reads the
 * files when the object is made, so a re-issued certificate is picked up. QEMU checks at once that the
 * certificate fits the CA (a QMP_ERROR naming the file otherwise).
 */
async function replaceTlsObjects(qmp: QmpClient, tls: MigrationTls | undefined, endpoint: 'server' | 'client'): Promise<void> {
  const present = new Set(parseObjectNames(await qmp.execute('qom-list', { path: '/objects' })));
  // The parameters name the objects; unset them first so nothing refers to an object being replaced.
  await qmp.execute('migrate-set-parameters', { 'tls-creds': '', 'tls-authz': '' });
  for (const id of [TLS_CREDS_ID, TLS_AUTHZ_ID]) {
    if (present.has(id)) await qmp.execute('object-del', { id });
  }
  if (!tls) return;
  await linkTlsCreds(tls.files, tls.credsDir);
  await qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: TLS_CREDS_ID, dir: tls.credsDir, endpoint, 'verify-peer': true });
  if (endpoint === 'server') {
    // GnuTLS's RFC 4514 form of the client's subject; the pair's certificates carry exactly CN=<host id>.
    await qmp.execute('object-add', { 'qom-type': 'authz-simple', id: TLS_AUTHZ_ID, identity: `CN=${tls.peer}` });
  }
}

/* ------------------------------------------------------------------ parsing QEMU's answers */

/** Parses a `query-migrate` answer; throws `QMP_PROTOCOL` naming the field that does not fit. */
export function parseMigrationInfo(value: unknown): MigrationInfo {
  const what = 'query-migrate';
  if (!isRecord(value)) throw malformed(what, 'is not an object');
  const status = value['status'] ?? 'none';
  if (typeof status !== 'string' || !(MIGRATION_STATUSES as readonly string[]).includes(status)) {
    throw malformed(what, `has an unknown status ${JSON.stringify(status)}`);
  }
  const ramValue = value['ram'];
  let ram: MigrationRam | null = null;
  if (ramValue !== undefined) {
    if (!isRecord(ramValue)) throw malformed(what, 'has a ram that is not an object');
    const transferred = count(ramValue, 'transferred', `${what} ram`);
    if (transferred === null) throw malformed(what, 'has a ram without transferred');
    ram = {
      transferred,
      remaining: count(ramValue, 'remaining', `${what} ram`),
      total: count(ramValue, 'total', `${what} ram`),
      dirtyPagesRate: count(ramValue, 'dirty-pages-rate', `${what} ram`),
      pageSize: count(ramValue, 'page-size', `${what} ram`),
      mbps: count(ramValue, 'mbps', `${what} ram`),
      dirtySyncCount: count(ramValue, 'dirty-sync-count', `${what} ram`),
    };
  }
  const errorDesc = value['error-desc'];
  if (errorDesc !== undefined && typeof errorDesc !== 'string') throw malformed(what, 'has an error-desc that is not a string');
  return {
    status: status as MigrationStatus,
    totalMs: count(value, 'total-time', what),
    setupMs: count(value, 'setup-time', what),
    downtimeMs: count(value, 'downtime', what),
    expectedDowntimeMs: count(value, 'expected-downtime', what),
    cpuThrottlePercent: count(value, 'cpu-throttle-percentage', what),
    ram,
    errorDesc: errorDesc ?? null,
    listening: parseSocketAddresses(value['socket-address']),
  };
}

function parseSocketAddresses(value: unknown): { host: string; port: number }[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw malformed('query-migrate', 'has a socket-address that is not a list');
  return value.map((a) => {
    // QEMU 7.2 sends the port as a string ("41503").
    const port = isRecord(a) ? Number(a['port']) : NaN;
    if (!isRecord(a) || a['type'] !== 'inet' || typeof a['host'] !== 'string' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw malformed('query-migrate', `has a socket-address that is not an inet address: ${preview(a)}`);
    }
    return { host: a['host'], port };
  });
}

function parseStatus(value: unknown): { status: string; running: boolean } {
  if (!isRecord(value) || typeof value['status'] !== 'string' || typeof value['running'] !== 'boolean') {
    throw malformed('query-status', `is not {status, running}: ${preview(value)}`);
  }
  return { status: value['status'], running: value['running'] };
}

function parseObjectNames(value: unknown): string[] {
  if (!Array.isArray(value) || !value.every((o) => isRecord(o) && typeof o['name'] === 'string')) {
    throw malformed('qom-list', `is not a list of {name, type}: ${preview(value)}`);
  }
  return value.map((o) => (o as Record<string, string>)['name']!);
}

/** A non-negative number field, or null when absent. */
function count(obj: Record<string, unknown>, key: string, what: string): number | null {
  const v = obj[key];
  if (v === undefined) return null;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw malformed(what, `has a ${key} that is not a non-negative number: ${preview(v)}`);
  return v;
}

function malformed(command: string, why: string): LockstepError {
  return new LockstepError('QMP_PROTOCOL', `QEMU's answer to ${command} ${why}`, { command });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function preview(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/* ------------------------------------------------------------------ options */

function checkedUri(uri: string, opts: { allowPortZero: boolean }): void {
  const port = Number(URI_RE.exec(uri)?.[2] ?? NaN);
  if (!Number.isInteger(port) || port > 65535 || (port === 0 && !opts.allowPortZero)) {
    throw new LockstepError('INVALID_ARGUMENT', `migration address must be tcp:HOST:PORT${opts.allowPortZero ? '' : ' with a port'}, not ${JSON.stringify(uri)}`, { uri });
  }
}

/** The peer's id goes into a distinguished name and a hostname check: host names only, nothing DN syntax means. */
function checkPeer(peer: string): void {
  if (!NAME_RE.test(peer)) throw new LockstepError('INVALID_ARGUMENT', `migration peer must be a host id, not ${JSON.stringify(peer)}`, { peer });
}

function checkInteger(v: number, name: string, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new LockstepError('INVALID_ARGUMENT', `${name} must be a whole number in ${min}..${max}, not ${v}`, { [name]: v });
  }
}

/* ------------------------------------------------------------------ waiting */

/** Sleeps between polls, cut short by a MIGRATION event, so a change of status is acted on at once. */
class MigrationWaker {
  private pending = false;
  private wake: (() => void) | undefined;
  private readonly off: () => void;

  constructor(qmp: QmpClient) {
    this.off = qmp.onEvent((e) => {
      if (e.event !== 'MIGRATION') return;
      this.pending = true;
      this.wake?.();
    });
  }

  sleep(ms: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        this.pending = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  dispose(): void {
    this.off();
    this.wake?.();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
