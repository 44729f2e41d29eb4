/**
 * `lockstep vm …`: the pair's VMs through lockstepd's local API (docs/cli.md). Every change is an operator
 * command the daemon hands to its decision core; the CLI only says what was asked and what the pair answered.
 * Arguments are parsed and checked here before any daemon is asked, so bad input never reaches the pair.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { daemonRequest } from '../daemon/api-client.js';
import { DEFAULT_DISK_PLACE, DISKS_PER_VM_MAX, NICS_PER_VM_MAX, PROTECTION_LEVELS, diskId, type ProtectionLevel, type VmDefinition, type VmDisk } from '../daemon/vm-definition.js';
import { VOLUME_FORMATS, type VolumeFormat } from '../storage/storage-group.js';
import { VCD_NAME } from '../storage/vcd.js';
import { askOtherLabHosts, checkWhere, resolveTarget, type Target, type Where } from './daemon-target.js';
import { labGuest, forgetLabVm, noteLabVm, type CompleteGuest, type GuestOptions } from './vm-lab.js';
import { migrateVm } from './vm-migrate.js';
import { nicsOfView, renderChange, renderVmShow, renderVmTable, vmRows, type HostView, type VmView } from './vm-view.js';
import { renderVmHistory, type HistoryWindow, type VmHistory } from './history-view.js';
import { renderConsoleLog, type ConsoleLog } from './console-log-view.js';
import { CONSOLE_LOG_BYTES_MAX } from '../daemon/console-log-routes.js';
import { EXIT } from './output.js';
import { snapshotHolder, snapshotId } from './snapshot-command.js';

/** A restart answers once the old QEMU exited (up to 30 s on the host) and the start was asked. */
const RESTART_ANSWER_MS = 60_000;

export const VM_USAGE = `lockstep vm — the pair's VMs, through either host's lockstepd

  lockstep vm list
  lockstep vm show NAME
  lockstep vm create NAME --memory MIB --vcpus N --disk MIB[,group=NAME][,format=qcow2|raw][,from=ID]...
                    [--storage-group NAME] [--disk-format qcow2|raw]
                    [--nics N] [--mac MAC --address IP]... [--protection none|ha|ft] [--stopped]
                    [--cd-drive] [--kernel PATH --initrd PATH] [--cmdline TEXT] [--from SNAPSHOT-OR-IMAGE-ID]
                                           --disk: 1 to ${DISKS_PER_VM_MAX} disks, the first the guest's vda; each
                                           in --storage-group (default: default) as --disk-format (default:
                                           qcow2) unless its group= or format= says otherwise; from=: made
                                           from that snapshot or image (its size then by default); FT
                                           protects a VM of one disk
                                           --nics: 1 to ${NICS_PER_VM_MAX} NICs (default: as many as --mac or
                                           --address are given, or 1); the Nth --mac and --address are
                                           the Nth NIC's (the first is the guest's eth0)
                                           --from: the first disk's from= (a VM made from snapshots or
                                           images is defined on the host that holds them, and its volumes
                                           made from them at its first start there)
  lockstep vm start|stop|remove NAME
  lockstep vm restart NAME                 stop it and start it again (a new instance), on the host that runs it
  lockstep vm protect NAME --level none|ha|ft
  lockstep vm migrate NAME [--no-wait]     live migration to the peer; follows it unless --no-wait
  lockstep vm history NAME [--last DURATION] [--series cpu,memory,disk]
                                           its QEMU's CPU, memory and disk over the last DURATION
                                           (10m by default; 90s, 1h …) on the host that runs it
  lockstep vm console-log NAME [--bytes N] what its guest wrote on its serial console: the last N bytes
                                           (64 KiB by default, 1 MiB at most) of its log on the host
                                           that runs it, or that ran it last
  lockstep vm cd insert NAME VCD           a virtual CD of the host that runs it into its CD drive
  lockstep vm cd eject NAME

Every verb takes --json (the API's JSON) and one of:
  --socket PATH        that lockstepd's API socket (create then needs --mac and --address for each
                       NIC, --kernel, --initrd and --cmdline)
  --host host1|host2   that lab host's lockstepd
By default, in the lab: the first host whose lockstepd answers (either answers for the pair); create then
picks a free lab address and MAC for each NIC not given one and boots the lab's guest for whatever is
not given (it configures every NIC's address).`;

