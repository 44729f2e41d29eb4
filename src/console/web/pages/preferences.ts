/**
 * Preferences: what is set up for the pair as this host runs it (GET /v1/preferences) — the pair, the IP
 * settings (management, business, A-Links), the quorum servers with the active one, the host's date and
 * time with NTP as the kernel reports it, SplitSite's limits, the resync rate — and the notification
 * receivers with their latest delivery and test, each with a "Send test" button (platform managers).
 * The owner, the resync rate and the notifications have edit forms (platform managers: preference-forms.ts),
 * saved to the host's lockstepd.json and applied at once; the rest is read-only, and the page says how to
 * change it. The quorum server in use and the A-Link round trip follow the live status; the rest is fetched
 * on entry, and again when the live audit stream tells of a preference set anywhere (another console, the CLI).
 */
import { call, describe, download, type ApiResult } from '../api.js';
import { badge, facts, fill, h, section, table } from '../dom.js';
import { bytes, duration, time } from '../format.js';
import { store } from '../store.js';
import type { DeliveryOutcome, Notifications, Preferences, Receiver, TestAnswer } from '../types.js';
import { actionButton, can, notify, type Page } from '../ui.js';
import { editForms, type EditForms, type EditSection } from './preference-forms.js';

/** The audited operations after which the page fetches the preferences again. */
const SETTERS = new Set(['setOwnerPreference', 'setResyncPreference', 'setNotificationsPreference']);

export const preferencesPage: Page = {
  name: 'preferences',
  title: 'Preferences',
  needs: 'read-only',
  mount(root) {
    const how = h('p', { class: 'hint', id: 'preferences-how' });
    const body = h('div', { class: 'grid' }, section('Preferences', h('p', { class: 'empty' }, 'loading…')));
    fill(root, h('h1', {}, 'Preferences'), how, body);
    let prefs: Preferences | null = null;
    /** The host's clock minus this browser's when the answer came (about: the answer's travel is not known). */
    let skewMs = 0;
    let drawnStatus: unknown = undefined;
    /** The edit forms (platform managers only), kept across redraws so that what is typed stays. */
    let forms: EditForms | null = null;
    /** The newest audit entry seen: a newer setter's entry means the preferences changed. */
    let seenAudit = store.audit[0]?.id ?? null;
    const draw = (): void => {
      drawnStatus = store.status;
      if (prefs === null) return;
      fill(how, `To change: ${prefs.howToChange}. This host's config: ${prefs.configFile}.`);
      fill(body, ...cards(prefs, skewMs, reloadNotifications, forms));
    };
    /** The preferences as they are now: forms untouched (or just saved) are made again from them. */
    const adopt = (next: Preferences, saved: EditSection | null): void => {
      prefs = next;
      skewMs = Date.parse(next.clock.now) - Date.now();
      if (can('platform-manager')) {
        const fresh = editForms(next, adopt);
        forms = forms === null ? fresh : (Object.fromEntries((Object.keys(fresh) as EditSection[]).map((k) => [k, k === saved || !forms![k].touched() ? fresh[k] : forms![k]])) as EditForms);
      }
      draw();
    };
    const load = async (): Promise<void> => {
      const r = await call<Preferences>('GET', '/v1/preferences');
      if (!r.ok) return fill(body, section('Preferences', h('p', { class: 'form-error' }, describe(r))));
      adopt(r.body, null);
    };
    const reloadNotifications = async (): Promise<void> => {
      const r = await call<Notifications>('GET', '/v1/notifications');
      if (r.ok && prefs !== null) {
        prefs = { ...prefs, notifications: r.body };
        draw();
      }
    };
    void load();
    return {
      update: () => {
        const newest = store.audit[0] ?? null;
        if (newest !== null && newest.id !== seenAudit) {
          const seenAt = store.audit.findIndex((e) => e.id === seenAudit);
          const fresh = seenAt === -1 ? store.audit : store.audit.slice(0, seenAt);
          const changed = fresh.some((e) => e.result === 'ok' && SETTERS.has(e.operation ?? ''));
          seenAudit = newest.id;
          if (changed) return void load();
        }
        if (drawnStatus !== store.status) draw();
      },
    };
  },
};

