/**
 * The wire format of QEMU's `filter-redirector` with `vnet_hdr_support=on`, both ways (QEMU's
 * `net/filter-mirror.c` writes it, `net_fill_rstate` in `net/net.c` reads it back):
 *
 *   4 bytes  big-endian length of the frame (virtio-net header included)
 *   4 bytes  big-endian length of the virtio-net header at the frame's start (10, or 12 with num_buffers)
 *   length   the frame: the virtio-net header, then the Ethernet frame (up to ~64 KiB with TSO)
 *
 * The output gate passes each record through whole (the same bytes go back to QEMU), so a record is kept as
 * one Buffer with its 8-byte header. Parsing is strict: a peer that breaks the framing once cannot be trusted
 * to frame the next record, and a half-understood frame must never reach the network.
 */
import { LockstepError } from '../util/errors.js';

export const RECORD_HEADER_BYTES = 8;
/** The virtio-net header sizes: `virtio_net_hdr` (10) and `virtio_net_hdr_mrg_rxbuf` / VIRTIO 1.0 (12). */
export const VNET_HDR_BYTES: readonly number[] = [10, 12];
/** QEMU's NET_BUFSIZE (4096 + 65536): the largest frame filter-redirector reads back from its chardev. */
export const FRAME_BYTES_MAX = 69_632;
/** An Ethernet header (two MACs and the type); anything shorter after the virtio-net header is no frame. */
const ETHERNET_HEADER_BYTES = 14;

/**
 * Cuts a byte stream into whole records. One reader per connection: a partial record left when a connection
 * ends is thrown away with the reader, never forwarded.
 */
export class FrameReader {
  /** Chunks of an incomplete record, concatenated only once the record is whole (so a 64 KiB frame that
   * arrives in many small reads costs one copy, not one per read). At most one record's bytes. */
  private chunks: Buffer[] = [];
  private chunkBytes = 0;
  /** Bytes needed before the next record can be cut: its header, then the whole record. */
  private needBytes = RECORD_HEADER_BYTES;
  /** Offset of the next unread byte in the whole stream, for error messages. */
  private streamOffset = 0;

  /** `socket` names the stream in errors (the gate's socket path). */
  constructor(private readonly socket: string) {}

  /** Bytes held of a record not yet complete. */
  get bufferedBytes(): number {
    return this.chunkBytes;
  }

  /**
   * The whole records completed by `chunk`, in stream order; each is a Buffer of header + frame. Throws
   * `OUTPUT_GATE_FRAME` at the first header that is not a valid record, before returning anything of the
   * chunk: the caller closes the stream.
   */
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.chunkBytes += chunk.length;
    if (this.chunkBytes < this.needBytes) return [];
    const buf = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.chunkBytes);
    const records: Buffer[] = [];
    let off = 0;
    this.needBytes = RECORD_HEADER_BYTES;
    while (buf.length - off >= RECORD_HEADER_BYTES) {
      const length = buf.readUInt32BE(off);
      const vnetHdrLen = buf.readUInt32BE(off + 4);
      this.check(length, vnetHdrLen, this.streamOffset + off);
      const end = off + RECORD_HEADER_BYTES + length;
      if (end > buf.length) {
        this.needBytes = RECORD_HEADER_BYTES + length;
        break;
      }
      records.push(buf.subarray(off, end));
      off = end;
    }
    this.streamOffset += off;
    // Copied so a few leftover bytes do not keep a whole 64 KiB chunk alive.
    this.chunks = off < buf.length ? [Buffer.from(buf.subarray(off))] : [];
    this.chunkBytes = buf.length - off;
    return records;
  }

  private check(length: number, vnetHdrLen: number, offset: number): void {
    let problem: string | null = null;
    if (!VNET_HDR_BYTES.includes(vnetHdrLen)) problem = `a vnet header length of ${vnetHdrLen} (expected ${VNET_HDR_BYTES.join(' or ')})`;
    else if (length < vnetHdrLen + ETHERNET_HEADER_BYTES) problem = `a frame length of ${length}, shorter than its vnet header and an Ethernet header (${vnetHdrLen + ETHERNET_HEADER_BYTES})`;
    else if (length > FRAME_BYTES_MAX) problem = `a frame length of ${length}, longer than QEMU's ${FRAME_BYTES_MAX}`;
    if (problem === null) return;
    throw new LockstepError('OUTPUT_GATE_FRAME', `output gate socket ${this.socket}: the record at byte ${offset} has ${problem}`, {
      socket: this.socket,
      offset,
      length,
      vnetHdrLen,
    });
  }
}