const NAME = /^[a-z][a-z0-9-]{0,30}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export interface Common {
  json: boolean;
  where: Where;
}

export type VmRequest =
  | { verb: 'help'; exit: number }
  | (Common & { verb: 'list' })
  | (Common & { verb: 'show' | 'start' | 'stop' | 'restart' | 'remove'; name: string })
  | (Common & { verb: 'protect'; name: string; level: ProtectionLevel })
  | (Common & { verb: 'migrate'; name: string; wait: boolean })
  | (Common & HistoryOptions & { verb: 'history'; name: string })
  /** `bytes`: as asked; absent, the daemon's default. */
  | (Common & { verb: 'console-log'; name: string; bytes?: number })
  | (Common & { verb: 'cd-insert'; name: string; vcd: string })
  | (Common & { verb: 'cd-eject'; name: string })
  | (Common & {
      verb: 'create';
      name: string;
      memoryMiB: number;
      vcpus: number;
      /** In the order the guest sees them. */
      disks: DiskRequest[];
      protection: ProtectionLevel;
      desired: 'running' | 'stopped';
      /** A CD drive, empty, for virtual CDs (docs/vcd.md). */
      cdDrive: boolean;
      guest: GuestOptions;
    });

/**
 * A disk as `vm create` asks for it: `from`, the snapshot or image its volume is made from (lockstep
 * snapshot, docs/snapshots.md); its size is absent only with `from`: the image's size.
 */
export type DiskRequest = Pick<VmDisk, 'storageGroup' | 'format'> & { sizeMiB?: number; from?: string };

export const WHERE_OPTIONS = { json: { type: 'boolean' }, socket: { type: 'string' }, host: { type: 'string' } } as const;

