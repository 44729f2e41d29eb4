/**
 * The FT promise end to end, at library level, on real QEMU: the lab guest FT-protected by `FtPrimary` →
 * `FtBackup` (harness: `ft-pair-harness.ts`), a client on ONE TCP connection appending without pause (the
 * guest fsyncs each record before it answers), the primary's QEMU SIGKILLed at a random moment, the backup
 * takes over: the same connection carries on, every acknowledged record is there, and nothing acknowledged
 * after the failover contradicts what was acknowledged before it.
 *
 * Held output past the gate's soft limit ends an epoch early. Then the faults that must not let output out early: a checkpoint the backup refuses, a disk whose epochs
 * can never commit (its copy's export is gone, so the seal is refused): in both, the answer to an append of
 * that epoch stays held while the primary reports the peer lost, and comes only once the caller decides to go
 * unprotected; the guest and its connection carry on, not restarted.
 *
 * A handover ends protection without a loss: under appends on one connection none fails, held output leaves
 * once the backup's copy holds every write, and the copy is then the primary's disk, byte for byte.
 *
 * LOCKSTEP_FT_REPEATS (default 2) is how many kills at random moments, each on a fresh pair. Needs root.
 * No timed assertions: waits are bounds, and "held" is checked while the gate provably holds frames.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Cleanup } from '../support/cleanup.js';
import { sleep } from './helpers.js';
import { run } from '../../src/util/exec.js';
import { LineClient, pairNetwork, startPair, type FtPair } from './ft-pair-harness.js';
import type { LockstepError } from '../../src/util/errors.js';

const isRoot = process.getuid?.() === 0;
const REPEATS = Number(process.env['LOCKSTEP_FT_REPEATS'] ?? 2);
const EPOCH_MS = 20;
/** Long enough for a TCG guest to answer many times over, were its answer not held. */
const HOLD_CHECK_MS = 1_500;
const APPENDS_AFTER_FAILOVER = 20;

const fileCleanup = new Cleanup();
after(() => fileCleanup.run());
let ns: string | undefined;
let pairs = 0;

async function network(): Promise<string> {
  ns ??= await pairNetwork(fileCleanup, 'lsftpair');
  return ns;
}

/** Appends on `client` until `stop()`, one at a time; every ack kept as seq → text. */
async function appendUntil(client: LineClient, prefix: string, acked: Map<number, string>, stop: () => boolean): Promise<number> {
  let n = 0;
  while (!stop()) {
    const text = `${prefix}-${++n}`;
    const reply = await client.request(`append ${text}`);
    const m = /^ok (\d+)$/.exec(reply);
    assert.ok(m, `reply '${reply}' to append ${text}`);
    assert.equal(acked.has(Number(m[1])), false, `seq ${m[1]} acknowledged twice`);
    acked.set(Number(m[1]), text);
  }
  return n;
}

