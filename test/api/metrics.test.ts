/**
 * The metrics renderer on a fixed view, to the byte; label escaping; and every scrape of a real management
 * server checked by a small parser of the text format 0.0.4 (each sample line's syntax, HELP and TYPE for
 * every metric), with its access rules: a read-only session, or the configured metrics token.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness, type Harness } from './harness.js';
import { escapeLabel, renderMetrics, type MetricsView } from '../../src/api/metrics.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const VIEW: MetricsView = {
  host: 'host1',
  startedAtMs: 1_700_000_000_500,
  paired: true,
  core: {
    host: 'host1',
    peer: 'host2',
    state: 'solo',
    epoch: 7,
    authority: 'quorum',
    health: 95,
    peerHeard: false,
    peerState: null,
    peerHealth: null,
    activeQuorum: 'quorum1',
    rttMs: 1.5,
    maintenance: false,
    declaredDown: false,
  },
  health: { alink1: 'failed', disk: 'ok' },
  alinkPaths: [
    { name: 'alink1', up: false, srttMs: null },
    { name: 'alink2', up: true, srttMs: 0.25 },
  ],
  vms: [{ name: 'web', owner: 'host1', protection: 'ha', desired: 'running', state: 'syncing', mirror: { copiedBytes: 1024, totalBytes: 4096 } }],
  alerts: {
    byCode: [
      { code: 'FAILOVER', severity: 'critical', count: 1 },
      { code: 'VM_RESTARTED', severity: 'warning', count: 2 },
    ],
    byVm: [
      { vm: 'old', code: 'VM_RESTARTED', count: 1 },
      { vm: 'web', code: 'FAILOVER', count: 1 },
      { vm: 'web', code: 'VM_RESTARTED', count: 1 },
    ],
  },
  notifyPending: 3,
  streamClients: 2,
  resources: { cpuBusyRatio: 0.25, memoryUsedBytes: 1536, memoryTotalBytes: 4096 },
};

test('the renderer: exact text of a fixed view', () => {
  const expected = [
    "# HELP lockstep_daemon_start_time_seconds When this lockstepd started, in seconds since the epoch: its counters count from then.",
    "# TYPE lockstep_daemon_start_time_seconds gauge",
    "lockstep_daemon_start_time_seconds{host=\"host1\"} 1700000000.5",
    "# HELP lockstep_host_paired Whether this host has paired with its peer (1) or is still pairing (0).",
    "# TYPE lockstep_host_paired gauge",
    "lockstep_host_paired{host=\"host1\"} 1",
    "# HELP lockstep_host_state The host's state in the core's state table: 1 for the current state.",
    "# TYPE lockstep_host_state gauge",
    "lockstep_host_state{host=\"host1\",state=\"initializing\"} 0",
    "lockstep_host_state{host=\"host1\",state=\"paired\"} 0",
    "lockstep_host_state{host=\"host1\",state=\"pairing\"} 0",
    "lockstep_host_state{host=\"host1\",state=\"peer-lost\"} 0",
    "lockstep_host_state{host=\"host1\",state=\"solo\"} 1",
    "lockstep_host_state{host=\"host1\",state=\"isolated\"} 0",
    "lockstep_host_state{host=\"host1\",state=\"maintenance\"} 0",
    "lockstep_host_state{host=\"host1\",state=\"down\"} 0",
    "# HELP lockstep_host_epoch The pair's epoch as this host holds it.",
    "# TYPE lockstep_host_epoch gauge",
    "lockstep_host_epoch{host=\"host1\"} 7",
    "# HELP lockstep_host_health_score This host's health score, from its components' states.",
    "# TYPE lockstep_host_health_score gauge",
    "lockstep_host_health_score{host=\"host1\"} 95",
    "# HELP lockstep_host_maintenance Whether the host is in maintenance mode.",
    "# TYPE lockstep_host_maintenance gauge",
    "lockstep_host_maintenance{host=\"host1\"} 0",
    "# HELP lockstep_host_declared_down Whether the host was declared down (MTBF below the threshold) and waits for repair.",
    "# TYPE lockstep_host_declared_down gauge",
    "lockstep_host_declared_down{host=\"host1\"} 0",
    "# HELP lockstep_peer_heard Whether the peer's heartbeats are heard over the A-Link.",
    "# TYPE lockstep_peer_heard gauge",
    "lockstep_peer_heard{host=\"host1\",peer=\"host2\"} 0",
    "# HELP lockstep_peer_health_score The peer's health score, as its last heartbeat said (absent while it is not heard).",
    "# TYPE lockstep_peer_health_score gauge",
    "# HELP lockstep_alink_rtt_seconds The A-Link's round-trip time the core uses (SplitSite), absent until measured.",
    "# TYPE lockstep_alink_rtt_seconds gauge",
    "lockstep_alink_rtt_seconds{host=\"host1\"} 0.0015",
    "# HELP lockstep_health_component This host's health components: 1 for each component's current state.",
    "# TYPE lockstep_health_component gauge",
    "lockstep_health_component{host=\"host1\",component=\"alink1\",state=\"ok\"} 0",
    "lockstep_health_component{host=\"host1\",component=\"alink1\",state=\"degraded\"} 0",
    "lockstep_health_component{host=\"host1\",component=\"alink1\",state=\"failed\"} 1",
    "lockstep_health_component{host=\"host1\",component=\"disk\",state=\"ok\"} 1",
    "lockstep_health_component{host=\"host1\",component=\"disk\",state=\"degraded\"} 0",
    "lockstep_health_component{host=\"host1\",component=\"disk\",state=\"failed\"} 0",
    "# HELP lockstep_alink_path_up Whether each A-Link path is connected.",
    "# TYPE lockstep_alink_path_up gauge",
    "lockstep_alink_path_up{host=\"host1\",path=\"alink1\"} 0",
    "lockstep_alink_path_up{host=\"host1\",path=\"alink2\"} 1",
    "# HELP lockstep_alink_path_rtt_seconds Each connected A-Link path's smoothed round-trip time.",
    "# TYPE lockstep_alink_path_rtt_seconds gauge",
    "lockstep_alink_path_rtt_seconds{host=\"host1\",path=\"alink2\"} 0.00025",
    "# HELP lockstep_host_cpu_busy_ratio The share of this host's CPU time, all cores, that was busy between the resource history's last two rounds (5 s apart): 0 to 1.",
    "# TYPE lockstep_host_cpu_busy_ratio gauge",
    "lockstep_host_cpu_busy_ratio{host=\"host1\"} 0.25",
    "# HELP lockstep_host_memory_used_bytes This host's memory in use: its total less what the kernel counts available (MemAvailable).",
    "# TYPE lockstep_host_memory_used_bytes gauge",
    "lockstep_host_memory_used_bytes{host=\"host1\"} 1536",
    "# HELP lockstep_host_memory_total_bytes This host's memory (MemTotal).",
    "# TYPE lockstep_host_memory_total_bytes gauge",
    "lockstep_host_memory_total_bytes{host=\"host1\"} 4096",
    "# HELP lockstep_vm_state Each VM's state in the core's state table: 1 for the current state.",
    "# TYPE lockstep_vm_state gauge",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"stopped\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"unprotected\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"protected\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"syncing\"} 1",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"migrating\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"downgraded\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"failing-over\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"host-down\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"starting\"} 0",
    "lockstep_vm_state{host=\"host1\",vm=\"web\",state=\"failed\"} 0",
    "# HELP lockstep_vm_protection Each VM's protection level: 1 for the level it has.",
    "# TYPE lockstep_vm_protection gauge",
    "lockstep_vm_protection{host=\"host1\",vm=\"web\",level=\"none\"} 0",
    "lockstep_vm_protection{host=\"host1\",vm=\"web\",level=\"ha\"} 1",
    "lockstep_vm_protection{host=\"host1\",vm=\"web\",level=\"ft\"} 0",
    "# HELP lockstep_vm_desired_running Whether the operator wants the VM running (1) or stopped (0).",
    "# TYPE lockstep_vm_desired_running gauge",
    "lockstep_vm_desired_running{host=\"host1\",vm=\"web\"} 1",
    "# HELP lockstep_vm_owner The host that owns (runs) each VM, as a label; the value is always 1.",
    "# TYPE lockstep_vm_owner gauge",
    "lockstep_vm_owner{host=\"host1\",vm=\"web\",owner=\"host1\"} 1",
    "# HELP lockstep_vm_sync_copied_bytes Bytes of the VM's disk its mirror on this host has copied into the peer's copy.",
    "# TYPE lockstep_vm_sync_copied_bytes gauge",
    "lockstep_vm_sync_copied_bytes{host=\"host1\",vm=\"web\"} 1024",
    "# HELP lockstep_vm_sync_total_bytes Bytes the VM's mirror on this host has to copy in all.",
    "# TYPE lockstep_vm_sync_total_bytes gauge",
    "lockstep_vm_sync_total_bytes{host=\"host1\",vm=\"web\"} 4096",
    "# HELP lockstep_vm_failovers_total Times this host took the VM over from its failed peer.",
    "# TYPE lockstep_vm_failovers_total counter",
    "lockstep_vm_failovers_total{host=\"host1\",vm=\"old\"} 0",
    "lockstep_vm_failovers_total{host=\"host1\",vm=\"web\"} 1",
    "# HELP lockstep_vm_migrations_total Live migrations of the VM from this host to the peer that completed.",
    "# TYPE lockstep_vm_migrations_total counter",
    "lockstep_vm_migrations_total{host=\"host1\",vm=\"old\"} 0",
    "lockstep_vm_migrations_total{host=\"host1\",vm=\"web\"} 0",
    "# HELP lockstep_vm_migration_failures_total Live migrations of the VM, out of or into this host, that failed.",
    "# TYPE lockstep_vm_migration_failures_total counter",
    "lockstep_vm_migration_failures_total{host=\"host1\",vm=\"old\"} 0",
    "lockstep_vm_migration_failures_total{host=\"host1\",vm=\"web\"} 0",
    "# HELP lockstep_vm_restarts_total Times the VM failed on this host and was restarted in place.",
    "# TYPE lockstep_vm_restarts_total counter",
    "lockstep_vm_restarts_total{host=\"host1\",vm=\"old\"} 1",
    "lockstep_vm_restarts_total{host=\"host1\",vm=\"web\"} 1",
    "# HELP lockstep_alerts_total Alerts the core raised on this host, by code and severity.",
    "# TYPE lockstep_alerts_total counter",
    "lockstep_alerts_total{host=\"host1\",code=\"FAILOVER\",severity=\"critical\"} 1",
    "lockstep_alerts_total{host=\"host1\",code=\"VM_RESTARTED\",severity=\"warning\"} 2",
    "# HELP lockstep_notify_outbox_pending Notification deliveries waiting to go out (e-Alerts, traps, Call Home, webhooks).",
    "# TYPE lockstep_notify_outbox_pending gauge",
    "lockstep_notify_outbox_pending{host=\"host1\"} 3",
    "# HELP lockstep_event_stream_clients Clients connected to the live event stream.",
    "# TYPE lockstep_event_stream_clients gauge",
    "lockstep_event_stream_clients{host=\"host1\"} 2",
  ];
  assert.equal(renderMetrics(VIEW), `${expected.join('\n')}\n`);
  checkExposition(renderMetrics(VIEW));
});

test('the renderer: before pairing there is no core, no VM, no notification outbox; before two rounds no CPU', () => {
  const text = renderMetrics({ ...VIEW, paired: false, core: null, health: null, alinkPaths: [], vms: [], alerts: { byCode: [], byVm: [] }, notifyPending: null, streamClients: 0, resources: { cpuBusyRatio: null, memoryUsedBytes: 1536, memoryTotalBytes: 4096 } });
  assert.ok(text.includes('lockstep_host_paired{host="host1"} 0\n'));
  assert.ok(text.includes('# TYPE lockstep_host_cpu_busy_ratio gauge\n# HELP') && text.includes('lockstep_host_memory_used_bytes{host="host1"} 1536\n'));
  assert.ok(!text.includes('lockstep_host_state') && !text.includes('lockstep_notify_outbox_pending'));
  assert.ok(text.includes('# TYPE lockstep_vm_failovers_total counter\n# HELP'), 'a family with no series keeps its HELP and TYPE');
  checkExposition(text);
});

test('label values are escaped: backslash, double quote, newline', () => {
  assert.equal(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  const text = renderMetrics({ ...VIEW, host: 'odd "host"\\\n' });
  assert.ok(text.includes('lockstep_host_paired{host="odd \\"host\\"\\\\\\n"} 1\n'), text.slice(0, 400));
  checkExposition(text);
});

/**
 * A small checker of the text format 0.0.4: every line a HELP, a TYPE or a sample; each metric's HELP and
 * TYPE once and before its samples; sample names, label names, escaped label values and values well formed;
 * counters named `_total`; no series twice. Returns the samples by their series.
 */
function checkExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const help = new Set<string>();
  const type = new Map<string, string>();
  const series = new Map<string, number>();
  const name = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const labelValue = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
  const sample = new RegExp(`^(${name})(?:\\{((?:[a-zA-Z_][a-zA-Z0-9_]*=${labelValue})(?:,[a-zA-Z_][a-zA-Z0-9_]*=${labelValue})*)?\\})? (\\S+)$`);
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^# HELP (${name}) (.*)$`).exec(line))) {
      assert.ok(!help.has(m[1]!), `HELP of ${m[1]} once`);
      assert.ok(!/\\[^\\n]/.test(m[2]!.replace(/\\\\/g, '')), `HELP of ${m[1]} escapes only \\ and newline`);
      help.add(m[1]!);
    } else if ((m = new RegExp(`^# TYPE (${name}) (counter|gauge|histogram|summary|untyped)$`).exec(line))) {
      assert.ok(help.has(m[1]!), `HELP of ${m[1]} before its TYPE`);
      assert.ok(!type.has(m[1]!), `TYPE of ${m[1]} once`);
      if (m[2] === 'counter') assert.match(m[1]!, /_total$/, `counter ${m[1]} is named _total`);
      type.set(m[1]!, m[2]!);
    } else if ((m = sample.exec(line))) {
      assert.ok(type.has(m[1]!), `${m[1]} has its TYPE before its samples`);
      const value = m[3]!;
      assert.ok(/^(NaN|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/.test(value), `value of ${line}`);
      const key = `${m[1]}{${m[2] ?? ''}}`;
      assert.ok(!series.has(key), `series ${key} once`);
      series.set(key, Number(value));
    } else assert.fail(`not a line of the text format: ${JSON.stringify(line)}`);
  }
  return series;
}

