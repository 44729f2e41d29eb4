/**
 * The notifications section as a preference setter takes it, with its secrets left where they are. The
 * view never shows a secret (receiver-view.ts), so an operator who changes a recipient cannot send back
 * the SNMP community or a webhook's token URL they cannot see: each secret field — an SNMP target's
 * `community`, Call Home's `url`, a webhook's `url` — may instead be `{"keep": "RECEIVER"}`, RECEIVER being a
 * receiver's name as the view shows it (`snmp:HOST:PORT`, `call-home`, `webhook:NAME`, `webhook:N`): its
 * current value takes the field's place before the section is checked as the config file's.
 *
 * `editableForm` is the other way: the section in force, as the setter would take it back unchanged, each
 * secret kept by name (the console's editor and `lockstep pref show --json` start from it).
 *
 * Pure.
 */
import { LockstepError } from '../util/errors.js';
import { receiversOf, type NotificationsConfig, type ReceiverKind } from './receivers.js';

/** `{"keep": "RECEIVER"}`: the value of that receiver's secret field, as it is now. */
export interface Keep {
  keep: string;
}

/** `raw` (a notifications section sent to the setter, unchecked) with every `keep` replaced by the value it names. */
export function withKeptSecrets(raw: unknown, current: NotificationsConfig | null): unknown {
  if (!isObject(raw)) return raw;
  const receivers = current === null ? [] : receiversOf(current);
  const kept = (v: unknown, at: string, kind: ReceiverKind): unknown => {
    if (!isKeep(v)) return v;
    const r = receivers.find((x) => x.name === v.keep);
    const configured = receivers.map((x) => x.name).join(', ') || 'none';
    if (r === undefined) throw keepError(at, `keeps the value of ${JSON.stringify(v.keep)}, which is not a configured receiver (configured: ${configured})`);
    if (r.kind !== kind) throw keepError(at, `keeps the value of ${r.name}, which is not a ${kind} receiver`);
    return r.kind === 'snmp' ? r.config.community : r.kind === 'call-home' || r.kind === 'webhook' ? r.config.url : v;
  };
  const out: Record<string, unknown> = { ...raw };
  const snmp = raw['snmp'];
  if (isObject(snmp) && Array.isArray(snmp['targets'])) {
    out['snmp'] = { ...snmp, targets: snmp['targets'].map((t, i) => (isObject(t) ? { ...t, community: kept(t['community'], `notifications.snmp.targets[${i}].community`, 'snmp') } : t)) };
  }
  const callHome = raw['callHome'];
  if (isObject(callHome)) out['callHome'] = { ...callHome, url: kept(callHome['url'], 'notifications.callHome.url', 'call-home') };
  const webhooks = raw['webhooks'];
  if (Array.isArray(webhooks)) out['webhooks'] = webhooks.map((w, i) => (isObject(w) ? { ...w, url: kept(w['url'], `notifications.webhooks[${i}].url`, 'webhook') } : w));
  return out;
}

/** The section in force as the setter takes it back unchanged: every secret as `{"keep": its receiver}`. */
export function editableForm(config: NotificationsConfig): Record<string, unknown> {
  // Each receiver is made from its part of the config (the same object): its name, found by that part.
  const names = new Map<object, string>(receiversOf(config).map((r) => [r.config, r.name]));
  const keep = (of: object): Keep => ({ keep: names.get(of)! });
  return {
    minSeverity: config.minSeverity,
    smtp: config.smtp === null ? null : { ...config.smtp, to: [...config.smtp.to] },
    snmp: config.snmp === null ? null : { targets: config.snmp.targets.map((t) => ({ host: t.host, port: t.port, community: keep(t) })) },
    callHome: config.callHome === null ? null : { url: keep(config.callHome), caFile: config.callHome.caFile },
    webhooks: config.webhooks.map((w) => ({ ...(w.name === undefined ? {} : { name: w.name }), url: keep(w), caFile: w.caFile })),
    retry: { ...config.retry },
  };
}

function isKeep(v: unknown): v is Keep {
  return isObject(v) && Object.keys(v).length === 1 && typeof v['keep'] === 'string';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** As the config's errors: the key in the message, the field below the section (the body's) in `fields`. */
function keepError(key: string, why: string): LockstepError {
  return new LockstepError('INVALID_SPEC', `preferences: '${key}' ${why}`, { field: key.slice('notifications.'.length) });
}
