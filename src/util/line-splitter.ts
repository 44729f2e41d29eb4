/**
 * Splits a byte stream into newline-terminated lines with a bound on how much it buffers. QMP is one JSON
 * object per line; a peer that never sends a newline must not make us buffer without limit.
 *
 * Works on bytes, not strings, so that a multi-byte UTF-8 character cut between two chunks is rejoined before
 * it is decoded.
 */
import { assert } from '../util/assert.js';

export interface SplitResult {
  /** Complete lines in arrival order, without their `\n` (a trailing `\r` is kept: the caller decides). */
  lines: Buffer[];
  /** True when a line grew past the limit: the stream is unusable and nothing after it was returned. */
  overflow: boolean;
}

const NEWLINE = 0x0a;

export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private broken = false;

  constructor(readonly maxLineBytes: number) {
    assert(Number.isInteger(maxLineBytes) && maxLineBytes > 0, 'maxLineBytes must be a positive integer');
  }

  push(chunk: Buffer): SplitResult {
    assert(!this.broken, 'LineSplitter used after an overflow');
    const lines: Buffer[] = [];
    let start = 0;
    for (;;) {
      const end = chunk.indexOf(NEWLINE, start);
      if (end < 0) break;
      const partBytes = end - start;
      if (this.pendingBytes + partBytes > this.maxLineBytes) return this.overflowWith(lines);
      const line =
        this.pending.length === 0
          ? chunk.subarray(start, end)
          : Buffer.concat([...this.pending, chunk.subarray(start, end)], this.pendingBytes + partBytes);
      this.pending = [];
      this.pendingBytes = 0;
      lines.push(line);
      start = end + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.pendingBytes + rest.length > this.maxLineBytes) return this.overflowWith(lines);
      // Copy: the caller may reuse its chunk buffer, and a small slice would pin a large one in memory.
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return { lines, overflow: false };
  }

  /** Bytes held for a line not yet terminated. */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  private overflowWith(lines: Buffer[]): SplitResult {
    this.broken = true;
    this.pending = [];
    this.pendingBytes = 0;
    return { lines, overflow: true };
  }
}
