/**
 * `lockstep snapshot …`: a host's snapshots of VMs' volumes and its imported disk images, through lockstepd's
 * local API (docs/snapshots.md). Each is the host's that made or received it, so an answer is one host's; in
 * the lab with no host named, `list` asks every host, `take` goes to the VM's owner, and an id is looked for
 * on each host. `export` streams the image into a file with a progress line on stderr; `import` streams one
 * to the host. A VM is made from one with `lockstep vm create … --from ID` (vm-command.ts).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { LockstepError, isLockstepError } from '../util/errors.js';
import { daemonDownload, daemonRequest, daemonUpload } from '../daemon/api-client.js';
import { SNAPSHOT_ID_PATTERN } from '../daemon/snapshot-routes.js';
import { DESCRIPTION_CHARS_MAX } from '../daemon/snapshots.js';
import { DISKS_PER_VM_MAX, diskId } from '../daemon/vm-definition.js';
import { LIVE_BACKUP_TIMEOUT_MS } from '../storage/snapshot-image.js';
import { askOtherLabHosts, resolveTarget, type Daemon, type Target } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { formatBytes, type VmView } from './vm-view.js';
import { EXIT, keyValues, table } from './output.js';

export const SNAPSHOT_USAGE = `lockstep snapshot — a host's snapshots of VMs' volumes, and its imported disk images

  lockstep snapshot list [--vm NAME]
  lockstep snapshot show ID
  lockstep snapshot take VM [--disk N] [--description TEXT]
                                  a point-in-time copy of one of the VM's volumes (--disk: its index,
                                  0 for vda by default): live while it runs (on the host it runs on),
                                  else from its volume; answers once it is ready
  lockstep snapshot export ID --output FILE
                                  its image file (qcow2; an image in its own format), progress on stderr
  lockstep snapshot import FILE [--storage-group GROUP] [--description TEXT]
                                  a qcow2 or raw disk image, to make VMs from
  lockstep snapshot delete ID
  lockstep vm create NAME … --from ID
                                  a VM whose volume is made from the snapshot or image at its first start

Every verb takes --json (the API's JSON) and --socket PATH or --host host1|host2 as \`lockstep vm\` does.
Snapshots and images stay on the host that made or received them. In the lab with no host named, list asks
both hosts, take asks the VM's owner, and an ID is looked for on each host.`;

export type SnapshotRequest =
  | { verb: 'help'; exit: number }
  | (Common & { verb: 'list'; vm: string | null })
  | (Common & { verb: 'show' | 'delete'; id: string })
  | (Common & { verb: 'take'; vm: string; disk: number; description: string | null })
  | (Common & { verb: 'export'; id: string; output: string })
  | (Common & { verb: 'import'; file: string; storageGroup: string | null; description: string | null });

const VM_NAME = /^[a-z][a-z0-9-]{0,30}$/;
const ID = new RegExp(SNAPSHOT_ID_PATTERN);

export function parseSnapshotCommand(argv: readonly string[]): SnapshotRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list': {
      const { values, positionals } = parse(rest, { vm: { type: 'string' } });
      if (positionals.length !== 0) throw usage('snapshot list [--vm NAME]');
      return { verb, vm: values.vm === undefined ? null : vmName(values.vm), ...commonOptions(values) };
    }
    case 'show':
    case 'delete': {
      const { values, positionals } = parse(rest, {});
      if (positionals.length !== 1) throw usage(`snapshot ${verb} ID`);
      return { verb, id: snapshotId(positionals[0]!), ...commonOptions(values) };
    }
    case 'take': {
      const { values, positionals } = parse(rest, { description: { type: 'string' }, disk: { type: 'string' } });
      if (positionals.length !== 1) throw usage('snapshot take VM [--disk N] [--description TEXT]');
      return {
        verb,
        vm: vmName(positionals[0]!),
        disk: values.disk === undefined ? 0 : diskIndex(values.disk),
        description: values.description === undefined ? null : description(values.description),
        ...commonOptions(values),
      };
    }
    case 'export': {
      const { values, positionals } = parse(rest, { output: { type: 'string' } });
      if (positionals.length !== 1 || values.output === undefined || values.output === '') throw usage('snapshot export ID --output FILE');
      return { verb, id: snapshotId(positionals[0]!), output: path.resolve(values.output), ...commonOptions(values) };
    }
    case 'import': {
      const { values, positionals } = parse(rest, { 'storage-group': { type: 'string' }, description: { type: 'string' } });
      if (positionals.length !== 1) throw usage('snapshot import FILE [--storage-group GROUP] [--description TEXT]');
      return {
        verb,
        file: positionals[0]!,
        storageGroup: values['storage-group'] ?? null,
        description: values.description === undefined ? null : description(values.description),
        ...commonOptions(values),
      };
    }
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown snapshot command '${verb}'\n\n${SNAPSHOT_USAGE}`);
  }
}

/** A snapshot or image as the CLI reads lockstepd's answer (GET /v1/snapshots/ID): only what it shows. */
export interface SnapshotView {
  id: string;
  kind: 'snapshot' | 'image';
  vm: string | null;
  /** Which of the VM's disks (its index; absent from a daemon before several disks: its one disk). */
  disk?: number | null;
  host: string;
  storageGroup: string;
  format: string;
  created: string;
  virtualBytes: number;
  state: 'creating' | 'ready' | 'failed';
  description: string;
  error: string | null;
  path: string | null;
  fileBytes: number | null;
}

