/**
 * The preferences and notifications routes: what an operator set up for the pair as this host's lockstepd
 * runs it (`GET /v1/preferences`), the setters of what may change while it runs (`PUT /v1/preferences/owner`,
 * `/notifications`, `/resync`: live-preferences.ts writes lockstepd.json and applies the change, no restart),
 * the notification receivers with their latest outcomes (`GET /v1/notifications`), and "send test" to every
 * receiver or one (`POST /v1/notifications/test`, `POST /v1/notifications/{name}/test`). Part of the resource
 * routes (`RESOURCE_ROUTES` in api.ts), so the local socket and the management API serve the same objects;
 * the setters and the tests are audited like every change, the section as the target.
 *
 * The rest stays read-only, and the view says per section what is editable and how the rest is changed:
 * settings of the pair (quorum servers, SplitSite's limits, timing) must be the same in both hosts' configs
 * and are the decision core's, fixed while it runs; addresses and ports are bound by running listeners and
 * streams. A setter for those would have to restart the daemon, which stops its VMs (docs/api.md).
 * No secret is in the view: no pairing secret, no password, no SNMP community, no webhook token.
 */
import { LockstepError } from '../util/errors.js';
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import { notificationsView, testResultView, type NotificationsView, type TestResultView } from '../notify/receiver-view.js';
import { editableForm } from '../notify/kept-secrets.js';
import type { ApiContext } from './api.js';
import type { OwnerInfo } from './config.js';
import type { HostClock } from './host-clock.js';
import type { LivePreferences } from './live-preferences.js';

/** What these routes read from the running daemon, and change in it. */
export interface PreferencesContext {
  live: LivePreferences;
  clock(): Promise<HostClock>;
}

/** Each section of the view, and whether `PUT /v1/preferences/{section}` changes it while lockstepd runs. */
export interface EditableSections {
  owner: true;
  notifications: true;
  resync: true;
  network: false;
  quorum: false;
  splitsite: false;
  pair: false;
}

export const EDITABLE_SECTIONS: EditableSections = { owner: true, notifications: true, resync: true, network: false, quorum: false, splitsite: false, pair: false };

/** `GET /v1/preferences`'s answer (the CLI renders it). */
export interface PreferencesView {
  host: string;
  pair: { id: string; peer: string; tiebreakWinner: string };
  /** Who owns and runs the system, as the config says; null when it does not. */
  owner: OwnerInfo | null;
  configFile: string;
  editable: EditableSections;
  /** How the sections that are not editable are changed. */
  howToChange: string;
  /** The notifications section as `PUT /v1/preferences/notifications` takes it back unchanged, secrets as `{"keep": RECEIVER}`; null: none. */
  notificationsConfig: Record<string, unknown> | null;
  network: {
    management: { interface: string | null; apiAddress: string | null; apiPort: number | null };
    business: { bridge: string; interface: string };
    alink: { name: string; local: string; peer: string; port: number; broadcast: string }[];
    dataPorts: { replication: number; migration: number; checkpoint: number };
  };
  quorum: { active: string | null; servers: { id: string; role: 'preferred' | 'alternate'; address: string; port: number; active: boolean }[] };
  clock: HostClock;
  notifications: NotificationsView;
  splitsite: { ftRttLimitMs: number; haRttLimitMs: number; alinkRttMs: number | null };
  resync: { maxMiBps: number | null; busyMiBps: number | null };
}

/** `POST /v1/notifications/test`'s answer. */
export interface NotificationTestAnswer {
  host: string;
  results: TestResultView[];
  delivered: number;
  failed: number;
}

/** How the sections that are not editable are changed, as the view and the docs say it. */
export const HOW_TO_CHANGE =
  "owner, notifications and resync: PUT /v1/preferences/SECTION (lockstep pref set), applied at once and written to lockstepd's config file; the rest: edit lockstepd's config file and restart lockstepd (a restart stops this host's VMs: enter maintenance first, so its protected VMs move to the peer); settings of the pair (quorum servers, SplitSite limits, timing) belong in both hosts' configs, changed one host at a time";

const MIB = 1024 * 1024;

const NULLABLE_STRING: Schema = { type: ['string', 'null'] };
const NULLABLE_NUMBER: Schema = { type: ['number', 'null'] };

const OUTCOME_SCHEMA: Schema = {
  type: 'object',
  required: ['ok'],
  description: 'delivered: {ok: true, detail: the receiver’s acceptance}; failed: {ok: false, step, error, reply: the receiver’s own reply or null}',
  properties: { ok: { type: 'boolean' }, detail: { type: 'string' }, step: { type: 'string' }, error: { type: 'string' }, reply: NULLABLE_STRING },
};

