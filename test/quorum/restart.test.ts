// The quorum server as a real process, killed with SIGKILL and restarted: it must keep every epoch it ever
// granted (the record is on disk before the reply leaves), wait one full lease before granting to anyone
// but the recorded holder (it cannot know how much of the old lease was left), and never grant the same
// epoch to two hosts.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import type { QuorumAnswer } from '../../src/quorum/client.js';
import { ask, Cleanup, makeWorld, record, runQuorumCli, sleep, spawnServer, type HostName, type World } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Every grant seen, checked as it comes: an epoch belongs to one host, and a new holder's epoch is newer than all before. */
class GrantLedger {
  private readonly owner = new Map<number, string>();
  private newest = 0;
  note(host: string, a: QuorumAnswer): void {
    if (a.kind !== 'granted') return;
    const had = this.owner.get(a.epoch);
    if (had !== undefined) {
      assert.equal(had, host, `epoch ${a.epoch} granted to ${had} and then to ${host}`);
    } else {
      assert.ok(a.epoch > this.newest, `new epoch ${a.epoch} for ${host} is not newer than ${this.newest}`);
      this.owner.set(a.epoch, host);
      this.newest = a.epoch;
    }
  }
}

async function enrollByCli(world: World): Promise<void> {
  const r = await runQuorumCli(['enroll', '--state', world.stateDir, '--pair', 'p1', '--ca', world.pairCa.p1.cert]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^enrolled pair p1 \(CA sha256 [0-9a-f]{64}\)/);
}

test('after kill -9 the server grants nobody but the holder for a full lease (the longer of old and new), then a newer epoch', async () => {
  const world = await makeWorld(cleanup, { enroll: false });
  await enrollByCli(world);
  const ledger = new GrantLedger();
  const asking = async (as: HostName, port: number, knownEpoch: number): Promise<QuorumAnswer> => {
    const a = await ask(world, port, as, { knownEpoch, timeoutMs: 1000 });
    ledger.note(as, a);
    return a;
  };

  const first = await spawnServer(cleanup, world.stateDir, { leaseMs: 1000 });
  assert.deepEqual(await asking('host1', first.port, 5), { kind: 'granted', epoch: 5 });
  await first.killHard();
  assert.deepEqual(await record(world), { epoch: 5, holder: 'host1', leaseMs: 1000 });

  // Restarted with a shorter lease: it must still wait out the 1000 ms the holder may have been given.
  const restartedAt = performance.now();
  const second = await spawnServer(cleanup, world.stateDir, { port: first.port, leaseMs: 200 });
  let grantedAt = 0;
  let grant: QuorumAnswer | undefined;
  let denials = 0;
  while (performance.now() - restartedAt < 5000) {
    const a = await asking('host2', second.port, 0);
    if (a.kind === 'granted') {
      grantedAt = performance.now();
      grant = a;
      break;
    }
    assert.deepEqual(a, { kind: 'denied', epoch: 5, holder: 'host1' });
    denials++;
    await sleep(50);
  }
  assert.ok(grant, 'host2 was never granted');
  assert.ok(denials > 0);
  assert.ok(grantedAt - restartedAt >= 1000, `granted ${Math.round(grantedAt - restartedAt)} ms after the restart began`);
  assert.deepEqual(grant, { kind: 'granted', epoch: 6 });
  assert.deepEqual(await record(world), { epoch: 6, holder: 'host2', leaseMs: 200 });
  assert.ok(second.lines.some((l) => /pair=p1 loaded: epoch=5 holder=host1 \(others wait 1000 ms\)/.test(l)), second.lines.join('\n'));
  assert.ok(second.lines.some((l) => /pair=p1 host=host2 granted epoch=6 \(new holder, was host1\)/.test(l)));
});

test('kill -9 right after each reply: the record on disk has the epoch; the holder renews at once after the restart', async () => {
  const world = await makeWorld(cleanup, { enroll: false });
  await enrollByCli(world);
  const ledger = new GrantLedger();
  const LEASE = 2000;
  let server = await spawnServer(cleanup, world.stateDir, { leaseMs: LEASE });
  const port = server.port;
  let a = await ask(world, port, 'host1', { knownEpoch: 0 });
  ledger.note('host1', a);
  assert.deepEqual(a, { kind: 'granted', epoch: 1 });
  let epoch = 1;
  for (let round = 0; round < 4; round++) {
    // The holder brings news of a newer epoch (as from the pair's other quorum server): a durable change.
    a = await ask(world, port, 'host1', { knownEpoch: epoch + 3 });
    ledger.note('host1', a);
    await server.killHard();
    assert.deepEqual(a, { kind: 'granted', epoch: epoch + 3 });
    epoch += 3;
    assert.deepEqual(await record(world), { epoch, holder: 'host1', leaseMs: LEASE }, `round ${round}`);

    server = await spawnServer(cleanup, world.stateDir, { port, leaseMs: LEASE });
    const t = performance.now();
    a = await ask(world, port, 'host1', { knownEpoch: epoch });
    ledger.note('host1', a);
    assert.deepEqual(a, { kind: 'granted', epoch }, 'the holder renews the same epoch');
    assert.ok(performance.now() - t < LEASE / 2);
    const other = await ask(world, port, 'host2', { knownEpoch: epoch + 100 });
    ledger.note('host2', other);
    assert.deepEqual(other, { kind: 'denied', epoch, holder: 'host1' });
  }
  await server.killHard();
});

test('one server per state directory; a lock left by a killed server is taken over', async () => {
  const world = await makeWorld(cleanup);
  const first = await spawnServer(cleanup, world.stateDir, { leaseMs: 1000 });
  const second = await runQuorumCli(['serve', '--state', world.stateDir, '--listen', '127.0.0.1:0']);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /QUORUM_STATE: .* is served already by lockstep-quorum pid \d+/);
  await first.killHard();
  const third = await spawnServer(cleanup, world.stateDir, { leaseMs: 1000 });
  assert.deepEqual(await ask(world, third.port, 'host1'), { kind: 'granted', epoch: 1 });
});