export type SnapshotAnswer =
  /** `hosts`: every host that answered, for the line an empty list prints. */
  | { verb: 'list'; hosts: string[]; vm: string | null; snapshots: SnapshotView[] }
  | { verb: 'show' | 'take' | 'import'; snapshot: SnapshotView }
  | { verb: 'export'; snapshot: SnapshotView; file: string; bytes: number }
  | { verb: 'delete'; host: string; id: string };

export async function snapshotCommand(argv: string[]): Promise<number> {
  const req = parseSnapshotCommand(argv);
  if (req.verb === 'help') {
    console.log(SNAPSHOT_USAGE);
    return req.exit;
  }
  // Checked before any daemon is asked: the download would otherwise fail only after the image started.
  if (req.verb === 'export') await checkOutput(req.output);
  const target = await resolveTarget(req.where);
  console.log(renderSnapshotAnswer(req.json, await carryOut(target, req)));
  return EXIT.ok;
}

async function carryOut(target: Target, req: Exclude<SnapshotRequest, { verb: 'help' }>): Promise<SnapshotAnswer> {
  switch (req.verb) {
    case 'list': {
      const query = req.vm === null ? '' : `?vm=${encodeURIComponent(req.vm)}`;
      const first = await daemonRequest<SnapshotView[]>(target.daemon.socket, 'GET', `/v1/snapshots${query}`);
      const others = await askOtherLabHosts<SnapshotView[]>(target, `/v1/snapshots${query}`);
      return { verb: 'list', hosts: [target.daemon.host, ...others.map((o) => o.host)], vm: req.vm, snapshots: [...first, ...others.flatMap((o) => o.body)] };
    }
    case 'show':
      return { verb: 'show', snapshot: (await snapshotHolder(target, req.id)).snapshot };
    case 'take': {
      const daemon = await vmOwner(target, req.vm);
      const body = { disk: req.disk, ...(req.description === null ? {} : { description: req.description }) };
      // The daemon answers once the copy is complete: as long as a copy of the largest volume may take.
      const snapshot = await daemonRequest<SnapshotView>(daemon.socket, 'POST', `/v1/vms/${encodeURIComponent(req.vm)}/snapshots`, body, LIVE_BACKUP_TIMEOUT_MS);
      return { verb: 'take', snapshot };
    }
    case 'export': {
      const { daemon, snapshot } = await snapshotHolder(target, req.id);
      const progress = new TransferLine(process.stderr, req.id);
      try {
        const bytes = await daemonDownload(daemon.socket, `/v1/snapshots/${req.id}/image`, req.output, { onProgress: (done, total) => progress.show(done, total) });
        return { verb: 'export', snapshot, file: req.output, bytes };
      } finally {
        progress.end();
      }
    }
    case 'import': {
      const q = new URLSearchParams();
      if (req.storageGroup !== null) q.set('storageGroup', req.storageGroup);
      if (req.description !== null) q.set('description', req.description);
      const query = q.toString() === '' ? '' : `?${q.toString()}`;
      return { verb: 'import', snapshot: await daemonUpload<SnapshotView>(target.daemon.socket, `/v1/images${query}`, req.file, 'application/octet-stream', 60_000, 'POST') };
    }
    case 'delete': {
      const { daemon } = await snapshotHolder(target, req.id);
      await daemonRequest(daemon.socket, 'DELETE', `/v1/snapshots/${req.id}`);
      return { verb: 'delete', host: daemon.host, id: req.id };
    }
  }
}