const RECEIVER_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'kind', 'target', 'settings', 'pending', 'lastDelivery', 'lastTest'],
  properties: {
    name: { type: 'string', description: 'smtp, snmp:HOST:PORT, call-home, webhook:NAME (its name in the config) or webhook:N (its place there, from 1)' },
    kind: { type: 'string', enum: ['smtp', 'snmp', 'call-home', 'webhook'] },
    target: { type: 'string', description: 'where it sends, without secrets' },
    settings: { type: 'object', description: 'its config, without secrets: no password (its file’s path only), no SNMP community, no URL path or query' },
    pending: { type: ['integer', 'null'], description: 'deliveries waiting for it (null: the notifier does not run)' },
    lastDelivery: {
      type: ['object', 'null'],
      description: 'its latest outcome in the outbox',
      properties: {
        alert: { type: 'string' },
        code: { type: 'string' },
        state: { type: 'string', enum: ['delivered', 'retrying', 'abandoned'] },
        attempts: { type: 'integer' },
        at: { type: 'string', format: 'date-time' },
        detail: NULLABLE_STRING,
        lastError: NULLABLE_STRING,
        nextAttemptAt: NULLABLE_STRING,
      },
    },
    lastTest: {
      type: ['object', 'null'],
      description: 'its latest "send test" since lockstepd started',
      properties: { at: { type: 'string', format: 'date-time' }, durationMs: { type: 'integer' }, outcome: OUTCOME_SCHEMA },
    },
  },
};

const NOTIFICATIONS_SCHEMA: Schema = {
  type: 'object',
  required: ['state', 'error', 'minSeverity', 'retry', 'receivers'],
  properties: {
    state: { type: 'string', enum: ['off', 'failed', 'on'], description: 'off: none configured; failed: configured, but the outbox could not be opened (error); on: running' },
    error: NULLABLE_STRING,
    minSeverity: { type: ['string', 'null'], enum: ['info', 'warning', 'critical', null] },
    retry: { type: ['object', 'null'], properties: { initialMs: { type: 'integer' }, maxMs: { type: 'integer' }, giveUpAfterMs: { type: 'integer' } } },
    receivers: { type: 'array', items: RECEIVER_SCHEMA },
  },
};

const TEST_SCHEMA: Schema = {
  type: 'object',
  required: ['host', 'results', 'delivered', 'failed'],
  properties: {
    host: { type: 'string' },
    results: {
      type: 'array',
      items: {
        type: 'object',
        required: ['receiver', 'kind', 'target', 'at', 'durationMs', 'outcome'],
        properties: { receiver: { type: 'string' }, kind: { type: 'string' }, target: { type: 'string' }, at: { type: 'string', format: 'date-time' }, durationMs: { type: 'integer' }, outcome: OUTCOME_SCHEMA },
      },
    },
    delivered: { type: 'integer', description: 'receivers that accepted the test' },
    failed: { type: 'integer', description: 'receivers that did not: their outcome says at which step and why' },
  },
};

