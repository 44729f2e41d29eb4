/**
 * The checkpoint stream between the primary and the backup: framed, bounded, parsed strictly. Independent of
 * the transport (the A-Link's TLS streams, a unix socket in tests).
 *
 * Every record is `type u8 | length u32 | payload` (big-endian). Primary → backup, one checkpoint:
 *
 *   HEADER  magic "LSCK", version u8 (1), flags u8 (bit 0: full image), vm name (u8 length + bytes),
 *           epoch u64, page size u32, RAM size u64, pages u32, runs u32, device-state bytes u32
 *   PAGES   × runs: first page u32, page count u32 (1 to 256), then count × page size bytes
 *   DEVICE  the device state, exactly as many bytes as the header said
 *   END     crc32 u32 of every byte of this checkpoint's records before END (record heads included)
 *
 * Between checkpoints, the FT pair's control records (`ft-primary.ts`, `ft-backup.ts`):
 *
 *   SEAL     vm, epoch u64: the primary's guest is paused at the end of this epoch; seal its disk writes
 *   HANDOVER vm, epoch u64 (the last checkpoint the primary had acked, 0 for none): the run ends here; the
 *            backup applies every disk write it holds and from now on writes each one through to its copy
 *            before answering (its copy becomes HA's). The last record of a stream.
 *
 * Backup → primary: ACK (vm, epoch u64: that epoch is committed), SEALED (vm, epoch: the disk seal took
 * effect), HANDEDOVER (vm, epoch: the copy holds every write and takes later ones through), PRESSURE (vm, epoch: the backup's held disk writes passed their pressure mark, end the epoch
 * early) or REFUSED (vm, epoch, error code, message: the backup will not take this stream; it closes it after
 * this record).
 *
 * What the parser holds to, so that bad input is an error naming what is wrong, and never a partial
 * checkpoint: records come in that order; a length is checked against its type's bound before a byte of the
 * payload is buffered (nothing over ~1 MiB per page record, 8 MiB for device state); the header must match
 * what the receiver expects (VM, page size, RAM size); runs are ascending, do not overlap, lie inside RAM and
 * add up to the header's counts; a full image covers every page; the checksum matches. A checkpoint is handed
 * on only once its END has been checked. After an error the decoder takes nothing more: the stream's framing
 * cannot be trusted past it.
 */
import { crc32 } from 'node:zlib';
import { assert } from '../util/assert.js';
import { LockstepError } from '../util/errors.js';
import { VM_NAME_RE } from '../qemu/vm-spec.js';
import { DEVICE_STATE_BYTES_MAX } from './checkpoint.js';
import type { PageRun } from './ram-tracker.js';

export const WIRE_VERSION = 1;
const MAGIC = 0x4c53434b; // "LSCK"
export const RUN_PAGES_MAX = 256;
const RECORD_HEAD_BYTES = 5;
const REFUSED_MESSAGE_BYTES_MAX = 1024;

export const RecordType = { header: 1, pages: 2, device: 3, end: 4, ack: 5, refused: 6, seal: 7, sealed: 8, pressure: 9, handover: 10, handedover: 11 } as const;
type RecordTypeName = keyof typeof RecordType;
const TYPE_NAMES = new Map<number, RecordTypeName>(Object.entries(RecordType).map(([k, v]) => [v, k as RecordTypeName]));

/** A checkpoint as it travels: what the primary's `Checkpoint` carries and the backup stages. */
export interface CheckpointData {
  vm: string;
  epoch: number;
  full: boolean;
  pageBytes: number;
  ramBytes: number;
  runs: readonly PageRun[];
  deviceState: Buffer;
}

export interface Ack {
  vm: string;
  epoch: number;
}

export interface Refusal {
  vm: string;
  epoch: number;
  code: string;
  message: string;
}

/** What the receiver knows before the first byte: the stream must describe exactly this VM. */
export interface WireExpectation {
  vm: string;
  pageBytes: number;
  ramBytes: number;
}

/* ------------------------------------------------------------------ encoding */

/**
 * The records of one checkpoint, as buffers to write in order. Page data are views into `cp.runs` (no copy),
 * so they must not change until written out. Runs longer than 256 pages are split.
 */
export function encodeCheckpoint(cp: CheckpointData): Buffer[] {
  return [...checkpointRecords(cp)];
}