/** Parses and checks a `vm` command line; every mistake is an `INVALID_ARGUMENT` (or `UNKNOWN_HOST`). */
export function parseVmCommand(argv: readonly string[]): VmRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list': {
      const { values, positionals } = parse(rest, {});
      if (positionals.length !== 0) throw usage('vm list');
      return { verb, ...commonOptions(values) };
    }
    case 'show':
    case 'start':
    case 'stop':
    case 'restart':
    case 'remove': {
      const { values, positionals } = parse(rest, {});
      return { verb, name: oneName(positionals, `vm ${verb} NAME`), ...commonOptions(values) };
    }
    case 'protect': {
      const { values, positionals } = parse(rest, { level: { type: 'string' } });
      const name = oneName(positionals, 'vm protect NAME --level none|ha|ft');
      if (values.level === undefined) throw usage('vm protect NAME --level none|ha|ft');
      return { verb, name, level: protectionLevel(values.level, '--level'), ...commonOptions(values) };
    }
    case 'migrate': {
      const { values, positionals } = parse(rest, { 'no-wait': { type: 'boolean' } });
      return { verb, name: oneName(positionals, 'vm migrate NAME [--no-wait]'), wait: values['no-wait'] !== true, ...commonOptions(values) };
    }
    case 'history': {
      const { values, positionals } = parse(rest, HISTORY_OPTIONS);
      return { verb, name: oneName(positionals, 'vm history NAME [--last DURATION] [--series LIST]'), ...historyOptions(values), ...commonOptions(values) };
    }
    case 'console-log': {
      const { values, positionals } = parse(rest, { bytes: { type: 'string' } });
      const name = oneName(positionals, 'vm console-log NAME [--bytes N]');
      return { verb, name, ...(values.bytes !== undefined ? { bytes: integer(values.bytes, 'bytes', 1, CONSOLE_LOG_BYTES_MAX) } : {}), ...commonOptions(values) };
    }
    case 'create':
      return parseCreate(rest);
    case 'cd':
      return parseCd(rest);
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown vm command '${verb}'\n\n${VM_USAGE}`);
  }
}

/** `vm cd insert NAME VCD`, `vm cd eject NAME`. */
function parseCd(rest: string[]): VmRequest {
  const [action, ...args] = rest;
  const { values, positionals } = parse(args, {});
  if (action === 'insert') {
    if (positionals.length !== 2) throw usage('vm cd insert NAME VCD');
    const vcd = positionals[1]!;
    if (!VCD_NAME.test(vcd)) throw new LockstepError('INVALID_ARGUMENT', `virtual CD name '${vcd}' must start with a lowercase letter and use a–z, 0–9, '.', '_' and '-', 64 characters at most`, { field: 'vcd' });
    return { verb: 'cd-insert', name: oneName(positionals.slice(0, 1), 'vm cd insert NAME VCD'), vcd, ...commonOptions(values) };
  }
  if (action === 'eject') return { verb: 'cd-eject', name: oneName(positionals, 'vm cd eject NAME'), ...commonOptions(values) };
  throw usage('vm cd insert NAME VCD | vm cd eject NAME');
}

function parseCreate(rest: string[]): VmRequest {
  const { values, positionals } = parse(rest, {
    memory: { type: 'string' },
    vcpus: { type: 'string' },
    disk: { type: 'string', multiple: true },
    'storage-group': { type: 'string' },
    'disk-format': { type: 'string' },
    nics: { type: 'string' },
    mac: { type: 'string', multiple: true },
    address: { type: 'string', multiple: true },
    protection: { type: 'string' },
    stopped: { type: 'boolean' },
    'cd-drive': { type: 'boolean' },
    kernel: { type: 'string' },
    initrd: { type: 'string' },
    cmdline: { type: 'string' },
    from: { type: 'string' },
  });
  const form =
    'vm create NAME --memory MIB --vcpus N --disk MIB[,group=NAME][,format=qcow2|raw][,from=ID]... [--storage-group NAME] [--disk-format qcow2|raw] [--nics N] [--mac MAC --address IP]... [--protection none|ha|ft] [--stopped] [--cd-drive] [--kernel PATH --initrd PATH] [--cmdline TEXT] [--from ID]';
  const name = oneName(positionals, form);
  const from = values.from === undefined ? undefined : snapshotId(values.from);
  const needed = from === undefined ? (['memory', 'vcpus', 'disk'] as const) : (['memory', 'vcpus'] as const);
  const missing = needed.filter((k) => values[k] === undefined);
  if (missing.length > 0) throw new LockstepError('INVALID_ARGUMENT', `vm create needs ${missing.map((k) => `--${k}`).join(', ')}\nusage: lockstep ${form}`);
  const nics = parseNics(values.nics, values.mac ?? [], values.address ?? []);
  if ((values.kernel === undefined) !== (values.initrd === undefined)) throw new LockstepError('INVALID_ARGUMENT', '--kernel and --initrd go together: give both or neither');
  if (values.cmdline === '') throw new LockstepError('INVALID_ARGUMENT', '--cmdline must not be empty');
  const place = {
    storageGroup: storageGroupName(values['storage-group'] ?? DEFAULT_DISK_PLACE.storageGroup, '--storage-group'),
    format: volumeFormat(values['disk-format'] ?? DEFAULT_DISK_PLACE.format, '--disk-format'),
  };
  const disks = parseDisks(values.disk ?? [], place);
  if (from !== undefined) {
    if (disks[0]!.from !== undefined) throw new LockstepError('INVALID_ARGUMENT', '--from is the first disk\'s from=: give one or the other');
    disks[0]!.from = from;
  }
  // The daemon opens the kernel from its own working directory: a relative path is made absolute here.
  const guest: GuestOptions = {
    nics,
    ...(values.kernel !== undefined ? { kernel: path.resolve(values.kernel) } : {}),
    ...(values.initrd !== undefined ? { initrd: path.resolve(values.initrd) } : {}),
    ...(values.cmdline !== undefined ? { cmdline: values.cmdline } : {}),
  };
  const where = commonOptions(values);
  if (where.where.socket !== undefined) {
    const absent = [
      ...(nics.some((n) => n.mac === undefined) ? ['mac'] : []),
      ...(nics.some((n) => n.address === undefined) ? ['address'] : []),
      ...(['kernel', 'initrd', 'cmdline'] as const).filter((k) => guest[k] === undefined),
    ];
    if (absent.length > 0) {
      throw new LockstepError('INVALID_ARGUMENT', `with --socket vm create needs ${absent.map((k) => `--${k}`).join(', ')}: only the lab (--host, or no option) has defaults for them`);
    }
  }
  return {
    verb: 'create',
    name,
    memoryMiB: integer(values.memory!, 'memory', 64, 1024 * 1024),
    vcpus: integer(values.vcpus!, 'vcpus', 1, 64),
    disks,
    protection: values.protection === undefined ? 'ha' : protectionLevel(values.protection, '--protection'),
    desired: values.stopped ? 'stopped' : 'running',
    cdDrive: values['cd-drive'] === true,
    guest,
    ...where,
  };
}

/**
 * The disks of `vm create`: each `--disk [MIB][,group=NAME][,format=qcow2|raw][,from=ID]`, in `place` unless
 * it says otherwise; its size may be left out only with from=. None (only with --from): one disk.
 */
function parseDisks(specs: readonly string[], place: Pick<VmDisk, 'storageGroup' | 'format'>): DiskRequest[] {
  if (specs.length > DISKS_PER_VM_MAX) throw new LockstepError('INVALID_ARGUMENT', `a VM has at most ${DISKS_PER_VM_MAX} disks: --disk is given at most ${DISKS_PER_VM_MAX} times`);
  if (specs.length === 0) return [{ ...place }];
  return specs.map((spec) => {
    const parts = spec.split(',');
    const disk: DiskRequest = { ...place };
    if (!parts[0]!.includes('=')) disk.sizeMiB = integer(parts.shift()!, 'disk', 1, 16 * 1024 * 1024);
    for (const option of parts) {
      const [key, value] = option.split('=', 2);
      if (key === 'group' && value !== undefined) disk.storageGroup = storageGroupName(value, '--disk group=');
      else if (key === 'format' && value !== undefined) disk.format = volumeFormat(value, '--disk format=');
      else if (key === 'from' && value !== undefined) disk.from = snapshotId(value);
      else throw new LockstepError('INVALID_ARGUMENT', `--disk ${spec}: a disk is its size, then group=NAME, format=qcow2|raw and from=ID (got '${option}')`);
    }
    if (disk.sizeMiB === undefined && disk.from === undefined) throw new LockstepError('INVALID_ARGUMENT', `--disk ${spec}: a disk needs its size in MiB (or from=ID, to be as large as that image)`);
    return disk;
  });
}

function storageGroupName(v: string, option: string): string {
  if (!NAME.test(v)) throw new LockstepError('INVALID_ARGUMENT', `${option} must start with a letter and use a–z, 0–9 and '-', 31 characters at most (got '${v}')`);
  return v;
}

function volumeFormat(v: string, option: string): VolumeFormat {
  if (!(VOLUME_FORMATS as readonly string[]).includes(v)) throw new LockstepError('INVALID_ARGUMENT', `${option} must be one of ${VOLUME_FORMATS.join(', ')} (got '${v}')`);
  return v as VolumeFormat;
}

/**
 * The NICs of `vm create`: `--nics N`, or as many as the `--mac`s and `--address`es given (1 by default); the
 * Nth of each is the Nth NIC's. Each MAC unicast, each MAC and address given once (the daemon checks again).
 */
function parseNics(count: string | undefined, macs: readonly string[], addresses: readonly string[]): GuestOptions['nics'] {
  const n = count === undefined ? Math.max(1, macs.length, addresses.length) : integer(count, 'nics', 1, NICS_PER_VM_MAX);
  if (n > NICS_PER_VM_MAX) throw new LockstepError('INVALID_ARGUMENT', `a VM has at most ${NICS_PER_VM_MAX} NICs: --mac and --address are given at most ${NICS_PER_VM_MAX} times each`);
  if (macs.length > n || addresses.length > n) throw new LockstepError('INVALID_ARGUMENT', `--nics ${n}, but ${macs.length} --mac and ${addresses.length} --address: at most one of each per NIC`);
  const lowered = macs.map((m) => m.toLowerCase());
  for (const [i, mac] of lowered.entries()) {
    // The first octet's low bit marks multicast: a NIC's own address must be unicast (as the daemon checks).
    if (!MAC.test(mac) || (parseInt(mac.slice(0, 2), 16) & 1) === 1) throw new LockstepError('INVALID_ARGUMENT', `--mac must be a unicast MAC like 52:54:00:12:34:56 (got '${macs[i]}')`);
    if (lowered.indexOf(mac) !== i) throw new LockstepError('INVALID_ARGUMENT', `--mac ${mac} is given twice: each NIC has its own MAC`);
  }
  for (const [i, address] of addresses.entries()) {
    if (!IPV4.test(address)) throw new LockstepError('INVALID_ARGUMENT', `--address must be an IPv4 address (got '${address}')`);
    if (addresses.indexOf(address) !== i) throw new LockstepError('INVALID_ARGUMENT', `--address ${address} is given twice: each NIC has its own address`);
  }
  return Array.from({ length: n }, (_, i) => ({ ...(lowered[i] !== undefined ? { mac: lowered[i] } : {}), ...(addresses[i] !== undefined ? { address: addresses[i] } : {}) }));
}

export async function vmCommand(argv: string[]): Promise<number> {
  const req = parseVmCommand(argv);
  if (req.verb === 'help') {
    console.log(VM_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  if (req.verb === 'migrate') return migrateVm(target, req.name, { wait: req.wait, json: req.json });
  console.log(renderAnswer(req.json, await carryOut(target, req)));
  return EXIT.ok;
}

/** What a verb got from the pair: the asked daemon's answer, and what the human form adds to it. */
export type Answer =
  /** `views[0]` is the asked daemon's `GET /v1/vms`; other hosts' views follow when they were asked too. */
  | { verb: 'list'; views: HostView[] }
  | { verb: 'show'; host: string; vm: VmView }
  /** `window`: what was asked, for the human form's statistics and sparklines. */
  | { verb: 'history'; history: VmHistory; window: HistoryWindow }
  | { verb: 'console-log'; log: ConsoleLog }
  /** A change: the daemon's answer (the VM after it; `null` for a removal) and a line saying what was asked. */
  | { verb: 'change'; headline: string; vm: VmView | null };

/** The answer as printed: the daemon's JSON untouched with `--json`, else the human form. */
export function renderAnswer(json: boolean, a: Answer): string {
  switch (a.verb) {
    case 'list':
      return json ? JSON.stringify(a.views[0]?.vms ?? [], null, 2) : renderVmTable(vmRows(a.views));
    case 'show':
      return json ? JSON.stringify(a.vm, null, 2) : renderVmShow(a.host, a.vm);
    case 'history':
      return json ? JSON.stringify(a.history, null, 2) : renderVmHistory(a.history, a.window);
    case 'console-log':
      return json ? JSON.stringify(a.log, null, 2) : renderConsoleLog(a.log);
    case 'change':
      return json ? JSON.stringify(a.vm, null, 2) : renderChange(a.headline, a.vm);
  }
}

async function carryOut(target: Target, req: Exclude<VmRequest, { verb: 'help' | 'migrate' }>): Promise<Answer> {
  const socket = target.daemon.socket;
  const vmPath = (name: string): string => `/v1/vms/${encodeURIComponent(name)}`;
  switch (req.verb) {
    case 'list': {
      const vms = await daemonRequest<VmView[]>(socket, 'GET', '/v1/vms');
      return { verb: 'list', views: [{ host: target.daemon.host, vms }, ...(req.json ? [] : await otherViews(target))] };
    }
    case 'show':
      return { verb: 'show', ...(await runningView(target, req.name, await daemonRequest<VmView>(socket, 'GET', vmPath(req.name)))) };
    case 'history': {
      const nowMs = Date.now();
      const path = `${vmPath(req.name)}/history${historyQuery(req, nowMs)}`;
      return { verb: 'history', history: await runningHistory(target, path, await daemonRequest<VmHistory>(socket, 'GET', path)), window: { lastMs: req.lastMs, nowMs } };
    }
    case 'console-log': {
      const path = `${vmPath(req.name)}/console-log${req.bytes !== undefined ? `?bytes=${req.bytes}` : ''}`;
      return { verb: 'console-log', log: await liveConsoleLog(target, path, await daemonRequest<ConsoleLog>(socket, 'GET', path)) };
    }
    case 'create':
      return createVm(target, req);
    case 'start':
    case 'stop': {
      const vm = await daemonRequest<VmView | null>(socket, 'POST', `${vmPath(req.name)}/${req.verb}`);
      return { verb: 'change', headline: `VM ${req.name}: desired ${req.verb === 'start' ? 'running' : 'stopped'}`, vm };
    }
    case 'restart': {
      // Only the host that runs it restarts it: in the lab with no host named, its owner is asked.
      const vm = await daemonRequest<VmView | null>(await ownerSocket(target, req.name), 'POST', `${vmPath(req.name)}/restart`, undefined, RESTART_ANSWER_MS);
      return { verb: 'change', headline: `VM ${req.name}: restarted (stopped, and a new instance asked to start)`, vm };
    }
    case 'protect': {
      const vm = await daemonRequest<VmView | null>(socket, 'POST', `${vmPath(req.name)}/protection`, { protection: req.level });
      return { verb: 'change', headline: `VM ${req.name}: protection ${req.level}`, vm };
    }
    case 'cd-insert': {
      const vm = await daemonRequest<VmView | null>(socket, 'POST', `${vmPath(req.name)}/cdrom`, { vcd: req.vcd });
      return { verb: 'change', headline: `VM ${req.name}: virtual CD ${req.vcd} in its CD drive`, vm };
    }
    case 'cd-eject': {
      const vm = await daemonRequest<VmView | null>(socket, 'DELETE', `${vmPath(req.name)}/cdrom`);
      return { verb: 'change', headline: `VM ${req.name}: CD drive empty`, vm };
    }
    case 'remove': {
      // The API answers 204 without a body: with --json that prints `null`, so a script still reads JSON.
      const vm = await daemonRequest<null>(socket, 'DELETE', vmPath(req.name));
      if (target.kind === 'lab') await forgetLabVm(target.lab, req.name);
      return { verb: 'change', headline: `VM ${req.name} removed`, vm };
    }
  }
}

async function createVm(asked: Target, req: Extract<VmRequest, { verb: 'create' }>): Promise<Answer> {
  // Made from snapshots or images: defined by the host that holds them (only it can make the volumes),
  // each disk as large as its image unless told.
  const images = new Map<string, Awaited<ReturnType<typeof snapshotHolder>>>();
  for (const id of req.disks.flatMap((d) => (d.from ? [d.from] : []))) images.set(id, await snapshotHolder(asked, id));
  const holders = [...new Set([...images.values()].map((s) => s.daemon.host))];
  if (holders.length > 1) {
    throw new LockstepError('INVALID_ARGUMENT', `the images a VM is made from must be on one host (images are not replicated): ${[...images].map(([id, s]) => `${id} is on ${s.daemon.host}`).join(', ')}`);
  }
  const holder = [...images.values()][0]?.daemon ?? null;
  const target: Target = holder && asked.kind === 'lab' ? { ...asked, daemon: asked.pair.find((d) => d.host === holder.host) ?? asked.daemon } : asked;
  const disks = req.disks.map(({ sizeMiB, from, ...place }) => {
    const image = from === undefined ? undefined : images.get(from)!.snapshot;
    assert(sizeMiB !== undefined || image, 'parseVmCommand requires a size of a disk without from=');
    return { sizeMiB: sizeMiB ?? Math.ceil(image!.virtualBytes / (1024 * 1024)), ...place, ...(image ? { image } : {}) };
  });
  let guest: CompleteGuest;
  let slot: number | null = null;
  if (target.kind === 'lab') {
    const known = await daemonRequest<VmView[]>(target.daemon.socket, 'GET', '/v1/vms');
    const taken = known.flatMap((v) => nicsOfView(v.hardware));
    // The guest image build logs on stderr: stdout stays the command's answer (JSON with --json).
    ({ guest, slot } = await labGuest(target.lab, req.name, req.guest, taken, (line) => console.error(line)));
  } else {
    const g = req.guest;
    assert(g.kernel && g.initrd && g.cmdline, 'parseVmCommand requires the whole guest with --socket');
    const nics = g.nics.map(({ mac, address }) => {
      assert(mac && address, 'parseVmCommand requires every NIC with --socket');
      return { mac, address };
    });
    guest = { nics, kernel: g.kernel, initrd: g.initrd, cmdline: g.cmdline };
  }
  const def: VmDefinition = {
    name: req.name,
    vcpus: req.vcpus,
    memoryMiB: req.memoryMiB,
    guest: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    disks: disks.map(({ image: _, ...d }) => d),
    nics: guest.nics,
    protection: req.protection,
    desired: req.desired,
    ...(req.cdDrive ? { cdrom: { medium: null } } : {}),
  };
  // An image is named by id: the daemon finds it and records it as a file of its own (api.ts defineVm).
  const body = { ...def, disks: def.disks.map((d, i) => (disks[i]!.image ? { ...d, source: { snapshot: disks[i]!.image!.id } } : d)) };
  const vm = await daemonRequest<VmView | null>(target.daemon.socket, 'POST', '/v1/vms', body, 60_000);
  if (target.kind === 'lab' && slot !== null) {
    await noteLabVm(target.lab, { name: req.name, host: target.daemon.host, protection: req.protection, index: slot, address: guest.nics[0]!.address, mac: guest.nics[0]!.mac });
  }
  const headline = `VM ${req.name} defined on ${target.daemon.host}: ${req.protection}, ${req.vcpus} vCPU${req.vcpus === 1 ? '' : 's'}, ${req.memoryMiB} MiB, ${disks.map((d, i) => `${diskId(i)} ${d.sizeMiB} MiB${diskPlace(d)}${d.image ? ` made from ${d.image.kind} ${d.image.id} at its first start` : ''}`).join(', ')}${req.cdDrive ? ', a CD drive' : ''}, ${guest.nics.map((n) => `${n.mac} ${n.address}`).join(', ')}, desired ${req.desired}`;
  return { verb: 'change', headline, vm };
}

/** Where the volume goes, when it is not the default group's qcow2 (the line stays short for the common case). */
function diskPlace(disk: Pick<VmDisk, 'storageGroup' | 'format'>): string {
  const parts = [disk.format !== DEFAULT_DISK_PLACE.format ? disk.format : null, disk.storageGroup !== DEFAULT_DISK_PLACE.storageGroup ? `in storage group ${disk.storageGroup}` : null].filter((x) => x !== null);
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`;
}

