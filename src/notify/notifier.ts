/**
 * The delivery loop of notifications. Each pass:
 *   1. catches up with the event log: every alert row newer than the outbox's cursor, at or above the
 *      minimum severity, becomes one pending delivery per configured receiver (one transaction with the
 *      cursor, so nothing is recorded twice and nothing is skipped across a crash);
 *   2. sends what is due, oldest alert first, one delivery at a time per receiver and the receivers side by
 *      side; an accepted one is marked delivered, a failed one is retried after a doubling delay (capped),
 *      and is abandoned, with its last error, only after the policy's give-up time.
 * A pass runs when the driver says alerts were logged (`nudge`), when a retry falls due, and at least every
 * `IDLE_PASS_MS` (the catch-up is the safety net for a missed nudge). Every delivery and failure is logged.
 */
import { alertOfLogEntry, severityAtLeast, type LogRow, type NotifyAlert } from './alert.js';
import { describeOutcome, failed, type DeliveryOutcome } from './outcome.js';
import { Outbox, retryDelayMs, type Delivery } from './outbox.js';
import { receiversOf, sendTest, type DeliveryContext, type NotificationsConfig, type Receiver } from './receivers.js';
import { publicOutcome, shownReceiverId, type NotifierReadout, type TestRun } from './receiver-view.js';
import { CALL_HOME_TIMELINE_MAX } from './call-home.js';
import { describeError } from '../util/errors.js';

/** The event log as the notifier reads it: `StateDb.recentLog` (newest first, paged by id). */
export interface AlertSource {
  recentLog(opts: { limit: number; beforeId?: number; kind?: 'event' | 'alert' }): LogRow[];
}

export interface NotifierOptions {
  config: NotificationsConfig;
  pair: string;
  host: string;
  outboxFile: string;
  source: AlertSource;
  log: (line: string) => void;
  /** The name in EHLO; default the host's name. */
  heloName?: string;
  /** How long a "send test" waits for a receiver's outcome; default `SEND_TEST_TIMEOUT_MS`. */
  testTimeoutMs?: number;
}

/**
 * A "send test" is answered while someone waits (the console's request gives up after 20 s): a receiver
 * that has not finished by then is reported as failed at the step it had reached. A real alert's delivery
 * waits longer (30 s per SMTP reply, 30 s per POST) and is retried.
 */
export const SEND_TEST_TIMEOUT_MS = 15_000;
/** After giving up, how long the aborted attempt gets to say which step it was at. */
const TEST_ABORT_GRACE_MS = 1000;

/** The longest a quiet notifier waits between passes. */
export const IDLE_PASS_MS = 5000;
/** Deliveries sent per pass at most; the next pass comes at once when this many were due. */
const PASS_DELIVERIES_MAX = 64;
/** The catch-up reads the log in pages of this many alerts, and at most this many pages per pass. */
const CATCH_UP_PAGE = 200;
const CATCH_UP_PAGES_MAX = 25;

export class Notifier implements NotifierReadout {
  readonly outbox: Outbox;
  /** The receivers and the policy in force: the config's at start, then each `reconfigure`'s. */
  private config: NotificationsConfig;
  private receiverList: Receiver[];
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private pass: Promise<void> | null = null;
  /** Passes run one after another, whoever asks: two at once could send the same due delivery twice. */
  private passChain: Promise<void> = Promise.resolve();
  private again = false;
  private started = false;
  private stopped = false;
  private lastPassError: string | null = null;
  private readonly ctx: DeliveryContext;
  /** Each receiver's latest "send test", by id: since this lockstepd started (a test leaves no row in the outbox). */
  private readonly lastTests = new Map<string, TestRun>();

  /**
   * Opens the outbox. A new outbox starts at the log's newest row: alerts from before notifications were
   * configured are history, not news. Pending deliveries to receivers no longer configured are abandoned.
   */
  constructor(private readonly opts: NotifierOptions) {
    this.outbox = Outbox.open(opts.outboxFile);
    this.config = opts.config;
    try {
      this.receiverList = receiversOf(opts.config);
      if (this.outbox.cursor() === null) this.outbox.setCursor(opts.source.recentLog({ limit: 1 })[0]?.id ?? 0);
      const gone = this.outbox.abandonReceiversNotIn(this.receiverList.map((r) => r.id), Date.now());
      if (gone.length > 0) opts.log(`notify: abandoned pending deliveries to receivers no longer configured: ${gone.map(shownReceiverId).join(', ')}`);
    } catch (e) {
      this.outbox.close();
      throw e;
    }
    this.ctx = {
      timeline: (a) => this.timeline(a),
      heloName: opts.heloName ?? opts.host,
      uptimeCs: () => Math.floor(process.uptime() * 100),
      nowMs: () => Date.now(),
      signal: this.abort.signal,
    };
  }