/**
 * `encodeCheckpoint` as it is written: each buffer is summed into the END record's crc32 only when the
 * writer takes it. A full image summed at once was one stall of 70–430 ms on this machine's main thread;
 * taken buffer by buffer (1 MiB of pages at most), the sum runs between the writes that wait for the socket.
 */
export function* checkpointRecords(cp: CheckpointData): Generator<Buffer, void, undefined> {
  const runs: PageRun[] = [];
  for (const r of cp.runs) {
    assert(r.data.length > 0 && r.data.length % cp.pageBytes === 0, 'encodeCheckpoint: a run of partial pages');
    const runBytesMax = RUN_PAGES_MAX * cp.pageBytes;
    for (let o = 0; o < r.data.length; o += runBytesMax) {
      runs.push({ firstPage: r.firstPage + o / cp.pageBytes, data: r.data.subarray(o, Math.min(r.data.length, o + runBytesMax)) });
    }
  }
  const pageCount = runs.reduce((n, r) => n + r.data.length / cp.pageBytes, 0);
  const vm = Buffer.from(cp.vm, 'utf8');
  const header = Buffer.alloc(4 + 1 + 1 + 1 + vm.length + 8 + 4 + 8 + 4 + 4 + 4);
  let o = header.writeUInt32BE(MAGIC, 0);
  o = header.writeUInt8(WIRE_VERSION, o);
  o = header.writeUInt8(cp.full ? 1 : 0, o);
  o = header.writeUInt8(vm.length, o);
  o += vm.copy(header, o);
  o = header.writeBigUInt64BE(BigInt(cp.epoch), o);
  o = header.writeUInt32BE(cp.pageBytes, o);
  o = header.writeBigUInt64BE(BigInt(cp.ramBytes), o);
  o = header.writeUInt32BE(pageCount, o);
  o = header.writeUInt32BE(runs.length, o);
  header.writeUInt32BE(cp.deviceState.length, o);

  const out: Buffer[] = [recordHead(RecordType.header, header.length), header];
  for (const r of runs) {
    const head = Buffer.alloc(RECORD_HEAD_BYTES + 8);
    head.writeUInt8(RecordType.pages, 0);
    head.writeUInt32BE(8 + r.data.length, 1);
    head.writeUInt32BE(r.firstPage, 5);
    head.writeUInt32BE(r.data.length / cp.pageBytes, 9);
    out.push(head, r.data);
  }
  out.push(recordHead(RecordType.device, cp.deviceState.length), cp.deviceState);
  let crc = 0;
  for (const b of out) {
    crc = crc32(b, crc);
    yield b;
  }
  const end = Buffer.alloc(4);
  end.writeUInt32BE(crc >>> 0, 0);
  yield recordHead(RecordType.end, 4);
  yield end;
}

export function encodeAck(ack: Ack): Buffer {
  const body = vmEpoch(ack.vm, ack.epoch);
  return Buffer.concat([recordHead(RecordType.ack, body.length), body]);
}

/** A control record of `vm` and `epoch`: SEAL or HANDOVER (primary → backup), SEALED, HANDEDOVER or PRESSURE (backup → primary). */
export function encodeControl(type: 'seal' | 'sealed' | 'pressure' | 'handover' | 'handedover', vm: string, epoch: number): Buffer {
  const body = vmEpoch(vm, epoch);
  return Buffer.concat([recordHead(RecordType[type], body.length), body]);
}

export function encodeRefusal(r: Refusal): Buffer {
  const code = Buffer.from(r.code.slice(0, 64), 'utf8');
  let message = Buffer.from(r.message, 'utf8');
  if (message.length > REFUSED_MESSAGE_BYTES_MAX) message = message.subarray(0, REFUSED_MESSAGE_BYTES_MAX);
  const head = vmEpoch(r.vm, r.epoch);
  const body = Buffer.alloc(head.length + 1 + code.length + 2 + message.length);
  let o = head.copy(body, 0);
  o = body.writeUInt8(code.length, o);
  o += code.copy(body, o);
  o = body.writeUInt16BE(message.length, o);
  message.copy(body, o);
  return Buffer.concat([recordHead(RecordType.refused, body.length), body]);
}

