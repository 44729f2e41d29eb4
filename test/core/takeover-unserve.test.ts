/**
 * The `takeover` mark on `unserve-copy` (docs/ft.md, "lockstepd"): the daemon keeps an FT copy's last
 * checkpoint as the VM's resume point only when its host takes the VM over; any other end of serving throws
 * the checkpoint away. Run in the simulated world.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { World } from '../../src/sim/world.js';

test('the backup stops serving a dead owner’s FT VM with the takeover mark, then runs it', () => {
  const w = new World({ hosts: ['host1', 'host2'], quorumServers: ['quorum1'], vms: [{ name: 'vm1', owner: 'host1', protection: 'ft' }] });
  w.start();
  w.runUntil(5000);
  assert.deepEqual(w.runningCopies('vm1'), ['host1']);
  assert.deepEqual(w.unserved, [], 'host2 serves its copy while host1 runs the VM');
  w.powerOff('host1');
  w.runUntil(15_000);
  assert.deepEqual(w.runningCopies('vm1'), ['host2']);
  assert.deepEqual(
    w.unserved.map(({ host, vm, reason, takeover }) => ({ host, vm, reason, takeover })),
    [{ host: 'host2', vm: 'vm1', reason: 'taking it over', takeover: true }],
  );
});

test('a copy that stops being served for another reason carries no takeover mark', () => {
  const w = new World({ hosts: ['host1', 'host2'], quorumServers: ['quorum1'], vms: [{ name: 'vm1', owner: 'host1', protection: 'ft' }] });
  w.start();
  w.runUntil(5000);
  w.command('host1', { kind: 'set-protection', name: 'vm1', protection: 'none' });
  w.runUntil(10_000);
  const ends = w.unserved.filter((u) => u.vm === 'vm1');
  assert.ok(ends.length >= 1, 'host2 stopped serving the copy of a VM no longer protected');
  assert.ok(ends.every((u) => !u.takeover && u.host === 'host2'), JSON.stringify(ends));
});
