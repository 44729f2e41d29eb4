/**
 * Snapshot images: a point-in-time copy of a VM's volume as a qcow2 file, taken live from a running QEMU
 * (`blockdev-backup sync=full`: QEMU's copy-before-write filter copies a block's old content to the target
 * before a guest write changes it, so the target holds the disk as it was when the job started, without
 * pausing the guest; it stacks under a write-blocking mirror's filter, so HA keeps mirroring meanwhile), or
 * from a volume no QEMU has open (`qemu-img convert`). Also what an image file is (`inspectImage`) and
 * making a volume from one (`volumeFromImage`). The records of snapshots are the daemon's
 * (src/daemon/snapshots.ts); this module only makes and reads files.
 */
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { QmpClient, QmpEvent } from '../qemu/qmp.js';
import { LockstepError, describeError } from '../util/errors.js';
import { run } from '../util/exec.js';
import type { VolumeFormat } from './storage-group.js';

/** Formats an image may have to be a VM's source (the formats of volumes). */
export const IMAGE_FORMATS = ['qcow2', 'raw'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** What `qemu-img info` says of an image file. */
export interface ImageInfo {
  format: ImageFormat;
  virtualBytes: number;
  /** What the file takes on disk. */
  actualBytes: number;
}

/** Bounds on qemu-img runs: an image's metadata is read in well under this; a copy of a big disk takes long. */
const INFO_TIMEOUT_MS = 30_000;
const CONVERT_TIMEOUT_MS = 6 * 60 * 60_000;
/** How long a live backup may run: a copy of the largest volume at a slow disk's speed. */
export const LIVE_BACKUP_TIMEOUT_MS = 6 * 60 * 60_000;

/**
 * The image at `file` as qemu-img reads it, probed (never trusted from a name): `IMAGE_INVALID` when it is no
 * image qemu-img knows, is of another format than qcow2 or raw, or has a backing file (a backing file is a
 * path on this host that the image would make QEMU read: an uploaded image could name any file here). Raw
 * is what qemu-img calls anything it does not recognise, so a raw image is only accepted when `allowRaw`.
 */
export async function inspectImage(file: string, what: string): Promise<ImageInfo> {
  // No -f: qemu-img probes. `--backing-chain` is not asked: a backing file is refused before it is opened.
  const r = await run('qemu-img', ['info', '--output=json', file], { allowFailure: true, timeoutMs: INFO_TIMEOUT_MS });
  if (r.code !== 0) throw invalidImage(what, `qemu-img cannot read it: ${firstLine(r.stderr) || `exit ${r.code}`}`);
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    throw invalidImage(what, 'qemu-img info did not answer JSON');
  }
  const format = info['format'];
  if (format !== 'qcow2' && format !== 'raw') throw invalidImage(what, `its format is ${String(format)}, and only qcow2 and raw images can be a VM's disk`);
  if (info['backing-filename'] !== undefined || info['full-backing-filename'] !== undefined) {
    throw invalidImage(what, `it has a backing file (${String(info['backing-filename'])}): an image must be whole, not a layer over a file of this host`);
  }
  if (format === 'qcow2') {
    const specific = info['format-specific'] as { data?: { 'data-file'?: unknown } } | undefined;
    // An external data file is, like a backing file, a path on this host the image would read.
    if (specific?.data?.['data-file'] !== undefined) throw invalidImage(what, 'it has an external data file: an image must be whole');
  }
  const virtualBytes = info['virtual-size'];
  const actualBytes = info['actual-size'] ?? 0;
  if (typeof virtualBytes !== 'number' || !Number.isInteger(virtualBytes) || virtualBytes < 1) throw invalidImage(what, 'it has no virtual size');
  return { format, virtualBytes, actualBytes: typeof actualBytes === 'number' ? actualBytes : 0 };
}

/**
 * A qcow2 snapshot of a volume no QEMU has open (a stopped VM): `qemu-img convert` into a temporary name
 * beside `target`, fsynced, then renamed; nothing at `target` on failure.
 */
export async function snapshotOffline(volume: string, format: VolumeFormat, target: string): Promise<void> {
  await convertInto(volume, format, target, 'qcow2');
}

/**
 * A volume made from an image (a VM's first start from a snapshot or an imported image): `qemu-img convert`
 * into the volume's format, grown to `sizeMiB` when the image is smaller. Refuses (`DISK_EXISTS`) if the
 * volume exists: it would hold the VM's writes. Nothing at `volume` on failure.
 */
