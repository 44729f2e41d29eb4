import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeVms } from '../../src/core/vm-records.js';
import { decideGrant, emptyPairRecord, recoveredPairRecord } from '../../src/core/quorum-grant.js';
import { quorumLeaseHolderMs, waiterSafeAfterMs } from '../../src/core/lease.js';
import { SPLITSITE_UNMEASURED, effectiveProtection, settle, splitsiteDueAt, splitsiteSample, type SplitSite } from '../../src/core/splitsite.js';
import { estimateMtbfMs, healthScore, healthyComponents } from '../../src/core/health.js';
import { bootState, step } from '../../src/core/host-core.js';
import { DEFAULT_TIMING, type CoreConfig, type VmRecord } from '../../src/core/types.js';
import { Prng } from '../../src/sim/prng.js';
import { BugError } from '../../src/util/assert.js';

const cfg: CoreConfig = { self: 'host1', peer: 'host2', quorumServers: ['quorum1'], tiebreakWinner: 'host1', ...DEFAULT_TIMING };

function randomVms(rnd: Prng): Record<string, VmRecord> {
  const vms: Record<string, VmRecord> = {};
  for (const name of ['a', 'b', 'c']) {
    if (rnd.chance(0.3)) continue;
    // A host's Lamport clock is durable, so (version, by) names one config: its content follows from them.
    const version = rnd.int(0, 3);
    const by = rnd.pick(['host1', 'host2']);
    const desired = (version + (by === 'host1' ? 0 : 1)) % 2 === 0 ? 'running' : 'stopped';
    vms[name] = {
      config: { name, desired, protection: 'ha', version, by, removed: false, hardware: {} },
      owner: { host: rnd.pick(['host1', 'host2']), epoch: rnd.int(0, 3), seq: rnd.int(0, 2) },
    };
  }
  return vms;
}

test('merging VM records is commutative, associative and idempotent (1000 random triples)', () => {
  const rnd = new Prng(7);
  for (let i = 0; i < 1000; i++) {
    const [x, y, z] = [randomVms(rnd), randomVms(rnd), randomVms(rnd)];
    assert.deepEqual(mergeVms(x, y), mergeVms(y, x));
    assert.deepEqual(mergeVms(mergeVms(x, y), z), mergeVms(x, mergeVms(y, z)));
    assert.deepEqual(mergeVms(mergeVms(x, y), y), mergeVms(x, y));
  }
});

test('merging returns the same object when nothing changes (so no needless write)', () => {
  const x = randomVms(new Prng(3));
  assert.equal(mergeVms(x, x), x);
  assert.equal(mergeVms(x, {}), x);
});

test('quorum grant: first asker wins, the other is denied while the lease runs, then granted a newer epoch', () => {
  let rec = emptyPairRecord();
  // A new holder gets the epoch it asks for when that is newer than every grant (a host starting a term of
  // its own asks for one past its pair epoch), and the next one after the record otherwise.
  const a = decideGrant(rec, { pair: 'p', host: 'host1', knownEpoch: 4 }, 0, 3000);
  assert.equal(a.kind, 'granted');
  assert.equal(a.kind === 'granted' && a.epoch, 4);
  rec = a.record;
  const b = decideGrant(rec, { pair: 'p', host: 'host2', knownEpoch: 4 }, 2999, 3000);
  assert.deepEqual(b.kind === 'denied' && [b.epoch, b.holder], [4, 'host1']);
  const c = decideGrant(rec, { pair: 'p', host: 'host2', knownEpoch: 4 }, 3000, 3000);
  assert.equal(c.kind === 'granted' && c.epoch, 5);
  const d = decideGrant(c.record, { pair: 'p', host: 'host1', knownEpoch: 2 }, 6001, 3000);
  assert.equal(d.kind === 'granted' && d.epoch, 6, 'never an epoch granted before, whatever the asker knows');
});

test('quorum grant: the holder renews without a new epoch, and catches the server up to an epoch it knows', () => {
  const first = decideGrant(emptyPairRecord(), { pair: 'p', host: 'host1', knownEpoch: 0 }, 0, 3000);
  const renew = decideGrant(first.record, { pair: 'p', host: 'host1', knownEpoch: 1 }, 1000, 3000);
  assert.deepEqual(renew.kind === 'granted' && [renew.epoch, renew.persist], [1, false]);
  const ahead = decideGrant(renew.record, { pair: 'p', host: 'host1', knownEpoch: 9 }, 1500, 3000);
  assert.deepEqual(ahead.kind === 'granted' && [ahead.epoch, ahead.persist], [9, true]);
});

test('a restarted quorum server waits a full lease before granting anyone but the recorded holder', () => {
  const rec = recoveredPairRecord(7, 'host1', 50_000, 3000);
  assert.equal(decideGrant(rec, { pair: 'p', host: 'host2', knownEpoch: 7 }, 52_999, 3000).kind, 'denied');
  const later = decideGrant(rec, { pair: 'p', host: 'host2', knownEpoch: 7 }, 53_000, 3000);
  assert.equal(later.kind === 'granted' && later.epoch, 8);
  assert.equal(decideGrant(rec, { pair: 'p', host: 'host1', knownEpoch: 7 }, 50_001, 3000).kind, 'granted');
});

