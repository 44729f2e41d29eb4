/**
 * Quorum rounds asked on suspicion (docs/core.md, "Asking the quorum servers on suspicion"), step by step
 * in the simulated world: what a grant changes while the peer is still heard, when a held lease becomes
 * authority, and what a denial leaves a host that is still paired.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveHostState, step, suspectAfterMs } from '../../src/core/host-core.js';
import { DEFAULT_TIMING, type CoreConfig } from '../../src/core/types.js';
import { World } from '../../src/sim/world.js';

function pair(): World {
  const w = new World({ hosts: ['host1', 'host2'], quorumServers: ['quorum1'], vms: [{ name: 'vm1', owner: 'host1' }, { name: 'vm2', owner: 'host2' }] });
  w.start();
  w.runUntil(3000);
  return w;
}

function core(w: World, id: string) {
  const c = w.host(id).core;
  assert.ok(c, `${id} is up`);
  return c;
}

test('suspicion starts at half the peer timeout, never below two heartbeats nor above the timeout', () => {
  const cfg = { ...DEFAULT_TIMING } as unknown as CoreConfig;
  assert.equal(suspectAfterMs(cfg), 300);
  assert.equal(suspectAfterMs({ ...cfg, peerTimeoutMs: 250, heartbeatIntervalMs: 100 }), 200);
  assert.equal(suspectAfterMs({ ...cfg, peerTimeoutMs: 200, heartbeatIntervalMs: 100 }), 200);
});

test('a grant while the peer is still heard is a lease only; it becomes authority in the step the peer is declared lost', () => {
  const w = pair();
  w.powerOff('host2');
  w.runUntil(3350);
  const h1 = core(w, 'host1');
  assert.equal(deriveHostState(h1), 'paired');
  assert.equal(h1.durable.epoch, 1);
  assert.equal(h1.durable.authority, 'pair');
  assert.ok(h1.quorum.fenceAt > h1.now, 'holds the lease');
  assert.equal(h1.quorum.grantedBy['quorum1'], 2);
  w.runUntil(3700);
  const lost = w.log.find((l) => l.host === 'host1' && l.what === 'host state paired → solo');
  const adopted = w.log.find((l) => l.host === 'host1' && l.what === 'the quorum lease it holds becomes authority in epoch 2');
  assert.ok(lost && adopted, 'adopted when the peer was declared lost');
  assert.equal(adopted.at, lost.at);
  assert.equal(core(w, 'host1').durable.authority, 'quorum');
  assert.deepEqual(w.runningCopies('vm1'), ['host1']);
});

test('a held lease for an epoch the host has proposed to its peer since is not adopted: a new round asks past it', () => {
  const w = pair();
  w.powerOff('host2');
  w.runUntil(3350);
  const h1 = core(w, 'host1');
  // As if host1 had proposed epoch 2 to host2 (the grant's epoch) just before losing it.
  const proposed = { ...h1, durable: { ...h1.durable, proposal: { epoch: 2, activeQuorum: 'quorum1' } } };
  const declaredAt = (h1.peer.heardAt ?? 0) + h1.cfg.peerTimeoutMs + 1;
  const [after, decision] = step(proposed, { type: 'tick', now: declaredAt });
  assert.equal(after.durable.authority, 'pair', 'not adopted');
  assert.equal(after.durable.epoch, 1);
  const ask = decision.effects.find((e) => e.kind === 'ask-quorum');
  assert.ok(ask && ask.kind === 'ask-quorum' && ask.knownEpoch === 3, `asks past the proposal: ${JSON.stringify(ask)}`);
  // Without the proposal the same tick adopts it.
  const [plain] = step(h1, { type: 'tick', now: declaredAt });
  assert.equal(plain.durable.authority, 'quorum');
  assert.equal(plain.durable.epoch, 2);
});

test('a denial while still paired leaves the pair lease alone: the loser runs on until that lease ends', () => {
  const w = pair();
  w.cut('host1', 'host2');
  w.cut('host2', 'host1');
  w.runUntil(3000 + suspectAfterMs(core(w, 'host2').cfg) + 50);
  assert.ok(w.log.some((l) => l.host === 'host2' && l.what.includes('denied authority')), 'host2 was denied');
  const h2 = core(w, 'host2');
  assert.equal(deriveHostState(h2), 'paired');
  assert.ok(h2.pairLeaseUntil - h2.cfg.fenceMarginMs > h2.now, 'its pair lease still runs');
  assert.deepEqual(w.runningCopies('vm2'), ['host2']);
  w.runUntil(6000);
  assert.deepEqual(w.runningCopies('vm2'), ['host1'], 'then host1, granted, takes it over');
});
