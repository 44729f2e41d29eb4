// The epoch disk's NBD server and our NBD client against real qemu-nbd, without QEMU: malformed input gets
// an NBD error or a clean disconnect and the next client is served; a refused write or a writer that
// vanished means the open epoch can never commit; the memory bound reports pressure, then refuses; reads
// overlay held writes; the client's own errors.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { EpochDisk, type EpochDiskStats } from '../../src/ft/epoch-disk.js';
import { CopyExport } from '../../src/storage/copy-export.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { NbdClient } from '../../src/storage/nbd-client.js';
import {
  ByteQueue,
  NBD_CMD,
  NBD_ERR,
  NBD_OPT,
  NBD_REP,
  encodeClientFlags,
  encodeGoData,
  encodeOption,
  encodeRequest,
  parseOptionReplyHeader,
  parseSimpleReply,
  type NbdRequest,
} from '../../src/storage/nbd-protocol.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, tempDir } from '../qemu/helpers.js';
import { copyFileHolds } from './epoch-disk-helpers.js';

const MIB = 1024 * 1024;
const KIB = 1024;
const VM = 'web';
const SIZE = 16 * MIB;

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Backup {
  dir: string;
  copy: string;
  disk: EpochDisk;
  socketPath: string;
}

async function backup(limits: { heldBytesMax?: number; pressureBytes?: number } = {}): Promise<Backup> {
  const dir = await tempDir(cleanup, 'lockstep-epoch-nbd-');
  const copy = path.join(dir, 'copy.qcow2');
  await createQcow2(copy, SIZE / MIB);
  const exp = await CopyExport.start({ vm: VM, disk: copy, format: 'qcow2', socketPath: path.join(dir, 'copy.sock'), cache: 'writeback' });
  cleanup.add(() => exp.stop());
  const socketPath = path.join(dir, 'ft.sock');
  const disk = await EpochDisk.start({ vm: VM, socketPath, copySocketPath: exp.socketPath, ...limits });
  cleanup.add(() => disk.close());
  return { dir, copy, disk, socketPath };
}

async function client(b: Backup): Promise<NbdClient> {
  const c = await NbdClient.connect(b.socketPath, VM);
  cleanup.add(() => c.close());
  return c;
}

/** A hand-driven NBD client: sends exactly the bytes a test gives, reads replies, sees the close. */
class Raw {
  private readonly q = new ByteQueue();
  private waiter: (() => void) | null = null;
  ended = false;
  private constructor(readonly s: net.Socket) {
    s.on('data', (b: Buffer) => {
      this.q.push(b);
      this.waiter?.();
    });
    s.on('close', () => {
      this.ended = true;
      this.waiter?.();
    });
    s.on('error', () => undefined);
  }

  static async open(socketPath: string): Promise<Raw> {
    const s = net.connect(socketPath);
    cleanup.add(() => s.destroy());
    await new Promise((resolve) => s.once('connect', resolve));
    const r = new Raw(s);
    assert.equal((await r.bytes(18)).subarray(0, 16).toString('latin1'), 'NBDMAGICIHAVEOPT');
    return r;
  }

  /** Greeted, fixed newstyle with NO_ZEROES, in transmission through NBD_OPT_GO. */
  static async transmitting(socketPath: string): Promise<Raw> {
    const r = await Raw.open(socketPath);
    r.s.write(encodeClientFlags(true));
    r.s.write(encodeOption(NBD_OPT.GO, encodeGoData(VM, [])));
    for (;;) {
      const h = await r.optionReply();
      if (h.type === NBD_REP.ACK) return r;
      assert.equal(h.type, NBD_REP.INFO);
    }
  }