for (let r = 1; r <= REPEATS; r++) {
  test(`the FT promise (${r}/${REPEATS}): SIGKILL of the primary at a random moment; the same connection carries on; every acknowledged record is there`, { skip: !isRoot && 'needs root (namespaces, taps)' }, async (t) => {
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const pair = await startPair({ cleanup, ns: await network(), index: ++pairs, epochMs: EPOCH_MS });
    const client = await LineClient.open(cleanup, pair.proxySocket);
    const uptimeBefore = Number(/uptime_ms=(\d+)/.exec(await client.request('stats'))![1]);

    const before = new Map<number, string>();
    let killed = false;
    const load = appendUntil(client, `r${r}a`, before, () => killed);
    const killAfterMs = 1_000 + Math.floor(Math.random() * 3_000);
    await sleep(killAfterMs);
    const atKill = pair.primary!.stats;
    await pair.killPrimary();
    killed = true;
    const took = await pair.takeOver();
    t.diagnostic(
      `killed after ${killAfterMs} ms: epoch ${atKill.sentEpoch} sent, ${atKill.peerCommittedEpoch} acked, ${before.size} appends acked so far; ` +
        `resumed from epoch ${took.epoch} (dropped disk epochs ${took.discarded.discardedEpochs.join(',') || 'none'}), takeover ${took.timings.totalMs.toFixed(0)} ms ` +
        `(drain ${took.timings.drainMs.toFixed(0)}, discard ${took.timings.discardMs.toFixed(0)}, copy stop ${took.timings.copyStopMs.toFixed(0)}, resume ${took.timings.resumeMs.toFixed(0)})`,
    );
    assert.ok(took.epoch >= atKill.peerCommittedEpoch, 'resumed from the last acked epoch or a later committed one');
    // The append in flight at the kill is answered by the resumed guest, on the same connection.
    await load;
    const after = new Map<number, string>();
    let n = 0;
    await appendUntil(client, `r${r}b`, after, () => ++n > APPENDS_AFTER_FAILOVER);
    assert.equal(after.size, APPENDS_AFTER_FAILOVER);

    for (const [seq, text] of after) assert.equal(before.get(seq) ?? text, text, `seq ${seq}: '${before.get(seq)}' before the failover, '${text}' after`);
    for (const [seq, text] of [...before, ...after]) assert.equal(await client.request(`get ${seq}`), `record ${seq} ${text}`);
    const uptimeAfter = Number(/uptime_ms=(\d+)/.exec(await client.request('stats'))![1]);
    assert.ok(uptimeAfter > uptimeBefore, 'the service ran on (its uptime did not start again)');
    assert.doesNotMatch(await readFile(took.resumed.vm.paths.serialLog, 'utf8'), /Linux version/, 'the resumed VM did not boot');
  });
}

/** Shows that the answer to `line` is held while protection is lost, then released by the caller's decision. */
async function heldUntilUnprotected(pair: FtPair, client: LineClient, line: string, lost: Promise<LockstepError>): Promise<{ reply: string; error: LockstepError }> {
  const gate = pair.gate!;
  client.send(line);
  const error = await lost;
  assert.equal(pair.primary!.stats.state, 'peer-lost');
  const releasedAtLoss = gate.stats.released;
  await sleep(HOLD_CHECK_MS);
  assert.ok(gate.stats.heldFrames > 0, 'the guest answered into the gate');
  assert.equal(client.unread, 0, `no answer to '${line}' while protection is lost and the caller has not decided`);
  assert.equal(gate.stats.released, releasedAtLoss, 'nothing released after the loss');
  pair.primary!.goUnprotected();
  return { reply: await client.next(), error };
}

test('held output past the soft limit ends the epoch early; a checkpoint the backup refuses releases nothing; the caller goes unprotected: held output leaves, the guest and its connection carry on', { skip: !isRoot && 'needs root (namespaces, taps)' }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  // A soft limit of 1 KiB: 40 pipelined answers pass it, and the epoch ends early.
  const pair = await startPair({ cleanup, ns: await network(), index: ++pairs, epochMs: EPOCH_MS, relay: true, heldBytesSoftMax: 1024 });
  const client = await LineClient.open(cleanup, pair.proxySocket);
  for (let i = 1; i <= 5; i++) assert.match(await client.request(`append p${i}`), /^ok \d+$/);
  for (let i = 0; i < 40; i++) client.send('stats');
  for (let i = 0; i < 40; i++) assert.match(await client.next(), /^stats uptime_ms=/);
  assert.ok(pair.gate!.stats.softLimitCrossings >= 1, 'the held answers passed the soft limit');
  assert.ok(pair.primary!.stats.earlyEpochs >= 1, 'and an epoch ended early for it');
  const uptime = Number(/uptime_ms=(\d+)/.exec(await client.request('stats'))![1]);

  const lost = new Promise<LockstepError>((resolve) => pair.primary!.once('peerLost', resolve));
  pair.relay!.damageNext();
  const { reply, error } = await heldUntilUnprotected(pair, client, 'append refused-epoch', lost);
  t.diagnostic(`protection lost: ${error.code}: ${error.message}`);
  assert.equal(error.code, 'CHECKPOINT_REFUSED');
  assert.equal(error.fields['peerCode'], 'CHECKPOINT_WIRE');
  assert.ok(pair.relay!.damaged);
  assert.match(reply, /^ok \d+$/);
  const outcome = await pair.backup!.ended();
  assert.equal(outcome.refused?.code, 'CHECKPOINT_WIRE');
  assert.ok(pair.primary!.stats.peerCommittedEpoch < pair.primary!.stats.sentEpoch, 'the refused epoch was never acked');

  // Unprotected: answers come at once, on the same connection, from the same guest (no restart).
  for (let i = 0; i < 10; i++) assert.match(await client.request(`append u${i}`), /^ok \d+$/);
  assert.ok(Number(/uptime_ms=(\d+)/.exec(await client.request('stats'))![1]) > uptime);
  assert.equal((await pair.vm.qmp.execute<{ status: string }>('query-status')).status, 'running');
});

