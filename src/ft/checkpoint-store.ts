/**
 * The backup's side of FT: the RAM image and device state of the last committed epoch of one VM, in a
 * directory of this host's own (never the primary's files: checkpoint data reach the backup over its
 * stream, `checkpoint-link.ts`). No QEMU runs here until failover, when `resume.ts` starts one on the image.
 *
 *   <dir>/ram.img          the guest's RAM as of the committed epoch (RAM-sized, sparse until seeded)
 *   <dir>/device-state.bin QEMU's device state of that epoch (`xen-save-devices-state`)
 *   <dir>/state.json       { vm, ramBytes, pageBytes, bootId, committedEpoch, applying, handedOver }
 *
 * The commit rule: epoch N arrives whole and verified (the wire decoder stages it in memory first; a
 * truncated or corrupt epoch never reaches the store). It must follow the committed one (N = committed + 1),
 * or be a full image, which re-seeds the store at any later epoch. Then: state says "applying N"; its pages
 * are written into the image; its device state replaces the old (write and rename); state says "committed
 * N". Only then is N acknowledged. An epoch refused for its number or geometry changes nothing.
 *
 * What survives what: a lockstepd that dies while applying leaves "applying N" behind, and the image is then
 * a mix of N-1 and N: the store opens with nothing committed and waits for a full image. The image is not
 * fsynced per epoch (that would put a disk flush in every epoch); the state records the boot, so after a
 * reboot of this host the store opens with nothing committed too. Put the directory on tmpfs (`/dev/shm`,
 * `/run`): the resumed QEMU maps the image as the guest's RAM.
 */
