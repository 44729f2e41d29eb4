/**
 * The configured receivers of notifications, each with a stable id (the outbox keys deliveries by it) and
 * one `deliver`: an e-Alert to the SMTP relay, a trap to each SNMP target, the Call Home report, the alert
 * to each webhook. Files the config names (password, CA certificates) are read at each delivery, so that a
 * fixed file takes effect at the next retry; a file that cannot be read is that delivery's failure.
 */
import { readFile } from 'node:fs/promises';
import { testAlert, type NotifyAlert, type Severity } from './alert.js';
import { sendCallHome } from './call-home.js';
import { redacted } from './http-post.js';
import { alertMail, type TimelineEntry } from './mail.js';
import { failed, type DeliveryOutcome } from './outcome.js';
import { sendMail } from './smtp.js';
import { sendTrap, type SnmpTarget } from './snmp-trap.js';
import { sendWebhook } from './webhook.js';

export interface SmtpReceiverConfig {
  host: string;
  port: number;
  from: string;
  to: string[];
  starttls: 'required' | 'opportunistic' | 'off';
  user: string | null;
  /** A file holding the password (its first line); never the password itself in the config. */
  passwordFile: string | null;
  caFile: string | null;
}

export interface HttpReceiverConfig {
  url: string;
  caFile: string | null;
}

/** A webhook may be given a name in the config, so that it keeps it when the list is reordered. */
export interface WebhookConfig extends HttpReceiverConfig {
  /** A letter, then letters, digits, `-`; at most 32 (`webhook:NAME`). Without: `webhook:N`, its place. */
  name?: string;
}

export const WEBHOOK_NAME_RE = /^[a-z][a-z0-9-]{0,31}$/;

/** The outbox's retry policy: exponential from `initialMs`, capped at `maxMs`, abandoned after `giveUpAfterMs`. */
export interface RetryPolicy {
  initialMs: number;
  maxMs: number;
  giveUpAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { initialMs: 5000, maxMs: 10 * 60_000, giveUpAfterMs: 7 * 24 * 3_600_000 };

/** The daemon config's `notifications` section, checked (src/daemon/config.ts). */
export interface NotificationsConfig {
  /** Alerts below this severity are not sent (they stay in the event log). */
  minSeverity: Severity;
  smtp: SmtpReceiverConfig | null;
  snmp: { targets: SnmpTarget[] } | null;
  callHome: HttpReceiverConfig | null;
  webhooks: WebhookConfig[];
  retry: RetryPolicy;
}

/** What a delivery may need from the daemon besides the alert. */
export interface DeliveryContext {
  /** The host's event log up to the alert, oldest first (Call Home, e-Alerts). */
  timeline(a: NotifyAlert): TimelineEntry[];
  /** This host's name in EHLO. */
  heloName: string;
  /** The daemon's uptime in hundredths of a second (the traps' sysUpTime.0). */
  uptimeCs(): number;
  nowMs(): number;
  signal?: AbortSignal;
}

export type ReceiverKind = 'smtp' | 'snmp' | 'call-home' | 'webhook';

/** A receiver's kind and the config section it was made from (the console and the CLI show it, without secrets). */
export type ReceiverSettings =
  | { kind: 'smtp'; config: SmtpReceiverConfig }
  | { kind: 'snmp'; config: SnmpTarget }
  | { kind: 'call-home' | 'webhook'; config: HttpReceiverConfig };

export type Receiver = ReceiverSettings & {
  /** `smtp`, `snmp:HOST:PORT`, `call-home`, `webhook:URL`: the outbox's key, stable while the config says the same. */
  id: string;
  /**
   * What the API, the console and the CLI call it: the id, but `webhook:NAME` (its configured name) or
   * `webhook:N` (its place in the config's `webhooks`, from 1) for a webhook, whose URL often is its secret
   * (a chat service's incoming-webhook token is in its path) and must not reach a read-only user.
   */
  name: string;
  deliver(a: NotifyAlert, ctx: DeliveryContext): Promise<DeliveryOutcome>;
};

export function receiversOf(cfg: NotificationsConfig): Receiver[] {
  const out: Receiver[] = [];
  const smtp = cfg.smtp;
  if (smtp) out.push({ id: 'smtp', name: 'smtp', kind: 'smtp', config: smtp, deliver: (a, ctx) => deliverMail(smtp, a, ctx) });
  for (const t of cfg.snmp?.targets ?? []) {
    const id = `snmp:${t.host}:${t.port}`;
    out.push({ id, name: id, kind: 'snmp', config: t, deliver: (a, ctx) => sendTrap(t, a, ctx.uptimeCs()) });
  }
  const callHome = cfg.callHome;
  if (callHome) {
    out.push({
      id: 'call-home',
      name: 'call-home',
      kind: 'call-home',
      config: callHome,
      deliver: async (a, ctx) => withCa(callHome.caFile, (ca) => sendCallHome(callHome.url, a, ctx.timeline(a), { ca, ...signalOf(ctx) })),
    });
  }
  cfg.webhooks.forEach((w, i) => {
    out.push({
      id: `webhook:${redacted(new URL(w.url))}`,
      name: `webhook:${w.name ?? i + 1}`,
      kind: 'webhook',
      config: w,
      deliver: (a, ctx) => withCa(w.caFile, (ca) => sendWebhook(w.url, a, { ca, ...signalOf(ctx) })),
    });
  });
  return out;
}

/** "Send test": a test notification to one receiver, now, outside the outbox; the outcome as a value. */
export async function sendTest(receiver: Receiver, ctx: DeliveryContext, pair: string, host: string): Promise<{ receiver: string; outcome: DeliveryOutcome }> {
  return { receiver: receiver.id, outcome: await receiver.deliver(testAlert(pair, host, ctx.nowMs()), ctx) };
}

async function deliverMail(cfg: SmtpReceiverConfig, a: NotifyAlert, ctx: DeliveryContext): Promise<DeliveryOutcome> {
  let password: string | null = null;
  if (cfg.user !== null && cfg.passwordFile !== null) {
    try {
      password = (await readFile(cfg.passwordFile, 'utf8')).split(/\r?\n/)[0] ?? '';
    } catch (e) {
      return failed('read password file', `cannot read ${cfg.passwordFile}: ${(e as Error).message}`);
    }
  }
  return withCa(cfg.caFile, (ca) =>
    sendMail(
      {
        host: cfg.host,
        port: cfg.port,
        starttls: cfg.starttls,
        auth: cfg.user !== null && password !== null ? { user: cfg.user, password } : null,
        ca,
        heloName: ctx.heloName,
        ...signalOf(ctx),
      },
      { from: cfg.from, to: cfg.to },
      alertMail(a, { from: cfg.from, to: cfg.to }, ctx.timeline(a), ctx.nowMs()),
    ),
  );
}

async function withCa(caFile: string | null, send: (ca: string | null) => Promise<DeliveryOutcome>): Promise<DeliveryOutcome> {
  let ca: string | null = null;
  if (caFile !== null) {
    try {
      ca = await readFile(caFile, 'utf8');
    } catch (e) {
      return failed('read CA file', `cannot read ${caFile}: ${(e as Error).message}`);
    }
  }
  return send(ca);
}

function signalOf(ctx: DeliveryContext): { signal?: AbortSignal } {
  return ctx.signal ? { signal: ctx.signal } : {};
}