function recordHead(type: number, length: number): Buffer {
  const b = Buffer.alloc(RECORD_HEAD_BYTES);
  b.writeUInt8(type, 0);
  b.writeUInt32BE(length, 1);
  return b;
}

function vmEpoch(vm: string, epoch: number): Buffer {
  const name = Buffer.from(vm, 'utf8');
  const b = Buffer.alloc(1 + name.length + 8);
  b.writeUInt8(name.length, 0);
  name.copy(b, 1);
  b.writeBigUInt64BE(BigInt(epoch), 1 + name.length);
  return b;
}

/* ------------------------------------------------------------------ decoding */

function wireError(problem: string, fields: Record<string, unknown> = {}): LockstepError {
  return new LockstepError('CHECKPOINT_WIRE', `checkpoint stream: ${problem}`, fields);
}

/** Splits a byte stream into records, refusing a type not expected here or a length over its type's bound
 * before buffering its payload. */
class RecordReader {
  private chunks: Buffer[] = [];
  /** The first chunk not yet consumed. */
  private head = 0;
  private buffered = 0;
  /** The head of the record being read, once its 5 bytes are in. */
  private pending: { type: number; length: number } | undefined;

  constructor(private readonly maxPayload: (type: RecordTypeName) => number | undefined) {}

  /** Appends bytes and hands each complete record to `onRecord` as soon as it is complete, so that what the
   * record changes (the bound of the next one) holds for the record after it. */
  push(chunk: Buffer, onRecord: (type: RecordTypeName, head: Buffer, payload: Buffer) => void): void {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    for (;;) {
      if (this.pending === undefined) {
        if (this.buffered < RECORD_HEAD_BYTES) return;
        const head = this.take(RECORD_HEAD_BYTES);
        const type = head.readUInt8(0);
        const length = head.readUInt32BE(1);
        const name = TYPE_NAMES.get(type);
        const max = name === undefined ? undefined : this.maxPayload(name);
        if (name === undefined || max === undefined) throw wireError(`unexpected record type ${type}${name ? ` (${name})` : ''}`, { field: 'type', type });
        if (length > max) throw wireError(`a ${name} record of ${length} bytes is over its bound of ${max}`, { field: 'length', type: name, length, max });
        this.pending = { type, length };
      }
      if (this.buffered < this.pending.length) return;
      const { type, length } = this.pending;
      this.pending = undefined;
      onRecord(TYPE_NAMES.get(type)!, recordHead(type, length), this.take(length));
    }
  }

  /** Bytes received and not yet part of a complete record. */
  get partialBytes(): number {
    return this.buffered + (this.pending ? RECORD_HEAD_BYTES : 0);
  }

  /** Takes `n` buffered bytes: a view when they lie in one chunk, else one copy. Chunks are consumed by
   * index, not `shift()`: a peer sending one byte at a time must not make this quadratic. */
  private take(n: number): Buffer {
    this.buffered -= n;
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[this.head]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      this.consume(first, n);
    } else {
      out = Buffer.allocUnsafe(n);
      let o = 0;
      while (o < n) {
        const c = this.chunks[this.head]!;
        const k = Math.min(c.length, n - o);
        c.copy(out, o, 0, k);
        o += k;
        this.consume(c, k);
      }
    }
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return out;
  }

  private consume(c: Buffer, k: number): void {
    if (k === c.length) this.head++;
    else this.chunks[this.head] = c.subarray(k);
  }
}

/** A strict reader of a record's payload: running past its end or leaving bytes over is an error. */
class Fields {
  private o = 0;
  constructor(
    private readonly b: Buffer,
    private readonly record: string,
  ) {}
  u8(field: string): number {
    this.need(1, field);
    return this.b.readUInt8(this.o++);
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.b.readUInt16BE(this.o);
    this.o += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.b.readUInt32BE(this.o);
    this.o += 4;
    return v;
  }
  u64(field: string): number {
    this.need(8, field);
    const v = this.b.readBigUInt64BE(this.o);
    this.o += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw wireError(`${this.record}.${field} ${v} is too large`, { field: `${this.record}.${field}` });
    return Number(v);
  }
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.b.subarray(this.o, this.o + n);
    this.o += n;
    return v;
  }
  name(field: string): string {
    const s = this.bytes(this.u8(`${field} length`), field).toString('utf8');
    if (!VM_NAME_RE.test(s)) throw wireError(`${this.record}.${field} ${JSON.stringify(s)} is not a VM name`, { field: `${this.record}.${field}` });
    return s;
  }
  done(): void {
    if (this.o !== this.b.length) throw wireError(`${this.record} record has ${this.b.length - this.o} bytes more than its fields`, { field: this.record });
  }
  private need(n: number, field: string): void {
    if (this.o + n > this.b.length) throw wireError(`${this.record} record is too short for ${field}`, { field: `${this.record}.${field}` });
  }
}

