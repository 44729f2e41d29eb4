/**
 * How `lockstep pref show` and `lockstep notification list|test` show a daemon's answers: the preferences
 * in sections (owner, network, quorum servers, clock, SplitSite, resync, notifications), the receivers with their
 * latest outcomes, and each receiver's "send test" outcome. Pure: the tests feed fixed answers.
 */
import type { NotificationTestAnswer, PreferencesView } from '../daemon/preference-routes.js';
import type { NotificationsView, ReceiverView } from '../notify/receiver-view.js';
import { describeOutcome } from '../notify/outcome.js';
import { keyValues, table } from './output.js';
import { shortTime } from './user-command.js';

export function renderPreferences(p: PreferencesView): string {
  const n = p.network;
  const section = (title: string, rows: [string, string][]): string => `${title}\n${indent(keyValues(rows))}`;
  const clock = p.clock;
  const ntp = clock.ntp;
  const ntpWord = ntp.synchronized === null ? 'unknown' : ntp.synchronized ? 'synchronised' : 'not synchronised';
  const errors = ntp.maxErrorMs === null ? '' : `; error at most ${ms(ntp.maxErrorMs)}, estimated ${ms(ntp.estimatedErrorMs ?? 0)}`;
  return [
    `preferences of ${p.host} (pair ${p.pair.id} with ${p.pair.peer}), as lockstepd runs them, from ${p.configFile}`,
    `to change: ${p.howToChange}`,
    '',
    section(settable(p, 'owner'), ownerRows(p.owner)),
    section('network', [
      ['management', `${n.management.interface ?? 'interface not checked'}${n.management.apiAddress === null ? ', no management API' : `, management API on ${n.management.apiAddress}:${n.management.apiPort}`}`],
      ['business', `bridge ${n.business.bridge}, uplink ${n.business.interface}`],
      ...n.alink.map((a): [string, string] => [a.name, `${a.local} → ${a.peer} port ${a.port} (broadcast ${a.broadcast})`]),
      ['data ports', `replication ${n.dataPorts.replication}, migration ${n.dataPorts.migration}, FT checkpoints ${n.dataPorts.checkpoint} (on the A-Link addresses)`],
    ]),
    section(
      'quorum servers',
      p.quorum.servers.length === 0
        ? [['none', `with no quorum server, ${p.pair.tiebreakWinner} keeps its VMs when the A-Links fail`]]
        : p.quorum.servers.map((q): [string, string] => [q.id, `${q.role}, ${q.address}:${q.port}${q.active ? ', active' : ''}`]),
    ),
    section('clock', [
      ['now', `${shortTime(clock.now)} UTC`],
      ['time zone', `${clock.timeZone} (UTC${offset(clock.utcOffsetMinutes)})`],
      ['NTP', `${ntpWord}, says the ${ntp.source}: ${ntp.detail}${errors}`],
    ]),
    section('SplitSite', [
      ['FT', `up to ${p.splitsite.ftRttLimitMs} ms A-Link round trip`],
      ['HA', `up to ${p.splitsite.haRttLimitMs} ms`],
      ['A-Link now', p.splitsite.alinkRttMs === null ? '-' : `${p.splitsite.alinkRttMs.toFixed(2)} ms`],
    ]),
    section(settable(p, 'resync'), resyncRows(p.resync)),
    renderNotifications(p.host, p.notifications),
  ].join('\n');
}

/** What `lockstep pref set SECTION` answers: the section as the host now runs it. */
export function renderSetAnswer(p: PreferencesView, section: 'owner' | 'resync' | 'notifications'): string {
  const head = `${section} of ${p.host} set: written to ${p.configFile} and applied`;
  switch (section) {
    case 'owner':
      return `${head}\n${indent(keyValues(ownerRows(p.owner)))}`;
    case 'resync':
      return `${head}\n${indent(keyValues(resyncRows(p.resync)))}`;
    case 'notifications':
      return `${head}\n${renderNotifications(p.host, p.notifications)}`;
  }
}

function resyncRows(r: PreferencesView['resync']): [string, string][] {
  return [
    ['rate', r.maxMiBps === null ? 'no limit' : `at most ${r.maxMiBps} MiB/s`],
    ['while the guest is busy', r.busyMiBps === null ? 'no limit' : `at most ${r.busyMiBps} MiB/s`],
  ];
}

/** A section's title, saying how to set it when the daemon changes it while running. */
function settable(p: PreferencesView, section: 'owner' | 'resync'): string {
  return p.editable[section] ? `${section} (lockstep pref set ${section})` : section;
}

/** The receivers with their latest delivery and test. */
export function renderNotifications(host: string, n: NotificationsView): string {
  if (n.state === 'off') return `notifications: none configured on ${host}`;
  const head =
    n.state === 'failed'
      ? `notifications: configured on ${host} but not running: ${n.error}`
      : `notifications: on, minimum severity ${n.minSeverity}, retried after ${ms(n.retry!.initialMs)} doubling to ${ms(n.retry!.maxMs)}, given up after ${ms(n.retry!.giveUpAfterMs)}`;
  return `${head}\n${indent(table(['receiver', 'target', 'pending', 'last delivery', 'last test'], n.receivers.map(receiverRow)))}`;
}

function receiverRow(r: ReceiverView): string[] {
  const d = r.lastDelivery;
  const last =
    d === null
      ? '-'
      : `${d.state} ${d.code} ${shortTime(d.at)}${d.state === 'delivered' ? ` (${d.detail})` : d.state === 'retrying' ? `: ${d.lastError}` : `: ${d.detail}`}`;
  const test = r.lastTest === null ? '-' : `${shortTime(r.lastTest.at)} ${describeOutcome(r.lastTest.outcome)}`;
  return [r.name, r.target, r.pending === null ? '-' : String(r.pending), last, test];
}

/** Each receiver's outcome, then the count; a failure names its step, error and the receiver's reply. */
export function renderTestAnswer(a: NotificationTestAnswer): string {
  const rows = a.results.map((r) => [r.receiver, r.target, `${describeOutcome(r.outcome)} in ${ms(r.durationMs)}`]);
  const total = a.delivered + a.failed;
  const verdict = a.failed === 0 ? `every receiver took it (${total})` : `${a.failed} of ${total} receiver${total === 1 ? '' : 's'} failed`;
  return `test notification from ${a.host}: ${verdict}\n${indent(table(['receiver', 'target', 'outcome'], rows))}`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

function ms(v: number): string {
  if (v < 1) return `${v} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 120_000) return `${Math.round(v / 100) / 10} s`;
  if (v < 2 * 3_600_000) return `${Math.round(v / 60_000)} min`;
  if (v < 2 * 86_400_000) return `${Math.round(v / 3_600_000)} h`;
  return `${Math.round(v / 86_400_000)} days`;
}

function offset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const a = Math.abs(minutes);
  return `${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

function ownerRows(o: PreferencesView['owner']): [string, string][] {
  if (o === null) return [['not given', 'lockstep pref set owner --name TEXT [--contact, --email, --phone, --site]']];
  const rows: [string, string | null][] = [['name', o.name], ['contact', o.contact], ['email', o.email], ['phone', o.phone], ['site', o.site]];
  return rows.flatMap(([k, v]): [string, string][] => (v === null ? [] : [[k, v]]));
}