const PREFERENCES_SCHEMA: Schema = {
  type: 'object',
  required: ['host', 'pair', 'owner', 'configFile', 'editable', 'howToChange', 'notificationsConfig', 'network', 'quorum', 'clock', 'notifications', 'splitsite', 'resync'],
  properties: {
    host: { type: 'string' },
    pair: { type: 'object', required: ['id', 'peer', 'tiebreakWinner'], properties: { id: { type: 'string' }, peer: { type: 'string' }, tiebreakWinner: { type: 'string' } } },
    owner: {
      type: ['object', 'null'],
      description: "the config's owner section: who owns and runs the system, and where it stands; null when not configured",
      properties: { name: { type: 'string' }, contact: NULLABLE_STRING, email: NULLABLE_STRING, phone: NULLABLE_STRING, site: NULLABLE_STRING },
    },
    configFile: { type: 'string' },
    editable: {
      type: 'object',
      description: 'each section: true when PUT /v1/preferences/SECTION changes it while lockstepd runs; false: howToChange says how',
      required: Object.keys(EDITABLE_SECTIONS),
      properties: Object.fromEntries(Object.keys(EDITABLE_SECTIONS).map((k) => [k, { type: 'boolean' }])),
    },
    howToChange: { type: 'string' },
    notificationsConfig: {
      type: ['object', 'null'],
      description: 'the notifications section as PUT /v1/preferences/notifications takes it back unchanged: each secret as {"keep": RECEIVER}; null: none configured',
    },
    network: {
      type: 'object',
      required: ['management', 'business', 'alink', 'dataPorts'],
      properties: {
        management: {
          type: 'object',
          required: ['interface', 'apiAddress', 'apiPort'],
          properties: { interface: NULLABLE_STRING, apiAddress: { ...NULLABLE_STRING, description: 'the management API’s address (null: not served)' }, apiPort: { type: ['integer', 'null'] } },
        },
        business: { type: 'object', required: ['bridge', 'interface'], properties: { bridge: { type: 'string' }, interface: { type: 'string' } } },
        alink: {
          type: 'array',
          items: {
            type: 'object',
            required: ['name', 'local', 'peer', 'port', 'broadcast'],
            properties: { name: { type: 'string' }, local: { type: 'string' }, peer: { type: 'string' }, port: { type: 'integer' }, broadcast: { type: 'string' } },
          },
        },
        dataPorts: { type: 'object', required: ['replication', 'migration', 'checkpoint'], properties: { replication: { type: 'integer' }, migration: { type: 'integer' }, checkpoint: { type: 'integer' } } },
      },
    },
    quorum: {
      type: 'object',
      required: ['active', 'servers'],
      properties: {
        active: { ...NULLABLE_STRING, description: 'the server the pair asks now (null: none, or not paired yet)' },
        servers: {
          type: 'array',
          items: {
            type: 'object',
            required: ['id', 'role', 'address', 'port', 'active'],
            properties: { id: { type: 'string' }, role: { type: 'string', enum: ['preferred', 'alternate'] }, address: { type: 'string' }, port: { type: 'integer' }, active: { type: 'boolean' } },
          },
        },
      },
    },
    clock: {
      type: 'object',
      required: ['now', 'timeZone', 'utcOffsetMinutes', 'ntp'],
      properties: {
        now: { type: 'string', format: 'date-time' },
        timeZone: { type: 'string' },
        utcOffsetMinutes: { type: 'integer' },
        ntp: {
          type: 'object',
          required: ['synchronized', 'source', 'detail', 'maxErrorMs', 'estimatedErrorMs'],
          properties: {
            synchronized: { type: ['boolean', 'null'], description: 'the kernel’s word (adjtimex): an NTP daemon keeps the clock synchronised; null: unknown, detail says why' },
            source: { type: 'string' },
            detail: { type: 'string' },
            maxErrorMs: NULLABLE_NUMBER,
            estimatedErrorMs: NULLABLE_NUMBER,
          },
        },
      },
    },
    notifications: NOTIFICATIONS_SCHEMA,
    splitsite: {
      type: 'object',
      required: ['ftRttLimitMs', 'haRttLimitMs', 'alinkRttMs'],
      properties: { ftRttLimitMs: { type: 'number' }, haRttLimitMs: { type: 'number' }, alinkRttMs: { ...NULLABLE_NUMBER, description: 'the A-Link round trip the core measures now' } },
    },
    resync: {
      type: 'object',
      required: ['maxMiBps', 'busyMiBps'],
      properties: { maxMiBps: { ...NULLABLE_NUMBER, description: 'null: no limit' }, busyMiBps: { ...NULLABLE_NUMBER, description: 'while the guest does disk I/O; null: no limit' } },
    },
  },
};

const SETTER_DESCRIPTION =
  "The body is the config file's section, checked as lockstepd checks the file at start (INVALID_SPEC naming the field). It is written to this host's lockstepd.json first (atomically, only that section), then applied: no daemon or VM restart. A config file edited by hand since lockstepd read it is not overwritten (CONFIG_CHANGED); a failed write (CONFIG_WRITE) changes nothing.";
const SETTER_ERRORS = ['INVALID_SPEC', 'CONFIG_CHANGED', 'CONFIG_WRITE'] as const;

