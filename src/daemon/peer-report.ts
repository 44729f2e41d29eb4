/**
 * The peer's own view, asked over the A-Link, so that either host's API answers for the pair: this host
 * asks with `host-report-request {id}`, the peer's lockstepd answers `host-report {id, takenAt, networks,
 * health}` with its networks as its `GET /v1/networks` shows them and its health components
 * (`src/protocol/peer.ts` checks both on receipt). I/O plumbing between the two daemons: the core is not
 * involved and sees none of it.
 *
 * Bounded everywhere: one request of ours in flight at a time (callers at once share it), an answer within
 * `timeoutMs` or the view is unavailable with the reason; one read of our own report at a time for the
 * peer (requests meanwhile share it), at most `answersPendingMax` of its requests waiting for that read.
 * Never throws to its callers: a peer that is not there, silent, or answers something invalid is a value,
 * `{state: 'unavailable', reason}`.
 */
import type { HealthSnapshot } from '../core/types.js';
import { REPORT_LIMITS, type DaemonMessage, type HostReport, type ReportedNetwork } from '../protocol/peer.js';
import { describeError } from '../util/errors.js';
import type { NetworkStatus } from './networks.js';

/** The peer's section of an answer: its report, or why there is none. */
export type PeerView =
  | { host: string; state: 'available'; takenAt: string; receivedAt: string; networks: ReportedNetwork[]; health: HealthSnapshot | null }
  | { host: string; state: 'unavailable'; reason: string };

/**
 * The peer's section of a pair answer (`GET /v1/networks`, `GET /v1/host/health`): what the route shows of
 * the peer's report, with when it was taken and received, or why there is none.
 */
export type PeerSection<T> = ({ host: string; state: 'available'; takenAt: string; receivedAt: string } & T) | { host: string; state: 'unavailable'; reason: string };

/** `view` as a route's peer section: `shown` picks what the route shows of an available report. */
export function peerSection<T extends object>(view: PeerView, shown: (report: PeerView & { state: 'available' }) => T): PeerSection<T> {
  if (view.state === 'unavailable') return { host: view.host, state: view.state, reason: view.reason };
  return { host: view.host, state: view.state, takenAt: view.takenAt, receivedAt: view.receivedAt, ...shown(view) };
}

/** What this host reports of itself when the peer asks. */
export interface OwnReport {
  networks: NetworkStatus[];
  health: HealthSnapshot | null;
}

/** The A-Link as the exchange uses it: send (on how many paths), and whether there is one yet. */
export interface ReportLink {
  /** Returns the paths the message went on; 0: none is up. */
  send(msg: DaemonMessage): number;
}

export interface PeerReportsOptions {
  self: string;
  peer: string;
  /** The A-Link, null before pairing. */
  link: () => ReportLink | null;
  /** This host's report, read when the peer asks. */
  own: () => Promise<OwnReport>;
  log: (line: string) => void;
  /** How long an answer may take. Default 2000. */
  timeoutMs?: number;
}

export const PEER_REPORT_TIMEOUT_MS = 2000;
/** The peer's requests waiting for one read of our report; beyond it a request is dropped (the peer times out). */
const ANSWERS_PENDING_MAX = 16;
/** Bound on reading our own report for the peer: it answers in time or not at all. */
const OWN_READ_TIMEOUT_MS = 1500;

interface InFlight {
  id: number;
  promise: Promise<PeerView>;
  settle: (v: PeerView) => void;
  timer: NodeJS.Timeout;
}

export class PeerReports {
  private readonly timeoutMs: number;
  private nextId = 1;
  private inFlight: InFlight | null = null;
  private answering: Promise<OwnReport | null> | null = null;
  private answersPending = 0;
  private closed = false;

  constructor(private readonly opts: PeerReportsOptions) {
    this.timeoutMs = opts.timeoutMs ?? PEER_REPORT_TIMEOUT_MS;
  }

