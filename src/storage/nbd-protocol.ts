/**
 * The NBD wire format (the NBD protocol's `doc/proto.md`), as far as Lockstep speaks it: the fixed newstyle
 * handshake with `NBD_OPT_GO`/`INFO`/`EXPORT_NAME`/`LIST`/`ABORT`, and the transmission phase with simple
 * replies only. Structured replies are refused on purpose: with simple replies every answer is one header
 * (plus the data of a READ), which keeps both ends small and strict; QEMU then falls back to them.
 *
 * Pure: encoders return Buffers, parsers take exactly the bytes of one message and return a value or a
 * `NbdParseError` (a reason), never throw on bad input. Reading a byte stream into messages is `ByteQueue`'s
 * job. Shared by the FT epoch disk's server (`src/ft/epoch-disk.ts`) and our client (`nbd-client.ts`).
 */
import { assert } from '../util/assert.js';

export const NBD_MAGIC = Buffer.from('NBDMAGIC', 'latin1');
export const NBD_OPTS_MAGIC = Buffer.from('IHAVEOPT', 'latin1');
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1;
export const NBD_FLAG_NO_ZEROES = 2;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1;
export const NBD_FLAG_C_NO_ZEROES = 2;

export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

const ERR = 2 ** 31;
export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags. */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;

export const NBD_CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

/** Command flags. */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;

/** Error values in replies (the protocol's, which are Linux's errno numbers). */
export const NBD_ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export const NBD_GREETING_BYTES = 18;
export const NBD_CLIENT_FLAGS_BYTES = 4;
export const NBD_OPTION_HEADER_BYTES = 16;
export const NBD_OPTION_REPLY_HEADER_BYTES = 20;
export const NBD_REQUEST_BYTES = 28;
export const NBD_SIMPLE_REPLY_BYTES = 16;
/** The spec's bound on export names (and so on what an option naming one needs). */
export const NBD_NAME_BYTES_MAX = 4096;
/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zero bytes unless NO_ZEROES was agreed. */
const EXPORT_NAME_REPLY_ZEROES = 124;

export class NbdParseError {
  constructor(readonly reason: string) {}
}

export const isParseError = (v: unknown): v is NbdParseError => v instanceof NbdParseError;

/** Offsets are u64 on the wire; above 2^53 a JavaScript number is not exact, so such a value is refused. */
function readOffset(b: Buffer, at: number): number | NbdParseError {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return new NbdParseError(`a 64-bit value ${v} is beyond 2^53`);
  return Number(v);
}

// ---- handshake, server side ----

export function encodeServerGreeting(): Buffer {
  const b = Buffer.alloc(NBD_GREETING_BYTES);
  NBD_MAGIC.copy(b, 0);
  NBD_OPTS_MAGIC.copy(b, 8);
  b.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return b;
}

export interface ClientFlags {
  noZeroes: boolean;
}

/** The client's 4 flag bytes. Only fixed newstyle clients are served; unknown flags are refused, as the spec asks. */
export function parseClientFlags(b: Buffer): ClientFlags | NbdParseError {
  const flags = b.readUInt32BE(0);
  if ((flags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0) return new NbdParseError('the client is not fixed newstyle');
  if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) return new NbdParseError(`unknown client flags 0x${flags.toString(16)}`);
  return { noZeroes: (flags & NBD_FLAG_C_NO_ZEROES) !== 0 };
}

export interface OptionHeader {
  option: number;
  length: number;
}

export function parseOptionHeader(b: Buffer): OptionHeader | NbdParseError {
  if (!b.subarray(0, 8).equals(NBD_OPTS_MAGIC)) return new NbdParseError('an option without the IHAVEOPT magic');
  return { option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(NBD_OPTION_REPLY_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, NBD_OPTION_REPLY_HEADER_BYTES);
  return b;
}

export interface GoRequest {
  name: string;
  /** The NBD_INFO_* the client asked for. */
  infos: number[];
}

/** The data of NBD_OPT_GO and NBD_OPT_INFO: u32 name length, name, u16 count, count × u16, exactly. */
export function parseGoData(d: Buffer): GoRequest | NbdParseError {
  if (d.length < 6) return new NbdParseError(`option data of ${d.length} bytes is too short`);
  const nameBytes = d.readUInt32BE(0);
  if (nameBytes > NBD_NAME_BYTES_MAX) return new NbdParseError(`an export name of ${nameBytes} bytes`);
  if (d.length < 4 + nameBytes + 2) return new NbdParseError('the export name runs past the option');
  const count = d.readUInt16BE(4 + nameBytes);
  if (d.length !== 4 + nameBytes + 2 + 2 * count) return new NbdParseError(`option data of ${d.length} bytes does not hold a name of ${nameBytes} and ${count} info requests`);
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(d.readUInt16BE(4 + nameBytes + 2 + 2 * i));
  return { name: d.toString('utf8', 4, 4 + nameBytes), infos };
}

export function encodeGoData(name: string, infos: number[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infos.length);
  b.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + nameBytes.length);
  infos.forEach((info, i) => b.writeUInt16BE(info, 4 + nameBytes.length + 2 + 2 * i));
  return b;
}

