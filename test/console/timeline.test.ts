/**
 * The console's explained timeline, read from event logs the real decision core wrote: the scenario stories'
 * golden logs (test/scenarios/*\/expected.log, made by the simulator running the real core). Each line is
 * turned into the entries lockstepd's driver writes for it: the event, and for an `alert …` event the alert
 * entry after its step's events (src/daemon/core-driver.ts). A failover's timeline must name the fault, the
 * quorum grant, the takeover and start, and the resync when the host comes back; a live migration's its
 * trigger, switch-over and action, on the source and the destination; a restart its failures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../src/util/paths.js';
import { incidents, explainCause, type Incident } from '../../src/console/web/timeline.js';
import type { LogEntry } from '../../src/console/web/types.js';

const WALL_BASE_MS = Date.UTC(2026, 0, 1);

/** A scenario's golden log as the daemon's event log entries: ids in the order the driver writes them. */
function scenarioLog(name: string): LogEntry[] {
  const text = readFileSync(path.join(repoRoot(), 'test', 'scenarios', name, 'expected.log'), 'utf8');
  const out: LogEntry[] = [];
  let alerts: Omit<LogEntry, 'id'>[] = [];
  let stepKey = '';
  const flush = (): void => {
    for (const a of alerts) out.push({ ...a, id: out.length + 1 });
    alerts = [];
  };
  for (const line of text.split('\n')) {
    const m = /^\s*([\d.]+)\s+(\S+)\s+(.*?)(?:\s\s\[(.*)\])?$/.exec(line);
    if (!m) continue;
    const atMs = Math.round(Number(m[1]) * 1000);
    const [host, what, cause] = [m[2]!, m[3]!, m[4] ?? 'tick'];
    const key = `${host} ${atMs} ${cause}`;
    if (key !== stepKey) flush();
    stepKey = key;
    const base = { wallMs: WALL_BASE_MS + atMs, atMs, host, cause };
    out.push({ ...base, id: out.length + 1, kind: 'event', severity: null, code: null, what });
    const a = /^alert (info|warning|critical) ([A-Z_]+): (.*)$/.exec(what);
    if (a) alerts.push({ ...base, kind: 'alert', severity: a[1] as 'info', code: a[2]!, what: a[3]! });
  }
  flush();
  return out;
}

function phases(i: Incident): [string, string][] {
  return i.steps.map((s) => [s.phase, s.entry.what]);
}

test('a host crash: fault detected, quorum decision, takeover and start, then the resync when the host returns', () => {
  const all = incidents(scenarioLog('primary-host-crash'));
  assert.deepEqual(all.map((i) => [i.kind, i.vm, i.host]), [['failover', 'vm2', 'host2'], ['failover', 'vm1', 'host2']], 'one failover per VM, newest first, on the survivor');
  const vm1 = all[1]!;
  assert.equal(vm1.summary, 'VM vm1 failed over from host1 to host2');
  assert.deepEqual(phases(vm1), [
    // The peer silent for half the timeout: the survivor asked early and holds a lease before the loss.
    ['detect', 'quorum lease held in epoch 2 while host1 is still heard: the pair keeps epoch 1'],
    ['decide', 'the quorum lease it holds becomes authority in epoch 2'],
    ['decide', 'host state paired → solo'],
    ['act', 'took over VM vm1 from host1 in epoch 2'],
    ['act', 'start VM vm1 (epoch 2)'],
    ['act', 'VM vm1 failed over from host1 to host2'],
    ['resync', 'host state solo → pairing'],
    ['resync', 'mirror VM vm1 to host1 (full, stream host2.1.1)'],
    ['resync', 'mirror of VM vm1 in sync with host1 (stream host2.1.1)'],
  ]);
  assert.equal(vm1.outcome, 'done');
  assert.deepEqual(vm1.pending, []);
  const [detect, grant] = vm1.steps;
  assert.match(detect!.explanation, /host1 went silent: before declaring it lost, host2 asked the quorum servers/);
  assert.equal(detect!.causeExplained, 'quorum server quorum1 answered: granted');
  assert.match(grant!.explanation, /never grants an epoch to two hosts/);
  assert.match(grant!.causeExplained, /timer/, 'the loss itself is declared by a timeout');
  assert.ok(vm1.steps.every((s, i) => i === 0 || s.entry.wallMs >= vm1.steps[i - 1]!.entry.wallMs), 'steps in time order');
});

test('before the failed host returns, the resync is pending and says what it waits for', () => {
  const log = scenarioLog('primary-host-crash');
  const cut = log.findIndex((e) => e.what === 'power on');
  const [latest] = incidents(log.slice(0, cut)).filter((i) => i.vm === 'vm1');
  assert.equal(latest!.outcome, 'in progress');
  assert.deepEqual(latest!.pending.map((p) => p.phase), ['resync']);
  assert.match(latest!.pending[0]!.why, /peer to return/);
});