function cards(p: Preferences, skewMs: number, reloadNotifications: () => Promise<void>, forms: EditForms | null): HTMLElement[] {
  const n = p.network;
  const core = store.status?.core ?? null;
  // The live status knows which quorum server the pair asks now; the fetched view knew it when fetched.
  const activeQuorum = core ? core.activeQuorum : p.quorum.active;
  const rttMs = core ? core.rttMs : p.splitsite.alinkRttMs;
  const ntp = p.clock.ntp;
  const o = p.owner;
  const owner = section(
    'Owner information',
    o === null
      ? h('p', { class: 'empty', id: 'owner' }, 'Not given: who owns and runs the system, and where it stands (name, contact, email, phone, site).')
      : h(
          'div',
          { id: 'owner' },
          facts(([['name', o.name], ['contact', o.contact], ['email', o.email], ['phone', o.phone], ['site', o.site]] as [string, string | null][]).flatMap(([k, v]): [string, string][] => (v === null ? [] : [[k, v]]))),
        ),
    forms?.owner.element ?? null,
  );
  const pair = section(
    'Pair',
    facts([
      ['this host', p.host],
      ['pair', p.pair.id],
      ['peer', p.pair.peer],
      ['tie-break winner', `${p.pair.tiebreakWinner} (keeps its VMs when the A-Links fail and no quorum server answers)`],
    ]),
  );
  const network = section(
    'IP settings',
    facts([
      ['management', `${n.management.interface ?? 'interface not checked'}${n.management.apiAddress === null ? '; no management API' : `; management API on ${n.management.apiAddress}:${n.management.apiPort}`}`],
      ['business', `bridge ${n.business.bridge}, uplink ${n.business.interface}`],
      ...n.alink.map((a): [string, string] => [a.name, `${a.local} → ${a.peer}, port ${a.port} (broadcast ${a.broadcast})`]),
      ['data ports', `replication ${n.dataPorts.replication}, migration ${n.dataPorts.migration}, FT checkpoints ${n.dataPorts.checkpoint} (on the A-Link addresses)`],
    ]),
  );
  const quorum = section(
    'Quorum servers',
    table(
      ['server', 'role', 'address', 'in use'],
      p.quorum.servers.map((q) => [q.id, q.role, `${q.address}:${q.port}`, q.id === activeQuorum ? badge('active', 'good') : '—']),
      `No quorum server: ${p.pair.tiebreakWinner} keeps its VMs when the A-Links fail.`,
      { id: 'quorum-servers' },
    ),
  );
  const clock = section(
    'Date and time',
    facts([
      ['host clock', `${p.clock.now} (UTC)`],
      ['time zone', `${p.clock.timeZone} (UTC${offset(p.clock.utcOffsetMinutes)})`],
      ['NTP', h('span', { id: 'ntp' }, ntp.synchronized === null ? badge('unknown', 'none') : ntp.synchronized ? badge('synchronised', 'good') : badge('not synchronised', 'warn'), ` ${ntp.detail}`)],
      ['error bound', ntp.maxErrorMs === null ? '—' : `at most ${duration(ntp.maxErrorMs)}, estimated ${duration(ntp.estimatedErrorMs)}`],
      ['this browser', `about ${duration(Math.abs(skewMs))} ${skewMs >= 0 ? 'behind' : 'ahead of'} the host`],
    ]),
    h('p', { class: 'hint' }, `NTP as the ${ntp.source} reports it: set by the NTP daemon (chrony, ntpd, systemd-timesyncd) that disciplines the host's clock.`),
  );
  const splitsite = section(
    'SplitSite',
    facts([
      ['FT', `runs up to ${p.splitsite.ftRttLimitMs} ms A-Link round trip`],
      ['HA', `runs up to ${p.splitsite.haRttLimitMs} ms`],
      ['A-Link round trip now', rttMs === null ? '—' : `${rttMs.toFixed(2)} ms`],
    ]),
    h('p', { class: 'hint' }, 'A VM whose protection needs a shorter round trip than the A-Link has is downgraded until it is short again.'),
  );
  const resync = section(
    'Resync rate',
    h(
      'div',
      { id: 'resync' },
      facts([
        ['at most', p.resync.maxMiBps === null ? 'no limit' : `${p.resync.maxMiBps} MiB/s`],
        ['while the guest does disk I/O', p.resync.busyMiBps === null ? 'no limit' : `${p.resync.busyMiBps} MiB/s`],
      ]),
    ),
    forms?.resync.element ?? null,
    forms === null ? null : h('p', { class: 'hint' }, 'A resync copying now takes a new rate at once.'),
  );
  const notifications = notificationsCard(p.notifications, reloadNotifications);
  if (forms !== null) notifications.append(h('h3', {}, 'Edit the notifications'), forms.notifications.element);
  notifications.classList.add('wide');
  return [notifications, remoteSupportCard(p), owner, pair, network, quorum, clock, splitsite, resync];
}