interface Header {
  vm: string;
  epoch: number;
  full: boolean;
  pageBytes: number;
  ramBytes: number;
  pageCount: number;
  runCount: number;
  deviceStateBytes: number;
}

/** A checkpoint received whole and verified; nothing of it has been applied anywhere. */
export interface StagedCheckpoint extends CheckpointData {
  pageCount: number;
  /** Bytes of the stream it took (records included). */
  wireBytes: number;
}

/** What the backup reads from the stream, in stream order: a verified checkpoint, a disk seal request, or the run's handover. */
export type BackupInput = { kind: 'checkpoint'; checkpoint: StagedCheckpoint } | { kind: 'seal'; epoch: number } | { kind: 'handover'; epoch: number };

/** A control record's payload bound: vm name (u8 length + up to 255 bytes) and epoch u64. */
const VM_EPOCH_BYTES_MAX = 1 + 255 + 8;

/**
 * The backup's side: turns the stream into verified checkpoints and seal requests. Throws `CHECKPOINT_WIRE` naming the problem;
 * after that, `push` refuses everything.
 */
export class CheckpointDecoder {
  private readonly reader: RecordReader;
  private header: Header | undefined;
  private runs: PageRun[] = [];
  private pagesSeen = 0;
  private nextFreePage = 0;
  private deviceState: Buffer | undefined;
  private crc = 0;
  private wireBytes = 0;
  private broken: LockstepError | undefined;
  /** A HANDOVER came: the stream has nothing more to say. */
  private handedOver = false;

  constructor(private readonly expect: WireExpectation) {
    this.reader = new RecordReader((type) => this.maxPayload(type));
  }

  push(chunk: Buffer): BackupInput[] {
    if (this.broken) throw this.broken;
    try {
      const out: BackupInput[] = [];
      this.reader.push(chunk, (type, head, payload) => {
        if (this.handedOver) throw wireError(`a ${type} record after the handover (it is a stream's last)`, { field: 'type' });
        if (type === 'seal') {
          out.push({ kind: 'seal', epoch: this.readControl(payload, 'seal', 1) });
          return;
        }
        if (type === 'handover') {
          this.handedOver = true;
          out.push({ kind: 'handover', epoch: this.readControl(payload, 'handover', 0) });
          return;
        }
        const staged = this.record(type, head, payload);
        if (staged) out.push({ kind: 'checkpoint', checkpoint: staged });
      });
      return out;
    } catch (e) {
      if (e instanceof LockstepError) this.broken = e;
      throw e;
    }
  }

  /** The stream ended: throws `CHECKPOINT_WIRE` if it ended inside a checkpoint. */
  end(): void {
    if (this.broken) return;
    if (this.header !== undefined || this.reader.partialBytes > 0) {
      this.broken = wireError(
        this.header ? `the stream ended inside the checkpoint of epoch ${this.header.epoch} (it is not applied)` : `the stream ended inside a record (${this.reader.partialBytes} bytes)`,
        { field: 'end', epoch: this.header?.epoch ?? null },
      );
      throw this.broken;
    }
  }

  /** The epoch being received, if a header has come. */
  get receivingEpoch(): number | null {
    return this.header?.epoch ?? null;
  }

  private maxPayload(type: RecordTypeName): number | undefined {
    const h = this.header;
    if (h === undefined) return type === 'header' ? 4 + 3 + 255 + 32 : type === 'seal' || type === 'handover' ? VM_EPOCH_BYTES_MAX : undefined;
    if (this.runs.length < h.runCount) return type === 'pages' ? 8 + RUN_PAGES_MAX * h.pageBytes : undefined;
    if (this.deviceState === undefined) return type === 'device' ? h.deviceStateBytes : undefined;
    return type === 'end' ? 4 : undefined;
  }