const OWNER_TEXT: Schema = { type: ['string', 'null'], description: 'one line, at most 200 characters; null or absent: not given' };
const OWNER_BODY: Schema = {
  type: ['object', 'null'],
  description: "the owner section: name required, the rest optional; null removes the section",
  properties: { name: { type: 'string', description: 'one line, at most 200 characters' }, contact: OWNER_TEXT, email: OWNER_TEXT, phone: OWNER_TEXT, site: OWNER_TEXT },
  additionalProperties: false,
};
const RESYNC_MIBPS: Schema = { type: ['number', 'null'], description: 'MiB/s above 0, at most 1000000; null: no limit; absent: the default' };
const RESYNC_BODY: Schema = {
  type: 'object',
  description: 'the resync section (defaults: maxMiBps null, busyMiBps 64)',
  properties: { maxMiBps: RESYNC_MIBPS, busyMiBps: { ...RESYNC_MIBPS, description: 'while the guest does disk I/O; MiB/s, null: no limit; absent: the default (64)' } },
  additionalProperties: false,
};
// Only the field names: the section is checked by the config's own parser, which never echoes a secret in
// its errors, while this schema's quote the value they refuse (a list of webhooks sent for the section).
const NOTIFICATIONS_BODY: Schema = {
  description: 'the notifications section, an object (docs/notifications.md); null removes it (no notifications)',
  properties: {
    minSeverity: { enum: ['info', 'warning', 'critical'] },
    smtp: { description: 'the SMTP relay and recipients, or null' },
    snmp: { description: '{targets: [{host, port, community}]}; community may be {"keep": "snmp:HOST:PORT"}' },
    callHome: { description: '{url, caFile}; url may be {"keep": "call-home"}' },
    webhooks: { description: '[{url, caFile, name}]; url may be {"keep": "webhook:NAME"} or {"keep": "webhook:N"}' },
    retry: { description: '{initialMs, maxMs, giveUpAfterMs}' },
  },
  additionalProperties: false,
};

/** A receiver's name as a path parameter: `snmp:HOST:PORT` may be long (a DNS name). */
const RECEIVER_PARAMS = { name: { type: 'string', minLength: 1, maxLength: 300, description: 'smtp, snmp:HOST:PORT, call-home, webhook:NAME, webhook:N' } } as const;

export const PREFERENCE_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'getPreferences',
    method: 'GET',
    path: '/preferences',
    tag: 'preferences',
    summary: 'what is set up for the pair, as this host runs it: addresses, quorum servers, clock, notifications, SplitSite, resync rate',
    description: `which sections are editable is in \`editable\`; ${HOW_TO_CHANGE}`,
    access: 'read-only',
    response: { status: 200, description: 'the preferences', schema: PREFERENCES_SCHEMA },
    handler: async (ctx) => ({ status: 200, body: await preferencesBody(ctx) }),
  },
  {
    operationId: 'setOwnerPreference',
    method: 'PUT',
    path: '/preferences/owner',
    tag: 'preferences',
    summary: "sets who owns and runs the system (the config's owner section; null removes it): written to lockstepd.json, shown at once",
    description: SETTER_DESCRIPTION,
    access: 'platform-manager',
    auditTarget: 'owner',
    body: OWNER_BODY,
    bodyError: 'INVALID_SPEC',
    response: { status: 200, description: 'the preferences with the new owner', schema: PREFERENCES_SCHEMA },
    errors: SETTER_ERRORS,
    handler: async (ctx, { body }) => {
      await ctx.preferences.live.setOwner(body);
      return { status: 200, body: await preferencesBody(ctx) };
    },
  },
  {
    operationId: 'setResyncPreference',
    method: 'PUT',
    path: '/preferences/resync',
    tag: 'preferences',
    summary: "sets the resync rate (the config's resync section): the mirrors copying now take it at once, the next ones start with it",
    description: SETTER_DESCRIPTION,
    access: 'platform-manager',
    auditTarget: 'resync',
    body: RESYNC_BODY,
    bodyError: 'INVALID_SPEC',
    response: { status: 200, description: 'the preferences with the new rate', schema: PREFERENCES_SCHEMA },
    errors: SETTER_ERRORS,
    handler: async (ctx, { body }) => {
      await ctx.preferences.live.setResync(body);
      return { status: 200, body: await preferencesBody(ctx) };
    },
  },
  {
    operationId: 'setNotificationsPreference',
    method: 'PUT',
    path: '/preferences/notifications',
    tag: 'preferences',
    summary: "sets the notification receivers and policy (the config's notifications section; null: none): the notifier takes them at once, no waiting delivery lost",
    description: `${SETTER_DESCRIPTION} Secrets need not be sent again: each secret field (an SNMP target's community, Call Home's and a webhook's url) may be {"keep": RECEIVER}, RECEIVER a receiver's name as GET /v1/notifications shows it; notificationsConfig in GET /v1/preferences is the section in this form.`,
    access: 'platform-manager',
    auditTarget: 'notifications',
    body: NOTIFICATIONS_BODY,
    bodyError: 'INVALID_SPEC',
    response: { status: 200, description: 'the preferences with the new notifications', schema: PREFERENCES_SCHEMA },
    errors: SETTER_ERRORS,
    handler: async (ctx, { body }) => {
      await ctx.preferences.live.setNotifications(body);
      return { status: 200, body: await preferencesBody(ctx) };
    },
  },
  {
    operationId: 'listNotifications',
    method: 'GET',
    path: '/notifications',
    tag: 'preferences',
    summary: 'the notification receivers, each with its latest delivery and "send test" outcome (no secrets)',
    access: 'read-only',
    response: { status: 200, description: 'the receivers', schema: NOTIFICATIONS_SCHEMA },
    handler: async (ctx) => ({ status: 200, body: notificationsView(ctx.preferences.live.notifications.state()) }),
  },
  {
    operationId: 'testNotifications',
    method: 'POST',
    path: '/notifications/test',
    tag: 'preferences',
    summary: '"send test" to every receiver: a test notification through each one\'s own delivery, now, side by side',
    description: 'answered once every receiver has an outcome (at most 15 s each): 200 with each outcome, whether delivered or not; not queued in the outbox',
    access: 'platform-manager',
    response: { status: 200, description: 'each receiver’s outcome', schema: TEST_SCHEMA },
    errors: ['NOTIFICATIONS_OFF'],
    handler: async (ctx) => ({ status: 200, body: await sendTests(ctx, null) }),
  },
  {
    operationId: 'testNotification',
    method: 'POST',
    path: '/notifications/{name}/test',
    tag: 'preferences',
    summary: '"send test" to one receiver',
    access: 'platform-manager',
    params: RECEIVER_PARAMS,
    response: { status: 200, description: 'its outcome', schema: TEST_SCHEMA },
    errors: ['NOTIFICATIONS_OFF', 'UNKNOWN_RECEIVER'],
    handler: async (ctx, { params }) => ({ status: 200, body: await sendTests(ctx, params['name']!) }),
  },
];