/** With no host named in the lab, the other hosts' views too. */
async function otherViews(target: Target): Promise<HostView[]> {
  return (await askOtherLabHosts<VmView[]>(target, '/v1/vms')).map(({ host, body }) => ({ host, vms: body }));
}

/** The VM as the host that runs it sees it (its QEMU, its mirror), when no host was named and another runs it. */
async function runningView(target: Target, name: string, first: VmView): Promise<{ host: string; vm: VmView }> {
  if (first.local !== null) return { host: target.daemon.host, vm: first };
  for (const other of await otherViews(target)) {
    const vm = other.vms.find((v) => v.name === name);
    if (vm?.local) return { host: other.host, vm };
  }
  return { host: target.daemon.host, vm: first };
}

/** The VM's history from the host that runs it, when no host was named in the lab and the asked one does not. */
async function runningHistory(target: Target, path: string, first: VmHistory): Promise<VmHistory> {
  if (first.here) return first;
  return (await askOtherLabHosts<VmHistory>(target, path)).find((o) => o.body.here)?.body ?? first;
}

/**
 * The VM's console log from the host that runs it, else from one that has its last run's, when no host was
 * named in the lab and the asked one's is not the running instance's: each host has only its own.
 */
async function liveConsoleLog(target: Target, path: string, first: ConsoleLog): Promise<ConsoleLog> {
  if (first.running) return first;
  const others = (await askOtherLabHosts<ConsoleLog>(target, path)).map((o) => o.body);
  return others.find((o) => o.running) ?? (first.here ? first : others.find((o) => o.here)) ?? first;
}