  /**
   * Takes a new notifications config while running (a preference setter): no restart, and no delivery
   * lost. The outbox and its cursor stay as they are, so an alert logged before the change is recorded
   * once, for the receivers in force when the pass catches up with it. A delivery waiting for a receiver
   * that is still configured (the same id: `smtp`, `call-home`, `snmp:HOST:PORT`, a webhook by its URL)
   * keeps its attempts and goes out through the new settings (a new relay, new recipients), at once when
   * the receiver's settings changed (its backoff was the old settings' failure); one in flight finishes and
   * is recorded. Waiting deliveries to a receiver the new config no longer has are abandoned,
   * saying so, as the next start would. New receivers get the alerts from now on.
   */
  reconfigure(config: NotificationsConfig): void {
    if (this.stopped) return;
    const before = new Map(this.receiverList.map((r) => [r.id, JSON.stringify(r.config)]));
    this.config = config;
    this.receiverList = receiversOf(config);
    try {
      const now = Date.now();
      for (const r of this.receiverList) {
        const was = before.get(r.id);
        if (was !== undefined && was !== JSON.stringify(r.config)) this.outbox.retryNow(r.id, now);
      }
      const gone = this.outbox.abandonReceiversNotIn(this.receiverList.map((r) => r.id), now);
      if (gone.length > 0) this.opts.log(`notify: abandoned pending deliveries to receivers no longer configured: ${gone.map(shownReceiverId).join(', ')}`);
    } catch (e) {
      // Left as they were: a removed receiver's are abandoned when due (deliverAll finds no receiver for them).
      this.opts.log(`notify: cannot update the waiting deliveries for the new receivers: ${describeError(e)}`);
    }
    this.opts.log(`notify: reconfigured: notifications to ${this.receiverList.map((r) => r.name).join(', ')}`);
    this.nudge();
  }

  /** The configured receivers, in config order. */
  receivers(): readonly Receiver[] {
    return this.receiverList;
  }

  /** The receiver named `name` (`smtp`, `snmp:HOST:PORT`, `call-home`, `webhook:NAME`, `webhook:N`); null when none is. */
  receiver(name: string): Receiver | null {
    return this.receiverList.find((r) => r.name === name) ?? null;
  }

  /** A receiver's deliveries waiting in the outbox and its latest outcome there. */
  summary(receiver: Receiver): { pending: number; last: Delivery | null } {
    return this.outbox.receiverSummary(receiver.id);
  }

  lastTest(receiver: Receiver): TestRun | null {
    return this.lastTests.get(receiver.id) ?? null;
  }

  /**
   * "Send test": a test notification to the receiver named `name`, now, through the receiver's own delivery
   * (the same formatting, transport, TLS checks and files read as an alert's), but not through the outbox:
   * a test is answered to the one who asked, not retried for a week, and never queues behind or ahead of
   * real alerts. Bounded by the test timeout. An unknown name is a failed outcome at step `receiver`.
   */
  async sendTest(name: string): Promise<TestRun> {
    const r = this.receiver(name);
    if (!r) {
      const outcome = failed('receiver', `no receiver ${JSON.stringify(name)} is configured (configured: ${this.receiverList.map((x) => x.name).join(', ') || 'none'})`);
      return { receiver: name, outcome, atMs: Date.now(), durationMs: 0 };
    }
    const atMs = Date.now();
    const outcome = await this.attemptTest(r);
    const run: TestRun = { receiver: r.name, outcome, atMs, durationMs: Date.now() - atMs };
    this.lastTests.set(r.id, run);
    // The log is read by whoever reads the host's logs (and goes in support bundles): names and texts as the API shows them, a webhook's URL is often its secret.
    this.opts.log(`notify: test to ${r.name} ${describeOutcome(publicOutcome(r, outcome))}`);
    return run;
  }

