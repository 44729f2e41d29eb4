/**
 * A host running VMs alone on a quorum lease accepts the returning peer's proposal (docs/core.md): when the
 * proposal changes the quorum set, that lease stops counting, and the proposal's echo of one of the host's
 * heartbeats must carry its authority (a pair lease) so that its VMs are not fenced in that step. Found in
 * the lab: a host back within seconds of a failover proposed a switch of quorum server, and the survivor's
 * watchdog killed the VM it had just taken over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasAuthority, step, type CoreState } from '../../src/core/host-core.js';
import type { PairPropose } from '../../src/core/types.js';
import { World } from '../../src/sim/world.js';

/** host2 runs vm1 alone, on the lease of its active quorum server, after host1's power was cut. */
function survivor(): CoreState {
  const w = new World({ hosts: ['host1', 'host2'], quorumServers: ['quorum1', 'quorum2'], vms: [{ name: 'vm1', owner: 'host1' }] });
  w.start();
  w.runUntil(5000);
  w.powerOff('host1');
  w.runUntil(15_000);
  assert.deepEqual(w.runningCopies('vm1'), ['host2']);
  const core = w.host('host2').core!;
  assert.equal(core.durable.authority, 'quorum');
  assert.ok(hasAuthority(core));
  return core;
}

function proposal(core: CoreState, echo: PairPropose['echo']): PairPropose {
  const other = core.durable.activeQuorum === 'quorum1' ? 'quorum2' : 'quorum1';
  return { kind: 'pair-propose', from: 'host1', epoch: core.durable.epoch + 1, activeQuorum: other, vms: core.durable.vms, ...(echo ? { echo } : {}) };
}

test('a proposal that switches quorum server, echoing a heartbeat of ours, keeps our authority: no fence', () => {
  const core = survivor();
  const [after, d] = step(core, { type: 'peer-message', now: core.now + 1, msg: proposal(core, { incarnation: core.incarnation, seq: core.seq }) });
  assert.equal(after.durable.authority, 'pair');
  assert.ok(hasAuthority(after), 'the echo is a round trip: the pair lease runs from it');
  assert.deepEqual(d.effects.filter((e) => e.kind === 'stop-vm'), []);
  // A pair lease: about a lease length from the echoed heartbeat, renewed by every heartbeat after it.
  assert.ok(d.fenceAt === null || d.fenceAt > after.now + 500, `the watchdog is not about to fire: ${d.fenceAt} at ${after.now}`);
});

test('without the echo (a peer that predates it), the same proposal leaves no authority until a heartbeat comes back', () => {
  const core = survivor();
  const [after, d] = step(core, { type: 'peer-message', now: core.now + 1, msg: proposal(core, undefined) });
  assert.equal(hasAuthority(after), false, 'the quorum lease no longer counts, and no pair lease yet');
  assert.ok(d.effects.some((e) => e.kind === 'stop-vm' && e.vm === 'vm1'), 'the VM is stopped, as it must be without authority');
});

test('an echo of another boot of ours, or of a heartbeat we no longer remember, gives no lease', () => {
  const core = survivor();
  const [stale] = step(core, { type: 'peer-message', now: core.now + 1, msg: proposal(core, { incarnation: core.incarnation - 1, seq: core.seq }) });
  assert.equal(hasAuthority(stale), false);
  const [unknown] = step(core, { type: 'peer-message', now: core.now + 1, msg: proposal(core, { incarnation: core.incarnation, seq: core.seq + 1000 }) });
  assert.equal(hasAuthority(unknown), false);
});