export async function volumeFromImage(image: string, volume: string, format: VolumeFormat, sizeMiB: number): Promise<void> {
  const info = await inspectImage(image, `the image ${image}`);
  if (info.virtualBytes > sizeMiB * 1024 * 1024) {
    throw new LockstepError('IMAGE_INVALID', `the image ${image} (${info.virtualBytes} bytes) is larger than the VM's ${sizeMiB} MiB disk`, { image, virtualBytes: info.virtualBytes, sizeMiB });
  }
  // Claimed exclusively first, as createImage does: a file there is someone's disk.
  try {
    await (await open(volume, 'wx')).close();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new LockstepError('DISK_EXISTS', `refusing to overwrite the existing file ${volume} with the image ${image}`, { file: volume });
    throw e;
  }
  try {
    await rm(volume, { force: true });
    await convertInto(image, info.format, volume, format);
    await run('qemu-img', ['resize', '-q', '-f', format, volume, `${sizeMiB}M`], { timeoutMs: INFO_TIMEOUT_MS });
    await fsyncFile(volume);
  } catch (e) {
    await rm(volume, { force: true });
    throw e;
  }
}

async function convertInto(source: string, sourceFormat: ImageFormat, target: string, targetFormat: ImageFormat): Promise<void> {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.part`);
  await rm(tmp, { force: true });
  try {
    // -U is not given: a volume another process writes would give a torn copy; qemu-img's lock refuses that.
    await run('qemu-img', ['convert', '-q', '-f', sourceFormat, '-O', targetFormat, source, tmp], { timeoutMs: CONVERT_TIMEOUT_MS });
    await fsyncFile(tmp);
    await rename(tmp, target);
    await fsyncFile(path.dirname(target));
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export interface LiveSnapshotOptions {
  /**
   * What is copied. `guest`: the disk's format node (`vda`), what the guest sees, into a qcow2 target; only
   * when no other block job can want that node (an unprotected VM: QEMU 7.2 refuses a second job on a node
   * a job uses, and HA's mirror holds the format node while the VM is protected). `file`: the disk's file
   * node (`vda-file`), free under a mirror, copied as it is on the host and converted from the volume's
   * `format` afterwards; only for a file that cannot grow during the copy (see `liveSnapshotProblem`).
   */
  source: { kind: 'guest'; node: string } | { kind: 'file'; node: string; format: VolumeFormat };
  /** A name unique in this QEMU for the job and the target's node. */
  id: string;
  timeoutMs?: number;
  /** A bound on the copy's rate, so a snapshot does not take all of the disk from the guest (absent: none). */
  speedBytesPerSec?: number;
  /** Called once the backup job exists: the snapshot's point in time. */
  onPointInTime?: () => void;
}

/**
 * Why a running VM's volume cannot be snapshotted live under a disk mirror (null: it can). QEMU 7.2's
 * copy-before-write filter sizes its bitmap at the job's start and aborts QEMU (`hbitmap_set: Assertion
 * last < hb->size`, reproduced in test/storage/snapshot-image.test.ts's notes) when a write lands beyond it:
 * a qcow2's file grows as the guest allocates clusters, so a backup of a qcow2's file node would kill the
 * VM. A raw volume's file is its fixed size. And the format node is held by the mirror job. So under HA, a
 * live snapshot is of raw volumes only; a qcow2 volume is snapshotted stopped.
 */
export function liveSnapshotProblem(format: VolumeFormat, mirrored: boolean): string | null {
  if (!mirrored || format === 'raw') return null;
  return "its volume is qcow2 and is mirrored to the peer (HA): QEMU 7.2 cannot back up a mirrored disk's qcow2 live without risking the VM (the mirror holds the disk's node, and a copy of its growing file aborts QEMU); stop the VM and snapshot it stopped, or give HA VMs that need live snapshots a raw volume";
}

/** Retries when a volume's file changed size between measuring it and the job's start. */
const SIZE_RACE_TRIES = 5;

/**
 * A live, crash-consistent qcow2 snapshot of a running VM's disk at `target`, taken while the guest runs:
 * a target exactly the size of the source node now (QEMU refuses another size), `blockdev-backup
 * sync=full` into it (copy-before-write: a guest write to a block not copied yet first copies its old
 * content, so the target is the disk at the job's start), the node removed (QEMU flushes it on close), the
 * file fsynced and renamed into place; for a `file` source, converted into a compact qcow2 first. Guest
 * writes are never failed by it (`on-target-error=report`: the job fails, the guest's write to its own disk
 * has succeeded). On any failure nothing is left at `target`: `SNAPSHOT_FAILED`.
 */
export async function snapshotLive(qmp: QmpClient, target: string, opts: LiveSnapshotOptions): Promise<void> {
  const scratch = path.join(path.dirname(target), `.${path.basename(target)}.${opts.source.kind === 'file' ? 'copy' : 'part'}`);
  const source = opts.source.node;
  const node = opts.id;
  const fileNode = `${opts.id}-file`;
  const job = opts.id;
  let added: string[] = [];
  const removeNodes = async (): Promise<void> => {
    for (const n of [...added].reverse()) await qmp.execute('blockdev-del', { 'node-name': n });
    added = [];
  };
  await rm(scratch, { force: true });
  try {
    for (let tryNo = 1; ; tryNo++) {
      const bytes = await nodeBytes(qmp, source);
      if (opts.source.kind === 'file') {
        const fh = await open(scratch, 'w', 0o600);
        await fh.truncate(bytes);
        await fh.close();
        await qmp.execute('blockdev-add', { driver: 'file', 'node-name': node, filename: scratch });
        added = [node];
      } else {
        await rm(scratch, { force: true });
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', scratch, String(bytes)], { timeoutMs: INFO_TIMEOUT_MS });
        await qmp.execute('blockdev-add', { driver: 'file', 'node-name': fileNode, filename: scratch });
        added = [fileNode];
        await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': node, file: fileNode });
        added = [fileNode, node];
      }
      const timeoutMs = opts.timeoutMs ?? LIVE_BACKUP_TIMEOUT_MS;
      // Watched before the command, so its end is never missed.
      const ended = qmp.waitForEvent('BLOCK_JOB_COMPLETED', (e: QmpEvent) => e.data['device'] === job, timeoutMs);
      const cancelled = qmp.waitForEvent('BLOCK_JOB_CANCELLED', (e: QmpEvent) => e.data['device'] === job, timeoutMs);
      ended.catch(() => undefined);
      cancelled.catch(() => undefined);
      try {
        await qmp.execute('blockdev-backup', {
          'job-id': job,
          device: source,
          target: node,
          sync: 'full',
          speed: opts.speedBytesPerSec ?? 0,
          'on-source-error': 'report',
          'on-target-error': 'report',
          'auto-finalize': true,
          'auto-dismiss': true,
        });
      } catch (e) {
        if (tryNo < SIZE_RACE_TRIES && /different sizes/.test(describeError(e))) {
          await removeNodes();
          continue;
        }
        throw new LockstepError('SNAPSHOT_FAILED', `QEMU refused the snapshot's backup job: ${describeError(e)}`, { node: source }, { cause: e });
      }
      opts.onPointInTime?.();
      let end: QmpEvent;
      try {
        end = await Promise.race([ended, cancelled]);
      } catch (e) {
        await qmp.execute('block-job-cancel', { device: job, force: true }).catch(() => undefined);
        throw new LockstepError('SNAPSHOT_FAILED', `the snapshot's backup job did not end: ${describeError(e)}`, { node: source }, { cause: e });
      }
      const error = end.data['error'];
      if (end.event !== 'BLOCK_JOB_COMPLETED' || typeof error === 'string') {
        throw new LockstepError('SNAPSHOT_FAILED', `the snapshot's backup job ${end.event === 'BLOCK_JOB_CANCELLED' ? 'was cancelled' : `failed: ${String(error)}`}`, { node: source });
      }
      break;
    }
    await removeNodes();
    if (opts.source.kind === 'file') {
      await convertInto(scratch, opts.source.format, target, 'qcow2');
    } else {
      await fsyncFile(scratch);
      await rename(scratch, target);
      await fsyncFile(path.dirname(target));
    }
  } catch (e) {
    await removeNodes().catch(() => undefined);
    if (e instanceof LockstepError && e.code === 'SNAPSHOT_FAILED') throw e;
    throw new LockstepError('SNAPSHOT_FAILED', `the live snapshot of ${source} into ${target} failed: ${describeError(e)}`, { node: source }, { cause: e });
  } finally {
    await rm(scratch, { force: true });
  }
}

/** A block node's length in bytes, as QEMU sees it now. */
async function nodeBytes(qmp: QmpClient, nodeName: string): Promise<number> {
  const nodes = await qmp.execute<{ 'node-name'?: string; image?: { 'virtual-size'?: number } }[]>('query-named-block-nodes', { flat: true });
  const size = nodes.find((n) => n['node-name'] === nodeName)?.image?.['virtual-size'];
  if (typeof size !== 'number') throw new LockstepError('SNAPSHOT_FAILED', `QEMU has no block node ${nodeName} with a size`, { node: nodeName });
  return size;
}

async function fsyncFile(file: string): Promise<void> {
  const fh = await open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function invalidImage(what: string, why: string): LockstepError {
  return new LockstepError('IMAGE_INVALID', `${what} cannot be a VM's disk: ${why}`, { why });
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0] ?? '';
}