  /** "Send test" to each receiver named (all of them for null), side by side: one that hangs delays no other. */
  sendTests(names: readonly string[] | null): Promise<TestRun[]> {
    return Promise.all((names ?? this.receiverList.map((r) => r.name)).map((n) => this.sendTest(n)));
  }

  private async attemptTest(r: Receiver): Promise<DeliveryOutcome> {
    const attempt = new AbortController();
    const stopping = (): void => attempt.abort();
    this.abort.signal.addEventListener('abort', stopping, { once: true });
    const timeoutMs = this.opts.testTimeoutMs ?? SEND_TEST_TIMEOUT_MS;
    const settled = sendTest(r, { ...this.ctx, signal: attempt.signal }, this.opts.pair, this.opts.host).then(
      (t) => t.outcome,
      (e: unknown): DeliveryOutcome => failed('send', describeError(e)),
    );
    const timers: NodeJS.Timeout[] = [];
    const after = (ms: number): Promise<null> => new Promise((resolve) => timers.push(setTimeout(() => resolve(null), ms)));
    try {
      const first = await Promise.race([settled, after(timeoutMs)]);
      if (first !== null) return first;
      attempt.abort();
      // The aborted attempt says which step it had reached; a sender that ignores the abort is not waited for.
      const late = await Promise.race([settled, after(TEST_ABORT_GRACE_MS)]);
      if (late?.ok) return late;
      return failed(late?.step ?? 'send', `no outcome within ${formatDelay(timeoutMs)}: the test gave up (an alert's delivery would wait longer, and be retried)`);
    } finally {
      for (const t of timers) clearTimeout(t);
      this.abort.signal.removeEventListener('abort', stopping);
    }
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.nudge();
  }

  /** Deliveries waiting to go out, for the metrics. */
  pending(): number {
    return this.outbox.pendingCount();
  }

  /** New alerts may be in the log: run a pass now (or right after the one running). */
  nudge(): void {
    if (!this.started || this.stopped) return;
    if (this.pass) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.pass = this.runOnce()
      .catch((e) => this.passFailed(e))
      .finally(() => {
        this.pass = null;
        if (this.stopped) return;
        if (this.again) {
          this.again = false;
          this.nudge();
        } else this.schedule();
      });
  }

  /** Stops the loop: in-flight deliveries are aborted (they stay pending), then the outbox is closed. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.pass;
    await this.passChain;
    this.outbox.close();
  }

  /** One pass: catch up with the log, then send what is due; after any pass already running. Exposed for tests. */
  runOnce(): Promise<void> {
    const mine = this.passChain.then(() => (this.stopped ? undefined : this.passBody()));
    this.passChain = mine.catch(() => undefined);
    return mine;
  }

  private async passBody(): Promise<void> {
    this.catchUp();
    const due = this.outbox.due(Date.now(), PASS_DELIVERIES_MAX);
    if (due.length === PASS_DELIVERIES_MAX) this.again = true;
    const byReceiver = new Map<string, Delivery[]>();
    for (const d of due) byReceiver.set(d.receiver, [...(byReceiver.get(d.receiver) ?? []), d]);
    await Promise.all([...byReceiver].map(([id, items]) => this.deliverAll(id, items)));
    this.outbox.trim();
    this.lastPassError = null;
  }

  /** Turns the alerts logged since the cursor into pending deliveries. */
  private catchUp(): void {
    let cursor = this.outbox.cursor() ?? 0;
    const newest = this.opts.source.recentLog({ limit: 1 })[0]?.id ?? 0;
    if (newest < cursor) {
      // The log is younger than the outbox's cursor: the state database was recreated. Its rows are all new.
      this.opts.log(`notify: the event log restarted below the outbox's cursor (${newest} < ${cursor}); following the new log from its start`);
      cursor = 0;
    }
    const fresh: LogRow[] = [];
    let before: number | undefined;
    let complete = false;
    for (let page = 0; page < CATCH_UP_PAGES_MAX && !complete; page++) {
      const rows = this.opts.source.recentLog({ limit: CATCH_UP_PAGE, kind: 'alert', ...(before === undefined ? {} : { beforeId: before }) });
      for (const r of rows) {
        if (r.id <= cursor) {
          complete = true;
          break;
        }
        fresh.push(r);
      }
      if (rows.length < CATCH_UP_PAGE) complete = true;
      before = rows.at(-1)?.id;
    }
    if (!complete) this.opts.log(`notify: more than ${CATCH_UP_PAGE * CATCH_UP_PAGES_MAX} alerts since the last delivery pass; the older ones are not sent (they are in the event log)`);
    const next = Math.max(cursor, newest);
    if (fresh.length === 0) {
      if (next !== this.outbox.cursor()) this.outbox.setCursor(next);
      return;
    }
    fresh.reverse();
    const alerts = fresh.map((r) => alertOfLogEntry(r, this.opts.pair)).filter((a): a is NotifyAlert => a !== null && severityAtLeast(a.severity, this.config.minSeverity));
    const added = this.outbox.enqueue(alerts, this.receiverList.map((r) => r.id), Math.max(next, fresh.at(-1)!.id), Date.now());
    if (added > 0) this.opts.log(`notify: ${alerts.length} new alert(s) recorded for ${this.receiverList.length} receiver(s) (${added} deliveries)`);
  }