  /** The peer's view now, or why it is unavailable. Never throws; callers at once share one request. */
  ask(): Promise<PeerView> {
    if (this.inFlight) return this.inFlight.promise;
    const host = this.opts.peer;
    const unavailable = (reason: string): PeerView => ({ host, state: 'unavailable', reason });
    if (this.closed) return Promise.resolve(unavailable('lockstepd is stopping'));
    const link = this.opts.link();
    if (link === null) return Promise.resolve(unavailable('not paired yet: there is no A-Link to ask the peer over'));
    const id = this.nextId++;
    let settle!: (v: PeerView) => void;
    const promise = new Promise<PeerView>((resolve) => (settle = resolve));
    const timer = setTimeout(() => this.finish(id, unavailable(`no answer from ${host} within ${this.timeoutMs} ms`)), this.timeoutMs);
    this.inFlight = { id, promise, settle, timer };
    let paths: number;
    try {
      paths = link.send({ kind: 'host-report-request', from: this.opts.self, id });
    } catch (e) {
      // Our own message refused by our own schema: a bug, but one that costs only the peer's view.
      this.finish(id, unavailable(`the request could not be sent: ${describeError(e)}`));
      return promise;
    }
    if (paths === 0) this.finish(id, unavailable('no A-Link path is up'));
    return promise;
  }

  /** A daemon message from the Alink (`daemon-message`): the peer's question, or its answer to ours. */
  handle(msg: DaemonMessage): void {
    if (this.closed || msg.from !== this.opts.peer) return;
    if (msg.kind === 'host-report-request') return void this.answer(msg.id);
    this.received(msg);
  }

  /** A daemon message that failed the schema (`daemon-invalid`): if it was the answer we wait for, say so. */
  invalid(kind: DaemonMessage['kind'], id: number | null, reason: string): void {
    if (kind !== 'host-report' || this.inFlight === null) return;
    // An invalid answer whose id could not be read is taken as the answer to the one request in flight.
    if (id !== null && id !== this.inFlight.id) return;
    this.opts.log(`the peer's host report was invalid, its view is unavailable: ${reason}`);
    this.finish(this.inFlight.id, { host: this.opts.peer, state: 'unavailable', reason: `${this.opts.peer} answered with an invalid report: ${reason}` });
  }

  /** Ends the request in flight (as unavailable); no answers after. */
  close(): void {
    this.closed = true;
    if (this.inFlight) this.finish(this.inFlight.id, { host: this.opts.peer, state: 'unavailable', reason: 'lockstepd is stopping' });
  }

  private received(report: HostReport): void {
    if (this.inFlight === null || report.id !== this.inFlight.id) return; // late: its request timed out
    this.finish(report.id, {
      host: this.opts.peer,
      state: 'available',
      takenAt: report.takenAt,
      receivedAt: new Date().toISOString(),
      networks: report.networks,
      health: report.health,
    });
  }

  private finish(id: number, view: PeerView): void {
    const f = this.inFlight;
    if (f === null || f.id !== id) return;
    clearTimeout(f.timer);
    this.inFlight = null;
    f.settle(view);
  }

  private answer(id: number): void {
    if (this.answersPending >= ANSWERS_PENDING_MAX) return;
    this.answersPending++;
    this.answering ??= readOwn(this.opts.own, this.opts.log).finally(() => (this.answering = null));
    void this.answering.then((own) => {
      this.answersPending--;
      const link = this.opts.link();
      if (own === null || link === null || this.closed) return;
      const report: HostReport = {
        kind: 'host-report',
        from: this.opts.self,
        id,
        takenAt: new Date().toISOString(),
        networks: own.networks.map(clipNetwork),
        health: own.health,
      };
      try {
        link.send(report);
      } catch (e) {
        this.opts.log(`cannot answer the peer's host report request: ${describeError(e)}`);
      }
    });
  }
}

async function readOwn(own: () => Promise<OwnReport>, log: (line: string) => void): Promise<OwnReport | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      own(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not read within ${OWN_READ_TIMEOUT_MS} ms`)), OWN_READ_TIMEOUT_MS);
      }),
    ]);
  } catch (e) {
    log(`cannot read this host's report for the peer: ${describeError(e)}`);
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Our own strings made to fit the schema the peer checks: a sentence clipped, control characters (a
 * multi-line error from a library) made spaces. Interface names, MACs and addresses are short already.
 */
function clipNetwork(n: NetworkStatus): NetworkStatus {
  const t = (s: string): string => clip(s, REPORT_LIMITS.textChars);
  const tn = (s: string | null): string | null => (s === null ? null : t(s));
  return {
    ...n,
    detail: t(n.detail),
    bandwidth: { ...n.bandwidth, reason: tn(n.bandwidth.reason) },
    alink: n.alink && { ...n.alink, lastError: tn(n.alink.lastError) },
  };
}

function clip(s: string, max: number): string {
  const clean = s.replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}