test('a takeover the core refuses (its copy may be stale): the loss, the denials and the grant, the refusal; nothing pending', () => {
  const [refused] = incidents(scenarioLog('stale-copy-refuses-takeover')).filter((i) => i.host === 'host2');
  assert.ok(refused, 'the refusal is an incident');
  assert.deepEqual([refused.kind, refused.vm, refused.outcome], ['failover', 'vm1', 'refused']);
  const steps = phases(refused);
  assert.deepEqual(steps[0], ['detect', 'host state paired → peer-lost']);
  assert.deepEqual(steps[1], ['decide', 'host state peer-lost → isolated']);
  assert.equal(steps.filter(([p, w]) => p === 'decide' && w.startsWith('quorum server quorum1 denied authority: host1 holds epoch 2')).length, 7);
  const refusal = refused.steps.findIndex((x) => x.entry.kind === 'alert');
  assert.deepEqual(steps.slice(refusal - 2, refusal), [['decide', 'quorum granted authority in epoch 3'], ['decide', 'host state isolated → solo']]);
  const act = refused.steps[refusal]!;
  assert.equal(act.phase, 'act');
  assert.match(act.entry.what, /^VM vm1 cannot fail over to host2: its copy here was last in sync in epoch 1/);
  assert.match(act.explanation, /refused to run the VM here \(TAKEOVER_REFUSED\)/);
  // host1 back: it runs the VM again and host2's copy is brought up to date: the protection's return.
  assert.deepEqual(steps.slice(refusal + 1), [
    ['resync', 'host state solo → pairing'],
    ['resync', 'copy of VM vm1 is in sync with host1 (stream host1.2.1)'],
  ]);
  assert.deepEqual(refused.pending, [], 'a refusal waits for nothing: the VM runs again when its host returns');
});

test('a live migration: the trigger, the switch-over and the action on the source; the arrival and resync on the destination', () => {
  const all = incidents(scenarioLog('live-migration'));
  const source = all.find((i) => i.kind === 'migration' && i.host === 'host1')!;
  assert.deepEqual(phases(source), [
    ['detect', 'operator: migrate VM vm1 to host2'],
    ['detect', 'live migration host1.1.2 of VM vm1 to host2: preparing'],
    ['decide', 'live migration host1.1.2 of VM vm1 to host2: migrating (its copy is in sync over stream host1.1.3)'],
    ['act', 'handed VM vm1 over to host2'],
    ['act', 'live migration host1.1.2 of VM vm1 to host2 completed'],
    ['act', 'stop VM vm1: migrated to the peer'],
    ['act', 'VM vm1 moved from host1 to host2 by live migration'],
    ['resync', 'copy of VM vm1 is in sync with host2 (stream host2.1.1)'],
  ]);
  assert.equal(source.steps[0]!.causeExplained, "an operator's command (migrate-vm)");
  const dest = all.find((i) => i.kind === 'migration' && i.host === 'host2')!;
  assert.deepEqual(phases(dest).map(([p]) => p), ['detect', 'act', 'resync', 'resync']);
  assert.equal(dest.summary, 'VM vm1 arrived on host2 by live migration');
  // The same story's later power cut is a failover of its own, on host1 this time.
  assert.ok(all.some((i) => i.kind === 'failover' && i.host === 'host1' && i.vm === 'vm1'));
});

test('a VM that keeps failing: each restart in place, then the move to the peer', () => {
  const all = incidents(scenarioLog('primary-vm-failure')).filter((i) => i.host === 'host1');
  assert.deepEqual(all.map((i) => i.anchor.code).reverse(), ['VM_RESTARTED', 'VM_RESTARTED', 'VM_RESTARTED', 'VM_MOVED_AFTER_FAILURES']);
  const first = all.at(-1)!;
  assert.deepEqual(phases(first), [
    ['detect', 'VM vm1 failed (exited: crashed): restarting in place (1 of 3)'],
    ['act', 'start VM vm1 (epoch 1), mirrored to host2 (full, stream host1.1.2)'],
    ['act', 'VM vm1 failed (exited: crashed); restarting it on host1'],
    ['resync', 'mirror of VM vm1 in sync with host2 (stream host1.1.2)'],
  ]);
  assert.equal(first.steps[0]!.causeExplained, "VM vm1's QEMU reported: exited");
});

test('an unprotected VM expects no resync; a log with no incident has no timeline; causes the core never writes are shown as they are', () => {
  const all = incidents(scenarioLog('primary-vm-failure'), () => 'none');
  assert.ok(all.every((i) => !i.pending.some((p) => p.phase === 'resync')));
  assert.deepEqual(incidents(scenarioLog('primary-vm-failure').filter((e) => e.kind === 'event')), [], 'incidents are anchored on alerts');
  assert.equal(explainCause('something new'), 'something new');
});
