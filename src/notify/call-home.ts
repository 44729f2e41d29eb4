/**
 * Call Home: the seed's report to the support organisation, an HTTPS POST of one JSON document per alert
 * with what a support engineer needs before calling back: the fault (type = the alert's code, severity,
 * message, time), its exact location (pair, host, component and VM when known) and the host's recent
 * timeline (events and alerts of the daemon's event log up to the alert). Format in docs/notifications.md.
 */
import { alertJson, isoTime, type NotifyAlert } from './alert.js';
import type { TimelineEntry } from './mail.js';
import { postJson, type PostOptions } from './http-post.js';
import type { DeliveryOutcome } from './outcome.js';

/** Timeline entries a report carries at most: minutes of a busy host's history, a few tens of kB. */
export const CALL_HOME_TIMELINE_MAX = 50;

export const PRODUCT = { name: 'lockstep', version: '0.1.0' } as const;

export function callHomeReport(a: NotifyAlert, timeline: readonly TimelineEntry[]): Record<string, unknown> {
  return {
    type: 'lockstep.callHome',
    version: 1,
    reportId: a.uid,
    test: a.test,
    product: PRODUCT,
    fault: { type: a.code, severity: a.severity, message: a.message, cause: a.cause, time: isoTime(a.wallMs) },
    location: { pair: a.pair, ...a.location },
    timeline: timeline.slice(-CALL_HOME_TIMELINE_MAX).map((t) => ({
      time: isoTime(t.wallMs),
      host: t.host,
      kind: t.kind,
      severity: t.severity,
      code: t.code,
      what: t.what,
      cause: t.cause,
    })),
    alert: alertJson(a),
  };
}

export function sendCallHome(url: string, a: NotifyAlert, timeline: readonly TimelineEntry[], opts: PostOptions): Promise<DeliveryOutcome> {
  return postJson(url, callHomeReport(a, timeline), { ...opts, headers: { 'idempotency-key': a.uid, ...opts.headers } });
}