  private record(type: RecordTypeName, head: Buffer, payload: Buffer): StagedCheckpoint | undefined {
    this.wireBytes += head.length + payload.length;
    if (type === 'end') return this.finish(payload);
    this.crc = crc32(payload, crc32(head, this.crc));
    if (type === 'header') this.readHeader(payload);
    else if (type === 'pages') this.readPages(payload);
    else this.readDevice(payload);
    return undefined;
  }

  private readHeader(payload: Buffer): void {
    const f = new Fields(payload, 'header');
    const magic = f.u32('magic');
    if (magic !== MAGIC) throw wireError(`header magic is 0x${magic.toString(16)}, not a checkpoint stream`, { field: 'header.magic' });
    const version = f.u8('version');
    if (version !== WIRE_VERSION) throw wireError(`header version ${version} is not ${WIRE_VERSION}`, { field: 'header.version', version });
    const flags = f.u8('flags');
    if ((flags & ~1) !== 0) throw wireError(`header flags 0x${flags.toString(16)} has unknown bits`, { field: 'header.flags' });
    const h: Header = {
      full: (flags & 1) === 1,
      vm: f.name('vm'),
      epoch: f.u64('epoch'),
      pageBytes: f.u32('pageBytes'),
      ramBytes: f.u64('ramBytes'),
      pageCount: f.u32('pageCount'),
      runCount: f.u32('runCount'),
      deviceStateBytes: f.u32('deviceStateBytes'),
    };
    f.done();
    const e = this.expect;
    const field = (name: string, problem: string): never => {
      throw wireError(`header.${name} ${problem}`, { field: `header.${name}`, epoch: h.epoch });
    };
    if (h.vm !== e.vm) field('vm', `is '${h.vm}', this stream is for '${e.vm}'`);
    if (h.epoch < 1) field('epoch', 'is 0 (epochs start at 1)');
    if (h.pageBytes !== e.pageBytes) field('pageBytes', `is ${h.pageBytes}, not ${e.pageBytes}`);
    if (h.ramBytes !== e.ramBytes) field('ramBytes', `is ${h.ramBytes}, not the VM's ${e.ramBytes}`);
    const ramPages = e.ramBytes / e.pageBytes;
    if (h.pageCount > ramPages) field('pageCount', `${h.pageCount} is more than RAM's ${ramPages} pages`);
    if (h.full && h.pageCount !== ramPages) field('pageCount', `${h.pageCount} does not cover RAM's ${ramPages} pages in a full image`);
    if (h.runCount > h.pageCount || (h.pageCount > 0 && h.runCount === 0)) field('runCount', `${h.runCount} does not fit ${h.pageCount} pages`);
    if (h.runCount < Math.ceil(h.pageCount / RUN_PAGES_MAX)) field('runCount', `${h.runCount} runs cannot carry ${h.pageCount} pages of at most ${RUN_PAGES_MAX} each`);
    if (h.deviceStateBytes < 1 || h.deviceStateBytes > DEVICE_STATE_BYTES_MAX) field('deviceStateBytes', `${h.deviceStateBytes} is not between 1 and ${DEVICE_STATE_BYTES_MAX}`);
    this.header = h;
  }

  /**
   * A seal or a handover names this stream's VM and an epoch of at least `least` (a seal's epoch is one that
   * ran, ≥ 1; a handover may come before any checkpoint, 0); between checkpoints only (`maxPayload`).
   */
  private readControl(payload: Buffer, type: 'seal' | 'handover', least: 0 | 1): number {
    const f = new Fields(payload, type);
    const vm = f.name('vm');
    const epoch = f.u64('epoch');
    f.done();
    if (vm !== this.expect.vm) throw wireError(`${type}.vm is '${vm}', this stream is for '${this.expect.vm}'`, { field: `${type}.vm`, epoch });
    if (epoch < least) throw wireError(`${type}.epoch is 0 (epochs start at 1)`, { field: `${type}.epoch` });
    return epoch;
  }