test('a disk seal that cannot succeed (the copy is gone) releases nothing; after go-unprotected the guest carries on', { skip: !isRoot && 'needs root (namespaces, taps)' }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const pair = await startPair({ cleanup, ns: await network(), index: ++pairs, epochMs: EPOCH_MS });
  const client = await LineClient.open(cleanup, pair.proxySocket);
  for (let i = 1; i <= 5; i++) assert.match(await client.request(`append p${i}`), /^ok \d+$/);

  const lost = new Promise<LockstepError>((resolve) => pair.primary!.once('peerLost', resolve));
  // The copy's export dies: every epoch from the open one on can never commit, so its seal is refused.
  await pair.backupCopy.stop();
  const { reply, error } = await heldUntilUnprotected(pair, client, 'append after-copy-lost', lost);
  t.diagnostic(`protection lost: ${error.code}: ${error.message}`);
  assert.ok(error.code === 'CHECKPOINT_REFUSED' || error.code === 'MIRROR_FAILED', `lost because ${error.code}`);
  if (error.code === 'CHECKPOINT_REFUSED') assert.equal(error.fields['peerCode'], 'EPOCH_DISK');
  assert.match(reply, /^ok \d+$/);
  for (let i = 0; i < 5; i++) assert.match(await client.request(`append u${i}`), /^ok \d+$/);
});

test('a handover under appends: no append fails, output flows at once after it, the backup takes writes through, and its copy ends identical to the primary\'s disk', { skip: !isRoot && 'needs root (namespaces, taps)' }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const pair = await startPair({ cleanup, ns: await network(), index: ++pairs, epochMs: EPOCH_MS });
  const client = await LineClient.open(cleanup, pair.proxySocket);
  const acked = new Map<number, string>();
  let handedOver = false;
  let afterHandover = 0;
  const load = appendUntil(client, 'h', acked, () => handedOver && ++afterHandover > APPENDS_AFTER_FAILOVER);
  await sleep(1_500);
  const before = pair.primary!.stats;
  await pair.primary!.handOver();
  handedOver = true;
  const disk = pair.disk!.stats();
  t.diagnostic(`handed over after epoch ${before.peerCommittedEpoch}; epoch disk now ${disk.mode}, ${disk.heldBytes} bytes held`);
  assert.equal(pair.primary!.stats.state, 'handed-over');
  assert.equal(disk.mode, 'through');
  assert.equal(disk.heldBytes, 0, 'every held write is on the copy');
  assert.equal(pair.gate!.stats.protected, false, 'output passes at once');
  await load;
  for (const [seq, text] of acked) assert.equal(await client.request(`get ${seq}`), `record ${seq} ${text}`);
  assert.equal(pair.gate!.stats.heldFrames, 0);

  // Quiesced: the guest's QEMU quits (flushing its image), the copy's export lets go; the two must be equal.
  await pair.vm.qmp.execute('quit').catch(() => undefined);
  await pair.vm.exited;
  await pair.disk!.close();
  await pair.backupCopy.stop();
  const compared = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', pair.sourceDisk, pair.copyDisk!], { allowFailure: true });
  assert.equal(compared.code, 0, `qemu-img compare: ${compared.stdout}${compared.stderr}`);
});