async function withAdmin(h: Harness): Promise<string> {
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  return h.login(ADMIN.name, ADMIN.password);
}

const METRICS_TOKEN = 'scraper-0123456789abcdef0123456789abcdef';

test('/metrics: a read-only session or the metrics token; nothing else', async () => {
  const h = await startHarness(cleanup, { withDriver: false, metricsToken: METRICS_TOKEN });
  const admin = await withAdmin(h);
  assert.equal((await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'nora', password: 'nora-password-1', groups: [] } })).status, 201);
  assert.equal((await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'rita', password: 'rita-password-1', groups: ['read-only'] } })).status, 201);
  const nobody = await h.login('nora', 'nora-password-1');
  const reader = await h.login('rita', 'rita-password-1');
  const code = async (opts: { token?: string; headers?: Record<string, string> }, path = '/metrics'): Promise<[number, string | undefined]> => {
    const r = await h.request('GET', path, opts);
    return [r.status, r.status === 200 ? undefined : r.body?.error?.code];
  };
  assert.deepEqual(await code({}), [401, 'NOT_AUTHENTICATED']);
  assert.deepEqual(await code({ token: 'scraper-wrong-456789abcdef0123456789abcdef' }), [401, 'NOT_AUTHENTICATED']);
  assert.deepEqual(await code({ token: nobody }), [403, 'FORBIDDEN']);
  assert.deepEqual(await code({ token: reader }), [200, undefined]);
  assert.deepEqual(await code({ headers: { cookie: `lockstep_session=${reader}` } }), [200, undefined]);
  assert.deepEqual(await code({ token: METRICS_TOKEN }), [200, undefined]);
  // The token is for /metrics only: it is no session anywhere else.
  assert.deepEqual(await code({ token: METRICS_TOKEN }, '/api/v1/status'), [401, 'NOT_AUTHENTICATED']);
  assert.deepEqual(await code({ token: reader }, '/api/metrics'), [404, 'UNKNOWN_ENDPOINT']);
  assert.deepEqual(await code({ token: reader }, '/metrics/more'), [404, 'UNKNOWN_ENDPOINT']);
  const post = await h.request('POST', '/metrics', { token: reader });
  assert.equal(post.status, 405);
  // Without a configured token, a bearer that looks like one is just an unknown session.
  const plain = await startHarness(cleanup, { withDriver: false });
  assert.equal((await plain.request('GET', '/metrics', { token: METRICS_TOKEN })).status, 401);
});