/**
 * The daemon that holds snapshot or image `id`, and its record: the asked one, or — in the lab with no host
 * named — the first other host that has it. Neither having it is the asked host's `UNKNOWN_SNAPSHOT`.
 */
export async function snapshotHolder(target: Target, id: string): Promise<{ daemon: Daemon; snapshot: SnapshotView }> {
  try {
    return { daemon: target.daemon, snapshot: await daemonRequest<SnapshotView>(target.daemon.socket, 'GET', `/v1/snapshots/${id}`) };
  } catch (e) {
    if (!isLockstepError(e, 'UNKNOWN_SNAPSHOT') || target.kind !== 'lab' || !target.anyHost) throw e;
    for (const d of target.pair.filter((x) => x.host !== target.daemon.host)) {
      const snapshot = await daemonRequest<SnapshotView>(d.socket, 'GET', `/v1/snapshots/${id}`).catch(() => null);
      if (snapshot) return { daemon: d, snapshot };
    }
    throw e;
  }
}

/** Where a snapshot of `vm` is taken: the asked daemon, or in the lab with no host named, the VM's owner's. */
async function vmOwner(target: Target, vm: string): Promise<Daemon> {
  if (target.kind !== 'lab' || !target.anyHost) return target.daemon;
  const { owner } = await daemonRequest<VmView>(target.daemon.socket, 'GET', `/v1/vms/${encodeURIComponent(vm)}`);
  return target.pair.find((d) => d.host === owner) ?? target.daemon;
}

export function renderSnapshotAnswer(json: boolean, a: SnapshotAnswer): string {
  switch (a.verb) {
    case 'list':
      if (json) return JSON.stringify(a.snapshots, null, 2);
      if (a.snapshots.length === 0) return `no ${a.vm === null ? 'snapshots or images' : `snapshots of VM ${a.vm}`} on ${a.hosts.join(' or ')}`;
      return table(
        ['id', 'host', 'of', 'format', 'size', 'on disk', 'state', 'created', 'description'],
        a.snapshots.map((s) => [s.id, s.host, ofCell(s), s.format, formatBytes(s.virtualBytes), s.fileBytes === null ? '-' : formatBytes(s.fileBytes), s.state, s.created, s.description || '-']),
      );
    case 'show':
      return json ? JSON.stringify(a.snapshot, null, 2) : renderSnapshotShow(a.snapshot);
    case 'take':
      return json ? JSON.stringify(a.snapshot, null, 2) : `snapshot ${a.snapshot.id} of ${ofCell(a.snapshot)} ready on ${a.snapshot.host}: ${placeOf(a.snapshot)}`;
    case 'import':
      return json
        ? JSON.stringify(a.snapshot, null, 2)
        : `image ${a.snapshot.id} imported to ${a.snapshot.host}: ${placeOf(a.snapshot)}\na VM from it: lockstep vm create NAME … --from ${a.snapshot.id}`;
    case 'export':
      return json
        ? JSON.stringify({ exported: a.snapshot.id, host: a.snapshot.host, file: a.file, bytes: a.bytes, format: a.snapshot.format })
        : `${a.snapshot.kind} ${a.snapshot.id} exported from ${a.snapshot.host} to ${a.file}: ${formatBytes(a.bytes)}, ${a.snapshot.format}`;
    case 'delete':
      return json ? JSON.stringify({ deleted: a.id, host: a.host }) : `${a.id.startsWith('img-') ? 'image' : 'snapshot'} ${a.id} deleted from ${a.host}`;
  }
}

export function renderSnapshotShow(s: SnapshotView): string {
  return keyValues([
    ['id', s.id],
    ['kind', s.kind],
    ['of', ofCell(s)],
    ['host', s.host],
    ['storage group', s.storageGroup],
    ['file', s.path ?? '- (not ready)'],
    ['format', s.format],
    ['size', `${formatBytes(s.virtualBytes)} (the disk as a guest sees it)`],
    ['on disk', s.fileBytes === null ? '-' : formatBytes(s.fileBytes)],
    ['state', s.error ? `${s.state}: ${s.error}` : s.state],
    ['created', s.created],
    ['description', s.description || '-'],
  ]);
}