export function encodeInfoExport(size: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

export function encodeInfoBlockSize(s: BlockSizes): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(s.minimum, 2);
  b.writeUInt32BE(s.preferred, 6);
  b.writeUInt32BE(s.maximum, 10);
  return b;
}

/** The answer to NBD_OPT_LIST, one per export: u32 name length, name. */
export function encodeServerName(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return b;
}

export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

// ---- handshake, client side ----

export interface ServerGreeting {
  noZeroes: boolean;
}

export function parseServerGreeting(b: Buffer): ServerGreeting | NbdParseError {
  if (!b.subarray(0, 8).equals(NBD_MAGIC)) return new NbdParseError('no NBDMAGIC in the greeting');
  if (!b.subarray(8, 16).equals(NBD_OPTS_MAGIC)) return new NbdParseError('not a newstyle server (no IHAVEOPT in the greeting)');
  const flags = b.readUInt16BE(16);
  if ((flags & NBD_FLAG_FIXED_NEWSTYLE) === 0) return new NbdParseError('the server is not fixed newstyle');
  return { noZeroes: (flags & NBD_FLAG_NO_ZEROES) !== 0 };
}

export function encodeClientFlags(noZeroes: boolean): Buffer {
  const b = Buffer.alloc(NBD_CLIENT_FLAGS_BYTES);
  b.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0), 0);
  return b;
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(NBD_OPTION_HEADER_BYTES + data.length);
  NBD_OPTS_MAGIC.copy(b, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, NBD_OPTION_HEADER_BYTES);
  return b;
}

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

export function parseOptionReplyHeader(b: Buffer): OptionReplyHeader | NbdParseError {
  if (b.readBigUInt64BE(0) !== NBD_REP_MAGIC) return new NbdParseError('an option reply without its magic');
  return { option: b.readUInt32BE(8), type: b.readUInt32BE(12), length: b.readUInt32BE(16) };
}

export type InfoReply = { kind: 'export'; size: number; flags: number } | ({ kind: 'block-size' } & BlockSizes) | { kind: 'other'; type: number };

/** The data of an NBD_REP_INFO reply; the infos we do not use are recognised and left alone. */
export function parseInfoReply(d: Buffer): InfoReply | NbdParseError {
  if (d.length < 2) return new NbdParseError('an info reply without its type');
  const type = d.readUInt16BE(0);
  if (type === NBD_INFO_EXPORT) {
    if (d.length !== 12) return new NbdParseError(`an export info of ${d.length} bytes (12 expected)`);
    const size = readOffset(d, 2);
    if (isParseError(size)) return size;
    return { kind: 'export', size, flags: d.readUInt16BE(10) };
  }
  if (type === NBD_INFO_BLOCK_SIZE) {
    if (d.length !== 14) return new NbdParseError(`a block size info of ${d.length} bytes (14 expected)`);
    return { kind: 'block-size', minimum: d.readUInt32BE(2), preferred: d.readUInt32BE(6), maximum: d.readUInt32BE(10) };
  }
  return { kind: 'other', type };
}

// ---- transmission ----

export interface NbdRequest {
  flags: number;
  type: number;
  /** The client's opaque 8 bytes, echoed in the reply. */
  handle: bigint;
  offset: number;
  length: number;
}

export function parseRequest(b: Buffer): NbdRequest | NbdParseError {
  if (b.readUInt32BE(0) !== NBD_REQUEST_MAGIC) return new NbdParseError(`a request with magic 0x${b.readUInt32BE(0).toString(16)}`);
  const offset = readOffset(b, 16);
  if (isParseError(offset)) return offset;
  return { flags: b.readUInt16BE(4), type: b.readUInt16BE(6), handle: b.readBigUInt64BE(8), offset, length: b.readUInt32BE(24) };
}

export function encodeRequest(r: NbdRequest): Buffer {
  const b = Buffer.alloc(NBD_REQUEST_BYTES);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.handle, 8);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

export interface SimpleReply {
  error: number;
  handle: bigint;
}

export function encodeSimpleReply(error: number, handle: bigint): Buffer {
  const b = Buffer.alloc(NBD_SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(handle, 8);
  return b;
}

export function parseSimpleReply(b: Buffer): SimpleReply | NbdParseError {
  const magic = b.readUInt32BE(0);
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) return new NbdParseError('a structured reply, which was not negotiated');
  if (magic !== NBD_SIMPLE_REPLY_MAGIC) return new NbdParseError(`a reply with magic 0x${magic.toString(16)}`);
  return { error: b.readUInt32BE(4), handle: b.readBigUInt64BE(8) };
}

export function commandName(type: number): string {
  const name = Object.entries(NBD_CMD).find(([, v]) => v === type)?.[0];
  return name ?? `command ${type}`;
}

/**
 * Bytes from a socket, taken in messages of known sizes. `take` copies, so a held WRITE payload owns its
 * memory instead of pinning a larger socket chunk (held bytes are what the epoch disk counts and bounds).
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** The next `n` bytes, removed from the queue, in a Buffer of their own; call only when `length >= n`. */
  take(n: number): Buffer {
    assert(n <= this.total, `ByteQueue.take(${n}) with ${this.total} bytes queued`);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const step = Math.min(n - filled, c.length - this.head);
      c.copy(out, filled, this.head, this.head + step);
      filled += step;
      this.head += step;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= n;
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