type Options = Parameters<typeof parseArgs>[0] extends infer C ? (C extends { options?: infer O } ? NonNullable<O> : never) : never;

/** Parses a verb's options with the daemon-choosing ones every verb takes; a name is the only positional. */
function parse<O extends Options>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { ...WHERE_OPTIONS, ...options }, strict: true, allowPositionals: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${VM_USAGE}`);
  }
}

/** The options every verb of `vm`, `volume` and `storage-group` takes: `--json` and which daemon to ask. */
/** The API socket of the VM's owner when the lab's hosts may all be asked; else the daemon named. */
async function ownerSocket(target: Target, name: string): Promise<string> {
  if (target.kind !== 'lab' || !target.anyHost) return target.daemon.socket;
  const vm = await daemonRequest<VmView>(target.daemon.socket, 'GET', `/v1/vms/${encodeURIComponent(name)}`);
  return target.pair.find((d) => d.host === vm.owner)?.socket ?? target.daemon.socket;
}

export function commonOptions(values: { json?: boolean | string; socket?: string | boolean; host?: string | boolean }): Common {
  const where: Where = {
    ...(typeof values.socket === 'string' ? { socket: values.socket } : {}),
    ...(typeof values.host === 'string' ? { host: values.host } : {}),
  };
  checkWhere(where);
  return { json: values.json === true, where };
}

/** What the `history` verbs of `vm` and `host` take: how far back, and which families (the API checks them). */
export interface HistoryOptions {
  lastMs: number;
  series?: string;
}

export const HISTORY_OPTIONS = { last: { type: 'string' }, series: { type: 'string' } } as const;

const DEFAULT_LAST_MS = 10 * 60_000;
const DURATION = /^([1-9]\d{0,5})(s|m|h)$/;
const DURATION_UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000 } as const;

export function historyOptions(values: { last?: string | boolean; series?: string | boolean }): HistoryOptions {
  const lastMs = typeof values.last === 'string' ? durationMs(values.last, '--last') : DEFAULT_LAST_MS;
  return { lastMs, ...(typeof values.series === 'string' ? { series: values.series } : {}) };
}

/**
 * The history routes' query for the window ending `nowMs`: `since` is its start. One clock serves both ends:
 * the local API is a socket, so the daemon asked runs on this machine (in the lab, the same kernel's clock).
 */
export function historyQuery(opts: HistoryOptions, nowMs: number): string {
  const q = new URLSearchParams({ since: String(Math.max(0, nowMs - opts.lastMs)) });
  if (opts.series !== undefined) q.set('series', opts.series);
  return `?${q.toString()}`;
}

function durationMs(v: string, option: string): number {
  const m = DURATION.exec(v);
  if (m === null) throw new LockstepError('INVALID_ARGUMENT', `${option} must be a whole number of seconds, minutes or hours, like 90s, 10m or 1h (got '${v}')`);
  return Number(m[1]) * DURATION_UNIT_MS[m[2] as keyof typeof DURATION_UNIT_MS];
}

function oneName(positionals: string[], form: string): string {
  if (positionals.length !== 1) throw usage(form);
  const name = positionals[0]!;
  if (!NAME.test(name)) throw new LockstepError('INVALID_ARGUMENT', `VM name '${name}' must start with a letter and use a–z, 0–9 and '-', 31 characters at most`, { vm: name });
  return name;
}

function protectionLevel(v: string, option: string): ProtectionLevel {
  if (!(PROTECTION_LEVELS as readonly string[]).includes(v)) throw new LockstepError('INVALID_ARGUMENT', `${option} must be one of ${PROTECTION_LEVELS.join(', ')} (got '${v}')`);
  return v as ProtectionLevel;
}

function integer(v: string, name: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new LockstepError('INVALID_ARGUMENT', `--${name} must be a whole number from ${min} to ${max} (got '${v}')`);
  return n;
}

function usage(form: string): LockstepError {
  return new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${form}`);
}
