/**
 * Finding what changed in guest RAM between two checkpoints, behind one small interface (`RamTracker`) so a
 * better tracker (KVM's dirty log where QEMU exposes it, a newer QEMU) can replace this one.
 *
 * The tracker here, `CopyCompareTracker`, works with what QEMU 7.2 and this kernel give (lab-facts.md, "Finding
 * what changed in guest RAM"): guest RAM lives in a shared file (`memory-backend-file,share=on`); while the
 * guest is paused, `capture` reads the whole file into one of two preallocated buffers; after the guest runs
 * again, `changes` compares that copy with the previous one page by page. Only the copy is inside the pause.
 * The kernel has no soft-dirty bits and userfaultfd write-protection only works inside QEMU, so nothing
 * cheaper tells which pages the guest wrote: both steps read all of RAM, and their cost grows with RAM size,
 * not with what changed.
 *
 * Memory: two RAM-sized buffers, allocated at open and each read into once there (the first read into fresh
 * memory costs ~20x a later one here). The page data of a checkpoint are views into the buffer it was copied
 * into, not copies: they stay valid until `release()`, and a capture that would overwrite unreleased views is
 * a bug (assertion). With two buffers, one checkpoint may be in flight while the next is taken.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants as bufferConstants } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { setImmediate } from 'node:timers/promises';
import { assert } from '../util/assert.js';
import { LockstepError, describeError } from '../util/errors.js';

/** The page size checkpoints track and ship: x86's base page. */
export const PAGE_BYTES = 4096;

/** Consecutive pages of guest RAM, from `firstPage` on: `data.length` is a multiple of the page size. */
export interface PageRun {
  firstPage: number;
  data: Buffer;
}

export interface RamChanges {
  /** Every page of RAM (the first capture, or after `requestFull`), not only those that changed. */
  full: boolean;
  /** Ascending, neither overlapping nor touching (touching runs are merged). */
  runs: PageRun[];
  pageCount: number;
  /** Time spent finding the changes (0 for a full image, which needs no comparison). */
  diffMs: number;
  /** The views in `runs` may be overwritten from now on (call once the data were written out). */
  release(): void;
}

export interface RamTracker {
  readonly ramBytes: number;
  readonly pageBytes: number;
  /**
   * While the guest is paused: takes what `changes` needs, and nothing more (this is the guest's pause).
   * Throws `CHECKPOINT_CAPTURE` if RAM cannot be read; the previous capture then stays the base.
   */
  capture(): Promise<{ copyMs: number }>;
  /** After the guest runs again: what changed from the previous capture to the last one. */
  changes(): Promise<RamChanges>;
  /** The next `changes` is a full image (the peer lost its copy, or needs re-seeding). */
  requestFull(): void;
  close(): Promise<void>;
}

/** Parallel reads of the RAM file: the copy is bound by memory bandwidth, and libuv's 4 threads read 512 MiB
 * in ~45 ms where one read takes ~80-100 ms here. */
const READ_SLICES = 4;

export class CopyCompareTracker implements RamTracker {
  readonly pageBytes = PAGE_BYTES;
  private readonly buffers: [Buffer, Buffer];
  private readonly leased = [false, false];
  /** The buffer the next capture writes; the other one holds the last capture that was diffed. */
  private next = 0;
  private haveBase = false;
  private captured = false;
  /** A `changes()` is comparing: the buffers must not change under it. */
  private diffing = false;
  private fullRequested = false;

  private constructor(
    private readonly file: FileHandle,
    private readonly filePath: string,
    readonly ramBytes: number,
  ) {
    this.buffers = [Buffer.allocUnsafeSlow(ramBytes), Buffer.allocUnsafeSlow(ramBytes)];
  }

  /** The first read into a fresh buffer costs ~1.3-2.6 ms per MiB here, a later one ~0.06 (bench/ft-epoch.ts
   * measured 508 ms against 31 ms for 512 MiB), and a `fill` beforehand does not make it cheaper: so each
   * buffer gets one read of the file at open, outside any pause. */
  private async warm(): Promise<void> {
    for (const b of this.buffers) await this.readInto(b);
  }

  /**
   * Opens the guest's RAM file (read only). Throws `CHECKPOINT_CAPTURE` if it cannot be opened, its size is
   * not `ramBytes`, or RAM is larger than one Node buffer holds (this tracker's limit).
   */
  static async open(filePath: string, ramBytes: number): Promise<CopyCompareTracker> {
    if (ramBytes % PAGE_BYTES !== 0 || ramBytes <= 0) {
      throw new LockstepError('CHECKPOINT_CAPTURE', `guest RAM of ${ramBytes} bytes is not a whole number of ${PAGE_BYTES}-byte pages`, { ramBytes });
    }
    if (ramBytes > bufferConstants.MAX_LENGTH) {
      throw new LockstepError('CHECKPOINT_CAPTURE', `guest RAM of ${ramBytes} bytes is larger than this tracker's buffers hold (${bufferConstants.MAX_LENGTH})`, { ramBytes });
    }
    let file: FileHandle;
    try {
      file = await open(filePath, 'r');
    } catch (e) {
      throw new LockstepError('CHECKPOINT_CAPTURE', `cannot open the guest RAM file ${filePath}: ${describeError(e)}`, { path: filePath }, { cause: e });
    }
    const size = (await file.stat()).size;
    if (size !== ramBytes) {
      await file.close();
      throw new LockstepError('CHECKPOINT_CAPTURE', `the guest RAM file ${filePath} holds ${size} bytes, not the VM's ${ramBytes}`, { path: filePath, size, ramBytes });
    }
    const tracker = new CopyCompareTracker(file, filePath, ramBytes);
    try {
      await tracker.warm();
    } catch (e) {
      await file.close();
      throw e;
    }
    return tracker;
  }