function notificationsCard(n: Notifications, reload: () => Promise<void>): HTMLElement {
  if (n.state === 'off') return section('Notifications', h('p', { class: 'empty' }, 'None configured on this host (e-Alerts, SNMP traps, Call Home, webhooks).'));
  const head =
    n.state === 'failed'
      ? h('p', { class: 'form-error' }, `Configured but not running: ${n.error}`)
      : h('p', {}, `Alerts of severity ${n.minSeverity} and above; a failed delivery is retried after ${period(n.retry!.initialMs)}, doubling up to ${period(n.retry!.maxMs)}, and given up after ${period(n.retry!.giveUpAfterMs)}.`);
  const sendTest = (name: string | null): Promise<null> =>
    call<TestAnswer>('POST', name === null ? '/v1/notifications/test' : `/v1/notifications/${encodeURIComponent(name)}/test`).then((r) => {
      reportTest(name, r);
      void reload();
      // The notice is written here: the button's own would only say "done".
      return null;
    });
  return section(
    'Notifications',
    head,
    table(
      ['receiver', 'kind', 'target', 'waiting', 'last delivery', 'last test', ''],
      n.receivers.map((r) => [
        r.name,
        r.kind,
        r.target,
        r.pending === null ? '—' : String(r.pending),
        lastDelivery(r),
        r.lastTest === null ? '—' : h('span', {}, badge(r.lastTest.outcome.ok ? 'delivered' : 'failed', r.lastTest.outcome.ok ? 'good' : 'bad'), ` ${time(r.lastTest.at)}`, h('br', {}), h('small', {}, outcomeText(r.lastTest.outcome))),
        h('div', { class: 'actions' }, actionButton('Send test', 'platform-manager', 'send-test', () => sendTest(r.name), { 'data-receiver': r.name })),
      ]),
      'No receivers.',
      { id: 'notification-receivers' },
    ),
    h('div', { class: 'actions' }, actionButton('Send test to all', 'platform-manager', 'send-test-all', () => sendTest(null))),
    h('p', { class: 'hint' }, 'A test goes through each receiver’s own delivery, now, and is not queued: real alerts are not held up, and a failed test is not retried.'),
  );
}

/** A support bundle is gathered in one request: a few seconds, more on a loaded host. */
const BUNDLE_TIMEOUT_MS = 120_000;

/**
 * Remote support: Call Home (the alerts this host reports to its support endpoint, if configured) and the
 * support bundle, downloaded for a support case (platform managers; the download is audited).
 */
function remoteSupportCard(p: Preferences): HTMLElement {
  const callHome = p.notifications.receivers.find((r) => r.kind === 'call-home') ?? null;
  const makeBundle = async (): Promise<null> => {
    const r = await download('POST', '/v1/support/bundle', BUNDLE_TIMEOUT_MS);
    if (r.ok) notify(`Support bundle: ${r.body.fileName} (${bytes(r.body.bytes)}) downloaded`, 'good');
    else notify(`Support bundle: ${describe(r)}`, 'bad');
    return null;
  };
  return section(
    'Remote support',
    facts([
      ['Call Home', callHome === null ? "not configured: add notifications.callHome to lockstepd's config" : `${callHome.target}; last report ${callHome.lastDelivery === null ? 'none yet' : `${callHome.lastDelivery.state} ${time(callHome.lastDelivery.at)}`}`],
    ]),
    h('div', { class: 'actions' }, actionButton('Download support bundle', 'platform-manager', 'support-bundle', makeBundle)),
    h('p', { class: 'hint' }, `This host's status, VMs, volumes, networks, sensors, preferences, notifications and event log, its daemon's recent log, its VMs' console logs and versions, as one .tar.gz — no secret in it. Each host makes its own: download the peer's from its console.`),
  );
}

function lastDelivery(r: Receiver): HTMLElement | string {
  const d = r.lastDelivery;
  if (d === null) return '—';
  const tone = d.state === 'delivered' ? 'good' : d.state === 'retrying' ? 'warn' : 'bad';
  const why = d.state === 'delivered' ? d.detail : d.state === 'retrying' ? `${d.lastError ?? ''}; next attempt ${time(d.nextAttemptAt)}` : d.detail;
  return h('span', {}, badge(d.state, tone), ` ${d.code} ${time(d.at)}`, h('br', {}), h('small', {}, why ?? ''));
}

/** The outcome on the notice line: each receiver's, or the API's refusal. */
function reportTest(name: string | null, r: ApiResult<TestAnswer>): void {
  const what = name === null ? 'Send test' : `Send test to ${name}`;
  if (!r.ok) return notify(`${what}: ${describe(r)}`, 'bad');
  const a = r.body;
  const tone = a.failed === 0 ? 'good' : 'bad';
  if (name !== null) return notify(`${what}: ${a.results.map((x) => outcomeText(x.outcome)).join('; ')}`, tone);
  const each = a.results.map((x) => `${x.receiver} ${outcomeText(x.outcome)}`).join('; ');
  notify(`${what}: ${a.delivered} of ${a.delivered + a.failed} delivered: ${each}`, tone);
}

/** `delivered (250 ok)`, or `failed at RCPT TO <x>: rejected (reply: 550 …)`, as the CLI and the log say it. */
function outcomeText(o: DeliveryOutcome): string {
  if (o.ok) return `delivered (${o.detail})`;
  return `failed at ${o.step}: ${o.error}${o.reply === null ? '' : ` (reply: ${o.reply})`}`;
}

/** A configured period in the unit it was likely set in: "5 s", "10 min", "7 days". */
function period(ms: number): string {
  for (const [unit, size] of [['days', 86_400_000], ['h', 3_600_000], ['min', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${ms === size && unit === 'days' ? 'day' : unit}`;
  }
  return duration(ms);
}

function offset(minutes: number): string {
  const a = Math.abs(minutes);
  return `${minutes < 0 ? '-' : '+'}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}