test('leases are stretched and shrunk for clock drift, never the other way', () => {
  assert.ok(waiterSafeAfterMs(1000, cfg) > 1000);
  assert.ok(quorumLeaseHolderMs(cfg) < cfg.quorumLeaseMs);
  assert.equal(waiterSafeAfterMs(1000, { ...cfg, clockDriftMax: 0 }), 1000);
});

test('SplitSite: FT needs ≤ 2 ms, HA ≤ 10 ms; the first sample sets the allowance; unmeasured downgrades nothing', () => {
  const cases: [Parameters<typeof effectiveProtection>[0], number | null, string][] = [
    ['ft', 2, 'ft'],
    ['ft', 2.01, 'ha'],
    ['ft', 10.5, 'none'],
    ['ha', 10, 'ha'],
    ['ha', 11, 'none'],
    ['none', 0.1, 'none'],
    ['ft', null, 'ft'],
  ];
  for (const [level, rtt, expected] of cases) {
    const allowed = rtt === null ? SPLITSITE_UNMEASURED.allowed : splitsiteSample(SPLITSITE_UNMEASURED, rtt, 0, cfg).allowed;
    assert.equal(effectiveProtection(level, allowed), expected, `${level} at ${rtt} ms`);
  }
});

test('SplitSite hysteresis: a slow spike changes nothing; a slow link downgrades after the hold; a restore needs a clear margin for longer', () => {
  const { downgrade, restore } = cfg.splitsiteHoldMs;
  const feed = (s: SplitSite, samples: [at: number, rtt: number][]): SplitSite => samples.reduce((acc, [at, rtt]) => splitsiteSample(acc, rtt, at, cfg), s);
  const fast = splitsiteSample(SPLITSITE_UNMEASURED, 0.4, 0, cfg);
  assert.equal(fast.allowed, 'ft');

  const spiked = feed(fast, [[100, 30], [200, 30], [downgrade - 100, 30], [downgrade, 0.5]]);
  assert.equal(spiked.allowed, 'ft', 'slow for less than the hold, then fast: no downgrade');
  assert.equal(spiked.pending, null);

  const slow = feed(fast, [[100, 5], [1000, 15], [100 + downgrade - 1, 5]]);
  assert.equal(slow.allowed, 'ft', 'not yet: the hold has not passed');
  assert.equal(splitsiteDueAt(slow, cfg), 100 + downgrade);
  const settled = settle(slow, 100 + downgrade, cfg);
  assert.equal(settled.allowed, 'ha', 'over the FT limit throughout the hold: downgraded to what the last sample allows');

  const hovering = feed(settled, [[3000, 1.9], [3000 + restore, 1.9], [3000 + 2 * restore, 1.9]]);
  assert.equal(hovering.allowed, 'ha', 'inside the FT limit but not by the restore margin: stays downgraded');
  const clear = feed(settled, [[3000, 1], [3000 + restore - 1, 1]]);
  assert.equal(clear.allowed, 'ha', 'clearly inside, but for less than the restore hold');
  assert.equal(settle(clear, 3000 + restore, cfg).allowed, 'ft');
  const broken = feed(settled, [[3000, 1], [4000, 1.9], [3000 + restore, 1]]);
  assert.equal(broken.allowed, 'ha', 'a sample without the margin restarts the restore hold');
});

test('MTBF: window divided by the faults in the window; none means infinite', () => {
  assert.equal(estimateMtbfMs([], 10_000, 3_600_000), Infinity);
  assert.equal(estimateMtbfMs([1000, 2000, 3000], 4000, 3_600_000), 1_200_000);
  assert.equal(estimateMtbfMs([1000], 4_000_000, 3_600_000), Infinity, 'an old fault has left the window');
  assert.equal(healthScore(healthyComponents()), 100);
});

test('the core refuses time going backwards (a bug in its driver)', () => {
  const s = bootState(cfg, null, 1000, 1);
  assert.throws(() => step(s, { type: 'tick', now: 999 }), BugError);
});

test('operator commands are answered: defining a VM twice is refused with a reason', () => {
  let [s, d] = step(bootState(cfg, null, 0, 1), { type: 'command', now: 1, command: { kind: 'define-vm', name: 'vm1', protection: 'ha', desired: 'running', hardware: {} } });
  assert.deepEqual(d.commandResult, { ok: true });
  assert.ok(d.persist?.vms['vm1'], 'the definition is persisted');
  [s, d] = step(s, { type: 'command', now: 2, command: { kind: 'define-vm', name: 'vm1', protection: 'ha', desired: 'running', hardware: {} } });
  assert.deepEqual(d.commandResult, { ok: false, reason: 'VM vm1 exists already' });
  [, d] = step(s, { type: 'command', now: 3, command: { kind: 'maintenance', on: true } });
  assert.equal(d.commandResult?.ok, false, 'maintenance needs a paired peer');
});