  async capture(): Promise<{ copyMs: number }> {
    assert(!this.diffing, 'a capture while the previous one is being compared');
    assert(!this.leased[this.next], 'a capture would overwrite page data still in use: release a checkpoint before taking the one after next');
    const t0 = performance.now();
    try {
      await this.readInto(this.buffers[this.next]!);
    } catch (e) {
      this.captured = false;
      throw e;
    }
    this.captured = true;
    return { copyMs: performance.now() - t0 };
  }

  async changes(): Promise<RamChanges> {
    assert(this.captured && !this.diffing, 'changes() without a capture since the last changes()');
    const i = this.next;
    const cur = this.buffers[i]!;
    const full = !this.haveBase || this.fullRequested;
    const t0 = performance.now();
    let runs: PageRun[];
    this.diffing = true;
    try {
      runs = full ? [{ firstPage: 0, data: cur }] : await changedPageRuns(cur, this.buffers[1 - i]!, this.pageBytes);
    } finally {
      this.diffing = false;
    }
    const diffMs = full ? 0 : performance.now() - t0;
    this.captured = false;
    this.haveBase = true;
    this.fullRequested = false;
    this.next = 1 - i;
    this.leased[i] = true;
    let released = false;
    return {
      full,
      runs,
      pageCount: runs.reduce((n, r) => n + r.data.length / this.pageBytes, 0),
      diffMs,
      release: () => {
        if (released) return;
        released = true;
        this.leased[i] = false;
      },
    };
  }

  requestFull(): void {
    this.fullRequested = true;
  }

  async close(): Promise<void> {
    await this.file.close();
  }

  private async readInto(into: Buffer): Promise<void> {
    const slice = Math.ceil(this.ramBytes / READ_SLICES / PAGE_BYTES) * PAGE_BYTES;
    try {
      await Promise.all(Array.from({ length: READ_SLICES }, (_, i) => this.readFully(into, i * slice, Math.min(this.ramBytes, (i + 1) * slice))));
    } catch (e) {
      if (e instanceof LockstepError) throw e;
      throw new LockstepError('CHECKPOINT_CAPTURE', `cannot read the guest RAM file ${this.filePath}: ${describeError(e)}`, { path: this.filePath }, { cause: e });
    }
  }

  private async readFully(into: Buffer, from: number, to: number): Promise<void> {
    let at = from;
    while (at < to) {
      const { bytesRead } = await this.file.read(into, at, to - at, at);
      if (bytesRead === 0) {
        throw new LockstepError('CHECKPOINT_CAPTURE', `the guest RAM file ${this.filePath} ended at ${at} bytes, short of ${this.ramBytes}`, { path: this.filePath, at });
      }
      at += bytesRead;
    }
  }
}

/**
 * The pages where `cur` differs from `prev`, as runs of consecutive pages whose data are views into `cur`.
 * Pure. `Buffer.compare` per page (memcmp in C++) measured faster here than any JavaScript word loop.
 * It lets the event loop run between slices of `YIELD_PAGES`: the whole diff of 128 MiB took 70–300 ms on
 * this 2-core machine, and as one piece it was a stall of lockstepd's main thread (late A-Link heartbeats,
 * a measured round trip over SplitSite's limit).
 */
export async function changedPageRuns(cur: Buffer, prev: Buffer, pageBytes: number): Promise<PageRun[]> {
  const diff = new PageDiff(cur, prev, pageBytes);
  const pages = cur.length / pageBytes;
  for (let p = 0; p < pages; p += YIELD_PAGES) {
    diff.compare(Math.min(pages, p + YIELD_PAGES));
    if (p + YIELD_PAGES < pages) await setImmediate();
  }
  return diff.finish();
}

/** 16 MiB of 4 KiB pages: a few ms of compare per turn of the event loop. */
const YIELD_PAGES = 4096;

/** The runs of changed pages, built by comparing page after page up to a given page. */
class PageDiff {
  private readonly runs: PageRun[] = [];
  private runStart = -1;
  private page = 0;

  constructor(
    private readonly cur: Buffer,
    private readonly prev: Buffer,
    private readonly pageBytes: number,
  ) {
    assert(cur.length === prev.length && cur.length % pageBytes === 0, 'changedPageRuns: buffers of different or unaligned sizes');
  }

  /** Compares the pages from where the last call stopped up to (not including) `endPage`. */
  compare(endPage: number): void {
    const { cur, prev, pageBytes } = this;
    for (let p = this.page; p < endPage; p++) {
      const o = p * pageBytes;
      const differs = cur.compare(prev, o, o + pageBytes, o, o + pageBytes) !== 0;
      if (differs && this.runStart < 0) this.runStart = p;
      if (!differs && this.runStart >= 0) {
        this.runs.push({ firstPage: this.runStart, data: cur.subarray(this.runStart * pageBytes, o) });
        this.runStart = -1;
      }
    }
    this.page = Math.max(this.page, endPage);
  }

  finish(): PageRun[] {
    if (this.runStart >= 0) this.runs.push({ firstPage: this.runStart, data: this.cur.subarray(this.runStart * this.pageBytes) });
    this.runStart = -1;
    return this.runs;
  }
}