test('a scrape of a real server parses, shows the VMs and the alerts, and its counters do not go back', async () => {
  const h = await startHarness(cleanup);
  const admin = await withAdmin(h);
  const scrape = async (): Promise<Map<string, number>> => {
    const r = await h.request('GET', '/metrics', { token: admin });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    return checkExposition(r.text);
  };
  const before = await scrape();
  assert.equal(before.get('lockstep_host_paired{host="host1"}'), 1);
  assert.equal(before.get('lockstep_peer_heard{host="host1",peer="host2"}'), 0);
  // The resource history's newest round: the host's CPU once two rounds measured it, its memory at once.
  assert.equal(before.get('lockstep_host_memory_total_bytes{host="host1"}'), undefined);
  await h.history.sampleNow();
  await new Promise((r) => setTimeout(r, 200)); // some ticks of CPU time between the two
  await h.history.sampleNow();
  const measured = await scrape();
  const cpu = measured.get('lockstep_host_cpu_busy_ratio{host="host1"}');
  assert.ok(cpu !== undefined && cpu >= 0 && cpu <= 1, String(cpu));
  const used = measured.get('lockstep_host_memory_used_bytes{host="host1"}')!;
  const total = measured.get('lockstep_host_memory_total_bytes{host="host1"}')!;
  assert.ok(used > 0 && used < total, `${used} of ${total}`);

  assert.equal((await h.request('POST', '/api/v1/vms', { token: admin, body: SAMPLE_VM })).status, 201);
  const defined = await scrape();
  assert.equal(defined.get('lockstep_vm_state{host="host1",vm="web",state="stopped"}'), 1);
  assert.equal(defined.get('lockstep_vm_protection{host="host1",vm="web",level="ha"}'), 1);
  assert.equal(defined.get('lockstep_vm_owner{host="host1",vm="web",owner="host1"}'), 1);
  assert.equal(defined.get('lockstep_vm_desired_running{host="host1",vm="web"}'), 0);
  assert.equal(defined.get('lockstep_vm_failovers_total{host="host1",vm="web"}'), 0);
  // The lone host is told its peer is dead: the core's alert is counted.
  assert.equal((await h.request('POST', '/api/v1/host/force-takeover', { token: admin })).status, 200);
  // The command is accepted at once; the core takes over on its next steps.
  let after = await scrape();
  for (let tries = 0; tries < 100 && after.get('lockstep_host_state{host="host1",state="solo"}') !== 1; tries++) {
    await new Promise((r) => setTimeout(r, 100));
    after = await scrape();
  }
  const forced = [...after].find(([k]) => k.startsWith('lockstep_alerts_total{host="host1",code="FORCED_TAKEOVER"'));
  assert.ok(forced && forced[1] >= 1, [...after.keys()].filter((k) => k.startsWith('lockstep_alerts')).join(', '));
  assert.equal(after.get('lockstep_host_state{host="host1",state="solo"}'), 1);
  for (const [key, value] of defined) {
    if (/^lockstep_\w+_total\{/.test(key)) assert.ok((after.get(key) ?? -1) >= value, `${key} went back`);
  }
});