import { mkdir, open, readFile, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { writeFileDurably } from '../util/durable-file.js';
import { LockstepError, describeError } from '../util/errors.js';
import type { WireExpectation, StagedCheckpoint } from './checkpoint-wire.js';

export interface StoreState {
  vm: string;
  ramBytes: number;
  pageBytes: number;
  /** The boot of this host the image was written in (`/proc/sys/kernel/random/boot_id`). */
  bootId: string;
  /** 0: nothing committed (a new store, or one that lost its image). */
  committedEpoch: number;
  /** An epoch being written into the image, or null. */
  applying: number | null;
  /** The image became a resumed VM's RAM: the store takes no more epochs. */
  handedOver: boolean;
}

export interface CommitResult {
  epoch: number;
  full: boolean;
  pageCount: number;
  /** Bytes written into the image. */
  pageBytesWritten: number;
  applyMs: number;
}

export interface StoreStats {
  committedEpoch: number;
  epochsCommitted: number;
  /** Page bytes written into the image since open. */
  pageBytesWritten: number;
  deviceStateBytes: number;
  last: CommitResult | null;
}

const STATE_FILE = 'state.json';
const IMAGE_FILE = 'ram.img';
const DEVICE_STATE_FILE = 'device-state.bin';

export class CheckpointStore {
  private epochsCommitted = 0;
  private pageBytesWritten = 0;
  private deviceStateBytes = 0;
  private last: CommitResult | null = null;
  /** Commits one at a time: a second one during the first is a bug in the caller. */
  private busy = false;

  private constructor(
    readonly dir: string,
    private state: StoreState,
    private readonly image: FileHandle,
  ) {}

  /**
   * Opens (or creates) the store of `geometry.vm` in `dir`. Throws `CHECKPOINT_STORE` if the directory holds
   * another VM's store, other sizes, an image handed to a resumed VM, or cannot be read or written.
   */
  static async open(dir: string, geometry: WireExpectation): Promise<CheckpointStore> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
      let state = await readState(dir);
      if (state !== undefined) {
        if (state.vm !== geometry.vm || state.ramBytes !== geometry.ramBytes || state.pageBytes !== geometry.pageBytes) {
          throw new LockstepError('CHECKPOINT_STORE', `the checkpoint store in ${dir} is VM '${state.vm}' with ${state.ramBytes} bytes of RAM in ${state.pageBytes}-byte pages, not '${geometry.vm}' with ${geometry.ramBytes} in ${geometry.pageBytes}`, {
            dir,
            vm: geometry.vm,
          });
        }
        if (state.handedOver) {
          throw new LockstepError('CHECKPOINT_STORE', `the checkpoint store in ${dir} was handed to a resumed VM (its image is that VM's RAM now); start a new store`, { dir, vm: geometry.vm });
        }
        // A torn apply or another boot: the image cannot be trusted to be any one epoch.
        if (state.applying !== null || state.bootId !== bootId) state = { ...state, committedEpoch: 0, applying: null, bootId };
      } else {
        state = { ...geometry, bootId, committedEpoch: 0, applying: null, handedOver: false };
      }
      const image = await open(path.join(dir, IMAGE_FILE), fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
      // Sparse: pages nobody sent take no memory until written.
      if ((await image.stat()).size !== geometry.ramBytes) await image.truncate(geometry.ramBytes);
      const store = new CheckpointStore(dir, state, image);
      await store.writeState(state);
      return store;
    } catch (e) {
      if (e instanceof LockstepError) throw e;
      throw new LockstepError('CHECKPOINT_STORE', `cannot open the checkpoint store in ${dir}: ${describeError(e)}`, { dir, vm: geometry.vm }, { cause: e });
    }
  }

  get vm(): string {
    return this.state.vm;
  }

  get geometry(): WireExpectation {
    return { vm: this.state.vm, ramBytes: this.state.ramBytes, pageBytes: this.state.pageBytes };
  }

  /** 0 while nothing is committed. */
  get committedEpoch(): number {
    return this.state.committedEpoch;
  }

  get imagePath(): string {
    return path.join(this.dir, IMAGE_FILE);
  }

  get deviceStatePath(): string {
    return path.join(this.dir, DEVICE_STATE_FILE);
  }

  get stats(): StoreStats {
    return {
      committedEpoch: this.state.committedEpoch,
      epochsCommitted: this.epochsCommitted,
      pageBytesWritten: this.pageBytesWritten,
      deviceStateBytes: this.deviceStateBytes,
      last: this.last,
    };
  }

  /**
   * Applies a staged, verified checkpoint and records it as committed; resolves once it is (then ack it).
   * Throws `CHECKPOINT_STORE` when the epoch does not follow the committed one and is not a full image, when
   * it is another VM's or another size, when the store was handed over, or when writing fails (then nothing
   * is committed until a full image: the image may be torn).
   */
  async commit(cp: StagedCheckpoint): Promise<CommitResult> {
    if (this.busy) throw new LockstepError('CHECKPOINT_STORE', `a commit to the store of '${this.vm}' is already under way`, { vm: this.vm });
    const s = this.state;
    const refuse = (problem: string): never => {
      throw new LockstepError('CHECKPOINT_STORE', `store of '${s.vm}': epoch ${cp.epoch} refused: ${problem}`, { vm: s.vm, epoch: cp.epoch, committedEpoch: s.committedEpoch });
    };
    if (s.handedOver) refuse('the image was handed to a resumed VM');
    if (cp.vm !== s.vm || cp.ramBytes !== s.ramBytes || cp.pageBytes !== s.pageBytes) refuse(`it is '${cp.vm}' with ${cp.ramBytes} bytes of RAM, not this store's`);
    if (cp.full ? cp.epoch <= s.committedEpoch : cp.epoch !== s.committedEpoch + 1 || s.committedEpoch === 0) {
      refuse(
        cp.full
          ? `a full image must be later than the committed epoch ${s.committedEpoch}`
          : s.committedEpoch === 0
            ? 'nothing is committed yet: the first epoch must be a full image'
            : `it does not follow the committed epoch ${s.committedEpoch} (and is not a full image)`,
      );
    }
    this.busy = true;
    const t0 = performance.now();
    try {
      await this.writeState({ ...s, applying: cp.epoch });
      let written = 0;
      for (const r of cp.runs) {
        await writeAll(this.image, r.data, r.firstPage * s.pageBytes);
        written += r.data.length;
      }
      // Written beside and renamed over: a reader (a resume) sees the old state or the new, never half.
      const tmp = path.join(this.dir, `.${DEVICE_STATE_FILE}.tmp`);
      await writeFile(tmp, cp.deviceState, { mode: 0o600 });
      await rename(tmp, this.deviceStatePath);
      await this.writeState({ ...s, committedEpoch: cp.epoch, applying: null });
      const result: CommitResult = { epoch: cp.epoch, full: cp.full, pageCount: cp.pageCount, pageBytesWritten: written, applyMs: performance.now() - t0 };
      this.epochsCommitted++;
      this.pageBytesWritten += written;
      this.deviceStateBytes = cp.deviceState.length;
      this.last = result;
      return result;
    } catch (e) {
      if (e instanceof LockstepError) throw e;
      // The image may hold part of this epoch now: only a full image makes it one epoch again.
      this.state = { ...this.state, committedEpoch: 0, applying: null };
      await this.writeState(this.state).catch(() => undefined);
      throw new LockstepError('CHECKPOINT_STORE', `store of '${s.vm}': writing epoch ${cp.epoch} failed (the store now needs a full image): ${describeError(e)}`, {
        vm: s.vm,
        epoch: cp.epoch,
      }, { cause: e });
    } finally {
      this.busy = false;
    }
  }

  /**
   * Gives the committed epoch to a resume: from now on the image is a VM's RAM, and the store takes nothing
   * more. Throws `CHECKPOINT_STORE` if nothing is committed.
   */
  async handOver(): Promise<{ epoch: number; imagePath: string; deviceStatePath: string }> {
    if (this.state.committedEpoch === 0) {
      throw new LockstepError('CHECKPOINT_STORE', `the store of '${this.vm}' has no committed epoch to resume from`, { vm: this.vm, dir: this.dir });
    }
    if (this.state.handedOver) throw new LockstepError('CHECKPOINT_STORE', `the store of '${this.vm}' was handed over already`, { vm: this.vm, dir: this.dir });
    await this.writeState({ ...this.state, handedOver: true });
    return { epoch: this.state.committedEpoch, imagePath: this.imagePath, deviceStatePath: this.deviceStatePath };
  }

  async close(): Promise<void> {
    await this.image.close();
  }

  private async writeState(next: StoreState): Promise<void> {
    await writeFileDurably(path.join(this.dir, STATE_FILE), JSON.stringify(next) + '\n', { mode: 0o600 });
    this.state = next;
  }
}

async function readState(dir: string): Promise<StoreState | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(dir, STATE_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    v = undefined;
  }
  const o = v as Partial<StoreState> | undefined;
  if (
    typeof o !== 'object' || o === null ||
    typeof o.vm !== 'string' || !Number.isSafeInteger(o.ramBytes) || !Number.isSafeInteger(o.pageBytes) || typeof o.bootId !== 'string' ||
    !Number.isSafeInteger(o.committedEpoch) || !(o.applying === null || Number.isSafeInteger(o.applying)) || typeof o.handedOver !== 'boolean'
  ) {
    throw new LockstepError('CHECKPOINT_STORE', `the checkpoint store state ${path.join(dir, STATE_FILE)} is corrupt`, { dir });
  }
  return o as StoreState;
}

async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let o = 0;
  while (o < data.length) {
    const { bytesWritten } = await fh.write(data, o, data.length - o, position + o);
    o += bytesWritten;
  }
}