  bytes(n: number, timeoutMs = 5000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.q.length} of ${n} bytes within ${timeoutMs} ms`)), timeoutMs);
      const check = (): void => {
        if (this.q.length >= n) {
          clearTimeout(timer);
          this.waiter = null;
          resolve(this.q.take(n));
        } else if (this.ended) {
          clearTimeout(timer);
          this.waiter = null;
          reject(new Error(`closed after ${this.q.length} of ${n} bytes`));
        }
      };
      this.waiter = check;
      check();
    });
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = parseOptionReplyHeader(await this.bytes(20));
    assert.ok(!('reason' in h), 'an option reply');
    return { option: h.option, type: h.type, data: await this.bytes(h.length) };
  }

  async reply(): Promise<{ error: number; handle: bigint }> {
    const r = parseSimpleReply(await this.bytes(16));
    assert.ok(!('reason' in r), 'a simple reply');
    return r;
  }

  request(r: Partial<NbdRequest> & { type: number }, payload?: Buffer): void {
    this.s.write(encodeRequest({ flags: 0, handle: 7n, offset: 0, length: payload?.length ?? 0, ...r }));
    if (payload) this.s.write(payload);
  }

  /** Resolves once the server has closed the connection. */
  closed(timeoutMs = 5000): Promise<void> {
    return this.bytes(Number.MAX_SAFE_INTEGER, timeoutMs).then(
      () => assert.fail('more bytes than exist'),
      (e: Error) => assert.match(e.message, /^closed/, 'the server closed the connection'),
    );
  }
}

/** The next client is served as if nothing happened: handshake, write, read back. */
async function servesNext(b: Backup, offset: number): Promise<void> {
  const c = await client(b);
  await c.write(offset, Buffer.alloc(4 * KIB, 0x77));
  assert.deepEqual(await c.read(offset, 4 * KIB), Buffer.alloc(4 * KIB, 0x77));
  await c.close();
}

test('handshake garbage: unknown or refused options get NBD errors, framing errors a clean close; the next client is served', async () => {
  const b = await backup();
  let r = await Raw.open(b.socketPath);
  r.s.write(Buffer.from([0, 0, 0, 0])); // not fixed newstyle
  await r.closed();

  r = await Raw.open(b.socketPath);
  r.s.write(encodeClientFlags(true));
  r.s.write(encodeOption(NBD_OPT.STRUCTURED_REPLY));
  assert.equal((await r.optionReply()).type, NBD_REP.ERR_UNSUP, 'structured replies refused: QEMU falls back to simple replies');
  r.s.write(encodeOption(NBD_OPT.STARTTLS));
  assert.equal((await r.optionReply()).type, NBD_REP.ERR_UNSUP);
  r.s.write(encodeOption(77, Buffer.from('whatever')));
  assert.equal((await r.optionReply()).type, NBD_REP.ERR_UNSUP);
  r.s.write(encodeOption(NBD_OPT.LIST));
  const listed = await r.optionReply();
  assert.equal(listed.type, NBD_REP.SERVER);
  assert.equal(listed.data.subarray(4).toString(), VM);
  assert.equal((await r.optionReply()).type, NBD_REP.ACK);
  r.s.write(encodeOption(NBD_OPT.LIST, Buffer.from('x')));
  assert.equal((await r.optionReply()).type, NBD_REP.ERR_INVALID);
  r.s.write(encodeOption(NBD_OPT.GO, encodeGoData('nosuch', [])));
  assert.equal((await r.optionReply()).type, NBD_REP.ERR_UNKNOWN);
  r.s.write(encodeOption(NBD_OPT.GO, Buffer.concat([encodeGoData(VM, []), Buffer.from([1])])));
  assert.equal((await r.optionReply()).type, NBD_REP.ERR_INVALID, 'a GO whose lengths do not add up');
  r.s.write(encodeOption(NBD_OPT.INFO, encodeGoData(VM, [3])));
  const infos: number[] = [];
  for (let h = await r.optionReply(); h.type !== NBD_REP.ACK; h = await r.optionReply()) infos.push(h.data.readUInt16BE(0));
  assert.deepEqual(infos, [0, 3], 'INFO describes the export and its block sizes, and stays in the handshake');
  r.s.write(encodeOption(NBD_OPT.ABORT));
  assert.equal((await r.optionReply()).type, NBD_REP.ACK);
  await r.closed();

  r = await Raw.open(b.socketPath);
  r.s.write(encodeClientFlags(true));
  r.s.write(Buffer.from('IHAVEOPX\0\0\0\x07\0\0\0\0', 'latin1'));
  await r.closed(); // bad option magic
  r = await Raw.open(b.socketPath);
  r.s.write(encodeClientFlags(true));
  const huge = encodeOption(NBD_OPT.GO);
  huge.writeUInt32BE(1 << 30, 12);
  r.s.write(huge);
  await r.closed(); // an option longer than any we know
  r = await Raw.open(b.socketPath);
  r.s.write(encodeClientFlags(true));
  r.s.write(encodeOption(NBD_OPT.EXPORT_NAME, Buffer.from('nosuch')));
  await r.closed(); // EXPORT_NAME has no error reply

  await servesNext(b, 0);
  assert.equal(b.disk.stats().broken, null, 'nothing in the handshake touches the epochs');
});

test('bad requests: NBD errors for well-framed ones, a clean close for a broken frame; a refused write breaks the epoch', async () => {
  const b = await backup();
  await b.disk.hold(1);
  const r = await Raw.transmitting(b.socketPath);
  const expectError = async (req: Partial<NbdRequest> & { type: number }, errno: number, payload?: Buffer): Promise<void> => {
    r.request(req, payload);
    const reply = await r.reply();
    assert.equal(reply.error, errno, `${JSON.stringify({ ...req, handle: undefined })} → ${reply.error}`);
    assert.equal(reply.handle, 7n);
  };
  await expectError({ type: NBD_CMD.READ, offset: SIZE - 512, length: 1024 }, NBD_ERR.EINVAL);
  await expectError({ type: NBD_CMD.READ, length: 64 * MIB }, NBD_ERR.EINVAL);
  await expectError({ type: NBD_CMD.READ, length: 0 }, NBD_ERR.EINVAL);
  await expectError({ type: NBD_CMD.READ, length: 512, flags: 0x40 }, NBD_ERR.EINVAL);
  await expectError({ type: 99 }, NBD_ERR.EINVAL);
  await expectError({ type: NBD_CMD.BLOCK_STATUS, length: 512 }, NBD_ERR.EINVAL);
  await expectError({ type: NBD_CMD.FLUSH, length: 1 }, NBD_ERR.EINVAL);
  await expectError({ type: NBD_CMD.WRITE_ZEROES, length: 512, flags: 0x10 }, NBD_ERR.EINVAL, undefined);
  assert.equal(b.disk.stats().broken?.fromEpoch, 1, 'a write-type request refused: the open epoch can never commit');
  await expectError({ type: NBD_CMD.TRIM, length: 512 }, NBD_ERR.EINVAL);
  // Its payload is taken in and dropped, so the next request is read from the right place.
  await expectError({ type: NBD_CMD.WRITE, offset: SIZE - 512, length: 4096 }, NBD_ERR.ENOSPC, Buffer.alloc(4096, 1));
  await expectError({ type: NBD_CMD.WRITE, offset: 0, length: 4096 }, NBD_ERR.EIO, Buffer.alloc(4096, 1));
  r.request({ type: NBD_CMD.READ, offset: 0, length: 512 });
  assert.equal((await r.reply()).error, 0);
  assert.deepEqual(await r.bytes(512), Buffer.alloc(512));
  r.s.write(Buffer.alloc(28, 0xee)); // bad request magic
  await r.closed();

  const w = await Raw.transmitting(b.socketPath);
  w.request({ type: NBD_CMD.WRITE, length: 64 * MIB });
  await w.closed(); // a payload larger than advertised cannot be skipped safely

  b.disk.seal(1);
  await assert.rejects(b.disk.commit(1), (e: unknown) => e instanceof LockstepError && e.code === 'EPOCH_DISK' && /can never commit/.test(e.message));
  // Still serving: reads (writes are refused now that nothing more can commit).
  const c = await client(b);
  assert.deepEqual(await c.read(0, 4 * KIB), Buffer.alloc(4 * KIB));
  await assert.rejects(c.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof LockstepError && e.code === 'NBD_REQUEST_FAILED' && e.fields['errno'] === NBD_ERR.EIO);
});

test('during the initial sync an out-of-range write gets ENOSPC and the copy is no checkpoint; reads overlay held writes over the copy', async () => {
  const b = await backup();
  const r = await Raw.transmitting(b.socketPath);
  r.request({ type: NBD_CMD.WRITE, offset: SIZE - 512, length: 1024 }, Buffer.alloc(1024, 3));
  assert.equal((await r.reply()).error, NBD_ERR.ENOSPC);
  r.request({ type: NBD_CMD.DISC });
  await r.closed();
  assert.equal(b.disk.stats().broken?.fromEpoch, null, 'refused during the initial sync: the copy is no checkpoint');
  await assert.rejects(b.disk.hold(1), /initial sync .* not complete/);

  // A clean disk: committed bytes from the copy, pending ones from memory, later writes over earlier.
  const ok = await backup();
  const c = await client(ok);
  await c.write(0, Buffer.alloc(64 * KIB, 0x01));
  await ok.disk.hold(1);
  await c.write(4 * KIB, Buffer.alloc(8 * KIB, 0x02));
  ok.disk.seal(1);
  await c.writeZeroes(6 * KIB, 1 * KIB, false);
  await c.write(10 * KIB, Buffer.alloc(4 * KIB, 0x03));
  const expected = Buffer.alloc(64 * KIB, 0x01);
  expected.fill(0x02, 4 * KIB, 12 * KIB);
  expected.fill(0, 6 * KIB, 7 * KIB);
  expected.fill(0x03, 10 * KIB, 14 * KIB);
  assert.deepEqual(await c.read(0, 64 * KIB), expected);
  assert.ok(await copyFileHolds(ok.copy, 0, 64 * KIB, 0x01), 'nothing held is on the copy');
  await ok.disk.commit(1);
  assert.ok(await copyFileHolds(ok.copy, 4 * KIB, 8 * KIB, 0x02));
  assert.ok(await copyFileHolds(ok.copy, 12 * KIB, 4 * KIB, 0x01), 'epoch 2 is still held');
  assert.deepEqual(await c.read(0, 64 * KIB), expected);
  await c.close();
  assert.equal(ok.disk.stats().broken, null, 'a client that ended with NBD_CMD_DISC breaks nothing');
});

test('held memory: pressure past its mark, then writes refused (ENOSPC) and the epoch can never commit; sealed epochs before still can', async () => {
  const b = await backup({ heldBytesMax: 200 * KIB, pressureBytes: 100 * KIB });
  await b.disk.hold(1);
  const pressure: EpochDiskStats[] = [];
  b.disk.on('pressure', (s) => pressure.push(s));
  const c = await client(b);
  await c.write(0, Buffer.alloc(64 * KIB, 1));
  assert.equal(pressure.length, 0);
  await c.write(64 * KIB, Buffer.alloc(64 * KIB, 2));
  assert.equal(pressure.length, 1, 'pressure once past 100 KiB');
  assert.equal(pressure[0]!.pressure, true);
  b.disk.seal(1);
  await c.write(128 * KIB, Buffer.alloc(32 * KIB, 3));
  await assert.rejects(c.write(160 * KIB, Buffer.alloc(64 * KIB, 4)), (e: unknown) => e instanceof LockstepError && e.fields['errno'] === NBD_ERR.ENOSPC);
  assert.equal(b.disk.stats().broken?.fromEpoch, 2);
  const committed = await b.disk.commit(1);
  assert.equal(committed.writes, 2);
  assert.equal(b.disk.stats().pressure, false, 'the commit freed the memory');
  assert.ok(await copyFileHolds(b.copy, 64 * KIB, 64 * KIB, 2));
  b.disk.seal(2);
  await assert.rejects(b.disk.commit(2), /epoch 2 .* can never commit: held writes would pass/);
  const discard = await b.disk.discardUncommitted();
  assert.equal(discard.committedEpoch, 1);
  assert.deepEqual(discard.discardedEpochs, [2]);
});

test('a writer that vanishes without NBD_CMD_DISC breaks the open epoch; a reader that does breaks nothing', async () => {
  const b = await backup();
  await b.disk.hold(1);
  const reader = await Raw.transmitting(b.socketPath);
  reader.request({ type: NBD_CMD.READ, length: 512 });
  assert.equal((await reader.reply()).error, 0);
  await reader.bytes(512);
  reader.s.destroy();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(b.disk.stats().broken, null);
  const writer = await Raw.transmitting(b.socketPath);
  writer.request({ type: NBD_CMD.WRITE, length: 512 }, Buffer.alloc(512, 9));
  assert.equal((await writer.reply()).error, 0);
  const broken = new Promise((resolve) => b.disk.once('broken', resolve));
  writer.s.destroy();
  assert.deepEqual(await broken, { fromEpoch: 1, reason: 'a client that wrote went away without NBD_CMD_DISC' });
});

test('the NBD client: clear errors for no server, a server that breaks the protocol or does not answer', async () => {
  const dir = await tempDir(cleanup, 'lockstep-nbd-client-');
  const code = (c: string, pattern: RegExp) => (e: unknown) => e instanceof LockstepError && e.code === c && pattern.test(e.message);
  await assert.rejects(NbdClient.connect(path.join(dir, 'none.sock'), VM), code('NBD_DISCONNECTED', /ENOENT/));

  // A fake server: greets and negotiates like ours, then answers requests as each test says.
  let onRequest: (s: net.Socket, req: Buffer) => void = () => undefined;
  const fake = net.createServer((s) => {
    s.on('error', () => undefined);
    const q = new ByteQueue();
    let phase: 'flags' | 'opt' | 'req' = 'flags';
    s.write(Buffer.concat([Buffer.from('NBDMAGICIHAVEOPT', 'latin1'), Buffer.from([0, 3])]));
    s.on('data', (b: Buffer) => {
      q.push(b);
      for (;;) {
        if (phase === 'flags' && q.length >= 4) {
          q.take(4);
          phase = 'opt';
        } else if (phase === 'opt' && q.length >= 16) {
          const len = q.take(16).readUInt32BE(12);
          q.take(len);
          const info = Buffer.alloc(12);
          info.writeBigUInt64BE(BigInt(MIB), 2);
          info.writeUInt16BE(1 | 4, 10);
          const rep = (type: number, data = Buffer.alloc(0)): Buffer => {
            const h = Buffer.alloc(20);
            h.writeBigUInt64BE(0x3e889045565a9n, 0);
            h.writeUInt32BE(NBD_OPT.GO, 8);
            h.writeUInt32BE(type, 12);
            h.writeUInt32BE(data.length, 16);
            return Buffer.concat([h, data]);
          };
          s.write(Buffer.concat([rep(NBD_REP.INFO, info), rep(NBD_REP.ACK)]));
          phase = 'req';
        } else if (phase === 'req' && q.length >= 28) {
          onRequest(s, q.take(28));
        } else return;
      }
    });
  });
  const fakePath = path.join(dir, 'fake.sock');
  await new Promise<void>((resolve) => fake.listen(fakePath, resolve));
  cleanup.add(() => new Promise((resolve) => fake.close(resolve)));

  onRequest = (s) => s.write(Buffer.alloc(16, 0xab)); // garbage for a reply
  let c = await NbdClient.connect(fakePath, VM);
  assert.equal(c.size, MIB);
  await assert.rejects(c.flush(), code('NBD_PROTOCOL', /broke the NBD protocol/));
  assert.equal((await c.closed).cause, 'protocol');

  onRequest = (s, req) => {
    const reply = Buffer.alloc(16);
    reply.writeUInt32BE(0x67446698, 0);
    reply.writeBigUInt64BE(req.readBigUInt64BE(8) + 1000n, 8);
    s.write(reply);
  };
  c = await NbdClient.connect(fakePath, VM);
  await assert.rejects(c.flush(), code('NBD_PROTOCOL', /not in flight/));

  onRequest = () => undefined; // never answers
  c = await NbdClient.connect(fakePath, VM, { requestTimeoutMs: 200 });
  await assert.rejects(c.read(0, 512), code('NBD_DISCONNECTED', /did not answer READ at 0 within 200 ms/));
  assert.equal((await c.closed).cause, 'timeout');
});