  /** A receiver's due deliveries in order; the first failure ends its turn (the rest wait for its retry). */
  private async deliverAll(receiverId: string, items: readonly Delivery[]): Promise<void> {
    for (const d of items) {
      if (this.stopped) return;
      // Looked up for each delivery: a reconfigure during the pass applies from the next one on.
      const receiver = this.receiverList.find((r) => r.id === receiverId);
      if (!receiver) {
        this.outbox.abandon(d.id, Date.now(), 'the receiver is no longer configured');
        continue;
      }
      const outcome = await receiver.deliver(d.alert, this.ctx).catch((e: unknown): DeliveryOutcome => failed('send', describeError(e)));
      // Stopping aborted the attempt: it stays pending, neither counted nor logged as the receiver's failure.
      if (this.stopped) return;
      const now = Date.now();
      const what = `alert ${d.alert.code} (${d.alertUid}) to ${receiver.name}`;
      if (outcome.ok) {
        this.outbox.markDelivered(d.id, now, outcome.detail);
        this.opts.log(`notify: ${what} ${describeOutcome(publicOutcome(receiver, outcome))}${d.attempts > 0 ? ` after ${d.attempts + 1} attempts` : ''}`);
        continue;
      }
      const error = describeOutcome(outcome);
      const shownError = describeOutcome(publicOutcome(receiver, outcome));
      const { retry } = this.config;
      if (now - d.createdMs >= retry.giveUpAfterMs) {
        this.outbox.markFailed(d.id, receiver.id, now, error, now);
        this.outbox.abandon(d.id, now, `given up after ${d.attempts + 1} attempts over ${Math.round((now - d.createdMs) / 60_000)} min`);
        this.opts.log(`notify: ${what} ${shownError}; given up after ${d.attempts + 1} attempts`);
      } else {
        const delayMs = retryDelayMs(retry, d.attempts + 1);
        this.outbox.markFailed(d.id, receiver.id, now, error, now + delayMs);
        this.opts.log(`notify: ${what} ${shownError}; attempt ${d.attempts + 1}, next in ${formatDelay(delayMs)}`);
      }
      return;
    }
  }

  /** The host's log up to the alert, oldest first; a test alert (no log row) gets the latest entries. */
  private timeline(a: NotifyAlert): LogRow[] {
    try {
      return this.opts.source.recentLog({ limit: CALL_HOME_TIMELINE_MAX, ...(a.logId > 0 ? { beforeId: a.logId + 1 } : {}) }).reverse();
    } catch (e) {
      this.opts.log(`notify: cannot read the event log for the timeline: ${describeError(e)}`);
      return [];
    }
  }

  private schedule(): void {
    let waitMs = IDLE_PASS_MS;
    try {
      const next = this.outbox.nextDueMs();
      if (next !== null) waitMs = Math.min(waitMs, Math.max(0, next - Date.now()));
    } catch (e) {
      this.passFailed(e);
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.nudge();
    }, waitMs);
  }

  private passFailed(e: unknown): void {
    const why = describeError(e);
    // The same error every few seconds (a broken outbox) is logged once, until it changes.
    if (why !== this.lastPassError) this.opts.log(`notify: delivery pass failed: ${why}`);
    this.lastPassError = why;
  }
}

function formatDelay(ms: number): string {
  return ms < 10_000 ? `${ms} ms` : ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`;
}
