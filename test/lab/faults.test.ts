import { test } from 'node:test';
import assert from 'node:assert/strict';
import { healed, linkStates, noFaults, parseFaultRequest, withFault, type FaultSet } from '../../src/lab/faults.js';
import { isLockstepError } from '../../src/util/errors.js';

function up(set: FaultSet, node: string, ifname: string): boolean {
  const link = linkStates(set).find((l) => l.node === node && l.ifname === ifname);
  assert.ok(link, `no link ${node}/${ifname}`);
  return link.up;
}

test('with no faults every controlled link is up', () => {
  assert.ok(linkStates(noFaults()).every((l) => l.up));
});

test('alink names both A-Links; alink1 only the first', () => {
  assert.deepEqual(parseFaultRequest('host1', 'alink').faults, ['alink1', 'alink2']);
  assert.deepEqual(parseFaultRequest('host2', 'alink1').faults, ['alink1']);
});

test('a cut A-Link lowers the fabric ports at both ends, like a cut cable', () => {
  const set = withFault(noFaults(), parseFaultRequest('host1', 'alink1'));
  assert.equal(up(set, 'fabric', 'a1h1'), false);
  assert.equal(up(set, 'fabric', 'a1h2'), false);
  assert.equal(up(set, 'fabric', 'a2h1'), true);
});

test('power lowers every link inside the host and nothing of the other host', () => {
  const set = withFault(noFaults(), parseFaultRequest('host2', 'power'));
  for (const ifname of ['mgmt0', 'biz0', 'alink1', 'alink2']) assert.equal(up(set, 'host2', ifname), false);
  for (const ifname of ['mgmt0', 'biz0', 'alink1', 'alink2']) assert.equal(up(set, 'host1', ifname), true);
});

test('faults compose: healing one target leaves the other target faulted', () => {
  let set = withFault(noFaults(), parseFaultRequest('host1', 'mgmt'));
  set = withFault(set, parseFaultRequest('quorum1', 'mgmt'));
  set = healed(set, 'host1');
  assert.equal(up(set, 'fabric', 'm-host1'), true);
  assert.equal(up(set, 'fabric', 'm-quorum1'), false);
  assert.deepEqual(healed(set).quorumServers.quorum1, []);
});

test('failing twice is the same as failing once', () => {
  const once = withFault(noFaults(), parseFaultRequest('host1', 'business'));
  const twice = withFault(once, parseFaultRequest('host1', 'business'));
  assert.deepEqual(twice, once);
});

test('unknown targets and faults are clear errors', () => {
  assert.throws(() => parseFaultRequest('host3', 'power'), (e) => isLockstepError(e, 'UNKNOWN_HOST') && /host3/.test(e.message));
  assert.throws(() => parseFaultRequest('host1', 'smoke'), (e) => isLockstepError(e, 'UNKNOWN_FAULT') && /smoke/.test(e.message));
  assert.throws(() => parseFaultRequest('quorum1', 'disk'), (e) => isLockstepError(e, 'UNKNOWN_FAULT'));
  assert.throws(() => healed(noFaults(), 'nowhere'), (e) => isLockstepError(e, 'UNKNOWN_HOST'));
});
