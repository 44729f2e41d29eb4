/**
 * How the pair agrees on a live migration's multifd connections (src/core/host-core.ts,
 * MIGRATION_MULTIFD_CHANNELS): the source proposes them in its heartbeat, the destination listens with what
 * it accepts and says so, the source migrates with that. Both QEMUs must agree or the migration fails, so a
 * host that predates the fields (its heartbeats lack them) must get one stream both ways. Run in the
 * simulated world, every heartbeat through the wire schema; the world refuses a migration whose connections
 * differ from what the destination listens for.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { World } from '../../src/sim/world.js';
import { MIGRATION_MULTIFD_CHANNELS } from '../../src/core/host-core.js';
import { parsePeerEnvelope, toPeerEnvelope } from '../../src/protocol/peer.js';
import type { Effect, PeerMessage } from '../../src/core/types.js';

type RunEffect = (h: { id: string }, e: Effect) => void;

/** A heartbeat without `multifd`, as a host that predates it sends one. */
function predating(msg: PeerMessage): PeerMessage {
  const wire = JSON.parse(JSON.stringify(toPeerEnvelope(msg))) as { body: Record<string, Record<string, Record<string, unknown>>> };
  for (const field of ['migrations', 'incoming']) for (const entry of Object.values(wire.body[field] ?? {})) delete entry['multifd'];
  return parsePeerEnvelope(wire);
}

/** Migrates vm1 from host1 to host2, `old` sending heartbeats without the fields; the multifd each side used. */
function migrateWith(old: 'host1' | 'host2' | null): { listened: number[]; migrated: number[]; owner: string[] } {
  const proto = World.prototype as unknown as { runEffect: RunEffect };
  const original = proto.runEffect;
  const listened: number[] = [];
  const migrated: number[] = [];
  proto.runEffect = function (this: unknown, h, e) {
    if (e.kind === 'prepare-incoming') listened.push(e.multifd);
    if (e.kind === 'migrate-vm') migrated.push(e.multifd);
    if (h.id === old && e.kind === 'send-peer') e = { ...e, msg: predating(e.msg) };
    // And it listens as it always did: one stream.
    if (h.id === old && e.kind === 'prepare-incoming') e = { ...e, multifd: 0 };
    return original.call(this, h, e);
  };
  try {
    const w = new World({ hosts: ['host1', 'host2'], quorumServers: ['quorum1'], vms: [{ name: 'vm1', owner: 'host1', protection: 'ha' }] });
    w.start();
    w.runUntil(5000);
    w.command('host1', { kind: 'migrate-vm', name: 'vm1' });
    w.runUntil(20_000);
    return { listened, migrated, owner: w.runningCopies('vm1') };
  } finally {
    proto.runEffect = original;
  }
}

test('both hosts current: the destination listens for the proposed connections and the source migrates with them', () => {
  assert.ok(MIGRATION_MULTIFD_CHANNELS > 0);
  assert.deepEqual(migrateWith(null), { listened: [MIGRATION_MULTIFD_CHANNELS], migrated: [MIGRATION_MULTIFD_CHANNELS], owner: ['host2'] });
});

test('a source that predates multifd proposes none: the destination listens for one stream', () => {
  const { listened, owner } = migrateWith('host1');
  assert.deepEqual(listened, [0]);
  assert.deepEqual(owner, ['host2']);
});

test('a destination that predates multifd says nothing of it: the source migrates over one stream', () => {
  const { migrated, owner } = migrateWith('host2');
  assert.deepEqual(migrated, [0]);
  assert.deepEqual(owner, ['host2']);
});