/** `exporting snap-…: [#####...............]  25%  4.0 MiB of 16.0 MiB`. */
export function renderTransfer(id: string, doneBytes: number, totalBytes: number, width = 20): string {
  const pct = totalBytes > 0 ? Math.min(100, Math.floor((doneBytes / totalBytes) * 100)) : 100;
  const filled = Math.round((pct / 100) * width);
  return `exporting ${id}: [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}%  ${formatBytes(doneBytes)} of ${formatBytes(totalBytes)}`;
}

/** Without a terminal, a progress line at most this often (and the last one). */
const PLAIN_LINE_MS = 1000;

/** A download's progress on stderr: redrawn in place on a terminal, plain lines (throttled) otherwise. */
class TransferLine {
  private drawn = false;
  private lastAt = 0;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly id: string,
  ) {}

  show(doneBytes: number, totalBytes: number): void {
    if (this.out.isTTY) {
      this.out.write(`\r${renderTransfer(this.id, doneBytes, totalBytes, 30)}\x1b[K`);
      this.drawn = true;
      return;
    }
    const last = doneBytes >= totalBytes;
    if (!last && Date.now() - this.lastAt < PLAIN_LINE_MS) return;
    this.out.write(`${renderTransfer(this.id, doneBytes, totalBytes)}\n`);
    this.lastAt = Date.now();
  }

  end(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}

/** What it is a snapshot of: the VM, and the disk when it is not the first (a VM of one disk stays as short). */
function ofCell(s: SnapshotView): string {
  if (s.vm === null) return '(imported image)';
  return s.disk ? `VM ${s.vm}'s ${diskId(s.disk)}` : `VM ${s.vm}`;
}

function placeOf(s: SnapshotView): string {
  return `a ${formatBytes(s.virtualBytes)} ${s.format} disk, ${s.fileBytes === null ? '?' : formatBytes(s.fileBytes)} in storage group ${s.storageGroup}`;
}

/** The file an export writes: not there yet, in a directory that is. */
async function checkOutput(file: string): Promise<void> {
  if (await stat(file).then(() => true, () => false)) throw new LockstepError('INVALID_ARGUMENT', `${file} exists already: it is not overwritten`, { file });
  const dir = await stat(path.dirname(file)).catch(() => null);
  if (!dir?.isDirectory()) throw new LockstepError('INVALID_ARGUMENT', `cannot write ${file}: ${path.dirname(file)} is not a directory`, { file });
}

export function snapshotId(id: string): string {
  if (!ID.test(id)) throw new LockstepError('INVALID_ARGUMENT', `'${id}' is no snapshot or image id: snap-… or img-… and 12 hex digits (lockstep snapshot list shows them)`, { field: 'id' });
  return id;
}

function vmName(name: string): string {
  if (!VM_NAME.test(name)) throw new LockstepError('INVALID_ARGUMENT', `VM name '${name}' must start with a letter and use a–z, 0–9 and '-', 31 characters at most`, { vm: name });
  return name;
}

function diskIndex(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n >= DISKS_PER_VM_MAX) throw new LockstepError('INVALID_ARGUMENT', `--disk is a disk's index, 0 (vda) to ${DISKS_PER_VM_MAX - 1} (got '${text}')`, { field: 'disk' });
  return n;
}

function description(text: string): string {
  if (text.length > DESCRIPTION_CHARS_MAX || /[\u0000-\u001f\u007f]/.test(text)) {
    throw new LockstepError('INVALID_ARGUMENT', `--description must be at most ${DESCRIPTION_CHARS_MAX} printable characters`, { field: 'description' });
  }
  return text;
}

type Options = Parameters<typeof parseArgs>[0] extends infer C ? (C extends { options?: infer O } ? NonNullable<O> : never) : never;

function parse<O extends Options>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { ...WHERE_OPTIONS, ...options }, strict: true, allowPositionals: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${SNAPSHOT_USAGE}`);
  }
}

function usage(form: string): LockstepError {
  return new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${form}`);
}