  private readPages(payload: Buffer): void {
    const h = this.header!;
    const f = new Fields(payload, 'pages');
    const firstPage = f.u32('firstPage');
    const count = f.u32('pageCount');
    const where = { epoch: h.epoch, run: this.runs.length, firstPage, pageCount: count };
    if (count < 1 || count > RUN_PAGES_MAX) throw wireError(`run ${this.runs.length} has ${count} pages (1 to ${RUN_PAGES_MAX})`, { field: 'pages.pageCount', ...where });
    if (firstPage < this.nextFreePage) throw wireError(`run ${this.runs.length} starts at page ${firstPage}, before the end of the previous run (${this.nextFreePage})`, { field: 'pages.firstPage', ...where });
    const ramPages = h.ramBytes / h.pageBytes;
    if (firstPage + count > ramPages) throw wireError(`run ${this.runs.length} (pages ${firstPage} to ${firstPage + count - 1}) is outside RAM's ${ramPages} pages`, { field: 'pages.firstPage', ...where });
    if (this.pagesSeen + count > h.pageCount) throw wireError(`runs carry more than the header's ${h.pageCount} pages`, { field: 'pages.pageCount', ...where });
    const data = f.bytes(count * h.pageBytes, 'data');
    f.done();
    this.runs.push({ firstPage, data });
    this.pagesSeen += count;
    this.nextFreePage = firstPage + count;
  }

  private readDevice(payload: Buffer): void {
    const h = this.header!;
    if (this.pagesSeen !== h.pageCount) throw wireError(`runs carried ${this.pagesSeen} pages, the header said ${h.pageCount}`, { field: 'header.pageCount', epoch: h.epoch });
    if (payload.length !== h.deviceStateBytes) {
      throw wireError(`device state is ${payload.length} bytes, the header said ${h.deviceStateBytes}`, { field: 'device.length', epoch: h.epoch });
    }
    this.deviceState = payload;
  }

  private finish(payload: Buffer): StagedCheckpoint {
    const h = this.header!;
    const f = new Fields(payload, 'end');
    const crc = f.u32('crc32');
    f.done();
    if (crc !== this.crc >>> 0) {
      throw wireError(`checksum of epoch ${h.epoch} is 0x${crc.toString(16)}, its content sums to 0x${(this.crc >>> 0).toString(16)}`, { field: 'end.crc32', epoch: h.epoch });
    }
    const staged: StagedCheckpoint = {
      vm: h.vm,
      epoch: h.epoch,
      full: h.full,
      pageBytes: h.pageBytes,
      ramBytes: h.ramBytes,
      runs: this.runs,
      pageCount: h.pageCount,
      deviceState: this.deviceState!,
      wireBytes: this.wireBytes,
    };
    this.header = undefined;
    this.runs = [];
    this.pagesSeen = 0;
    this.nextFreePage = 0;
    this.deviceState = undefined;
    this.crc = 0;
    this.wireBytes = 0;
    return staged;
  }
}

/** What the primary reads from the backup. */
export type Reply =
  | { kind: 'ack'; ack: Ack }
  | { kind: 'sealed'; ack: Ack }
  | { kind: 'handedover'; ack: Ack }
  | { kind: 'pressure'; ack: Ack }
  | { kind: 'refused'; refusal: Refusal };

/** The primary's side: the backup's answers. Throws `CHECKPOINT_WIRE`; after that, refuses everything. */
export class ReplyDecoder {
  private readonly reader = new RecordReader((type) =>
    type === 'ack' || type === 'sealed' || type === 'handedover' || type === 'pressure' ? VM_EPOCH_BYTES_MAX : type === 'refused' ? VM_EPOCH_BYTES_MAX + 1 + 64 + 2 + REFUSED_MESSAGE_BYTES_MAX : undefined,
  );
  private broken: LockstepError | undefined;

  push(chunk: Buffer): Reply[] {
    if (this.broken) throw this.broken;
    try {
      const out: Reply[] = [];
      this.reader.push(chunk, (type, _head, payload) => {
        const f = new Fields(payload, type);
        const vm = f.name('vm');
        const epoch = f.u64('epoch');
        if (type === 'ack' || type === 'sealed' || type === 'handedover' || type === 'pressure') {
          f.done();
          out.push({ kind: type, ack: { vm, epoch } });
          return;
        }
        const code = f.bytes(f.u8('code length'), 'code').toString('utf8');
        const message = f.bytes(f.u16('message length'), 'message').toString('utf8');
        f.done();
        out.push({ kind: 'refused', refusal: { vm, epoch, code, message } });
      });
      return out;
    } catch (e) {
      if (e instanceof LockstepError) this.broken = e;
      throw e;
    }
  }
}