async function sendTests(ctx: ApiContext, name: string | null): Promise<NotificationTestAnswer> {
  const n = ctx.preferences.live.notifications.state();
  if (n.state === 'off') throw new LockstepError('NOTIFICATIONS_OFF', `${ctx.host} sends no notifications: its config has no notifications section (docs/notifications.md)`, { host: ctx.host });
  if (n.state === 'failed') throw new LockstepError('NOTIFICATIONS_OFF', `${ctx.host} sends no notifications: they did not start (${n.error})`, { host: ctx.host });
  const { notifier } = n;
  if (name !== null && notifier.receiver(name) === null) {
    throw new LockstepError('UNKNOWN_RECEIVER', `no receiver named ${JSON.stringify(name)} on ${ctx.host} (receivers: ${notifier.receivers().map((r) => r.name).join(', ')})`, { receiver: name });
  }
  const runs = await notifier.sendTests(name === null ? null : [name]);
  const results = runs.map((run) => testResultView(notifier.receiver(run.receiver)!, run));
  const delivered = results.filter((r) => r.outcome.ok).length;
  return { host: ctx.host, results, delivered, failed: results.length - delivered };
}

async function preferencesBody(ctx: ApiContext): Promise<PreferencesView> {
  const { live } = ctx.preferences;
  const c = live.config();
  const notifications = live.notifications.state();
  const core = ctx.driver()?.view() ?? null;
  const active = core?.activeQuorum ?? null;
  return {
    host: c.host,
    pair: { id: c.pair.id, peer: c.pair.peer, tiebreakWinner: c.pair.tiebreakWinner },
    owner: c.owner === null ? null : { ...c.owner },
    configFile: live.configFile,
    editable: EDITABLE_SECTIONS,
    howToChange: HOW_TO_CHANGE,
    notificationsConfig: notifications.state === 'off' ? null : editableForm(notifications.config),
    network: {
      management: { interface: c.mgmtInterface, apiAddress: c.managementApi?.address ?? null, apiPort: c.managementApi?.port ?? null },
      business: { bridge: c.businessBridge, interface: c.businessInterface },
      alink: c.alink.map((p) => ({ name: p.name, local: p.local, peer: p.peer, port: p.port, broadcast: p.broadcast })),
      dataPorts: { ...c.dataPorts },
    },
    quorum: {
      active,
      servers: c.quorum.map((q, i) => ({ id: q.id, role: i === 0 ? ('preferred' as const) : ('alternate' as const), address: q.address, port: q.port, active: q.id === active })),
    },
    clock: await ctx.preferences.clock(),
    notifications: notificationsView(notifications),
    splitsite: { ftRttLimitMs: c.rttLimitMs.ft, haRttLimitMs: c.rttLimitMs.ha, alinkRttMs: core?.rttMs ?? null },
    resync: { maxMiBps: mibps(c.resync.maxBytesPerSec), busyMiBps: mibps(c.resync.busyBytesPerSec) },
  };
}

function mibps(bytesPerSec: number | null): number | null {
  return bytesPerSec === null ? null : bytesPerSec / MIB;
}
