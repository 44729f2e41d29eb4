/**
 * `lockstep volume …` and `lockstep storage-group …`: the pair's volumes and a host's storage groups,
 * through lockstepd's local API (docs/cli.md). Read-only: a volume is made with its VM. Either host answers
 * for the pair's volumes; a storage group is one host's, so its answer is the asked host's.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import { askOtherLabHosts, resolveTarget, type Target } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { renderStorageGroupShow, renderStorageGroupTable, renderVolumeShow, renderVolumeTable, volumeRows, type HostVolumes, type StorageGroupView, type VolumeView } from './volume-view.js';
import { EXIT } from './output.js';

export const VOLUME_USAGE = `lockstep volume — the pair's volumes (a VM's disk, named after its VM)

  lockstep volume list
  lockstep volume show NAME

lockstep storage-group — a host's storage groups (where its volumes live)

  lockstep storage-group list
  lockstep storage-group show NAME

Every verb takes --json (the API's JSON) and --socket PATH or --host host1|host2 as \`lockstep vm\` does.
In the lab with no host named, volumes are shown as their owners see them (the owner measures a resync).`;

const NAME = /^[a-z][a-z0-9-]{0,30}$/;

export type Noun = 'volume' | 'storage-group';

export type VolumeRequest = { verb: 'help'; exit: number } | (Common & { noun: Noun; verb: 'list' }) | (Common & { noun: Noun; verb: 'show'; name: string });

export function parseVolumeCommand(noun: Noun, argv: readonly string[]): VolumeRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${noun} list`);
      return { noun, verb, ...commonOptions(values) };
    }
    case 'show': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 1) throw new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${noun} show NAME`);
      const name = positionals[0]!;
      if (!NAME.test(name)) throw new LockstepError('INVALID_ARGUMENT', `${noun} name '${name}' must start with a letter and use a–z, 0–9 and '-', 31 characters at most`);
      return { noun, verb, name, ...commonOptions(values) };
    }
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown ${noun} command '${verb}'\n\n${VOLUME_USAGE}`);
  }
}

export async function volumeCommand(noun: Noun, argv: string[]): Promise<number> {
  const req = parseVolumeCommand(noun, argv);
  if (req.verb === 'help') {
    console.log(VOLUME_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  console.log(renderVolumeAnswer(req.json, await carryOut(target, req)));
  return EXIT.ok;
}

/** What a verb got: the asked daemon's answer first, other hosts' after it when they were asked too. */
export type VolumeAnswer =
  | { verb: 'volume-list'; views: HostVolumes[] }
  | { verb: 'volume-show'; volume: VolumeView }
  | { verb: 'group-list'; host: string; groups: StorageGroupView[] }
  | { verb: 'group-show'; host: string; group: StorageGroupView };

export function renderVolumeAnswer(json: boolean, a: VolumeAnswer): string {
  switch (a.verb) {
    case 'volume-list':
      return json ? JSON.stringify(a.views[0]?.volumes ?? [], null, 2) : renderVolumeTable(volumeRows(a.views));
    case 'volume-show':
      return json ? JSON.stringify(a.volume, null, 2) : renderVolumeShow(a.volume);
    case 'group-list':
      return json ? JSON.stringify(a.groups, null, 2) : renderStorageGroupTable(a.host, a.groups);
    case 'group-show':
      return json ? JSON.stringify(a.group, null, 2) : renderStorageGroupShow(a.host, a.group);
  }
}

async function carryOut(target: Target, req: Exclude<VolumeRequest, { verb: 'help' }>): Promise<VolumeAnswer> {
  const socket = target.daemon.socket;
  const host = target.daemon.host;
  if (req.noun === 'storage-group') {
    if (req.verb === 'list') return { verb: 'group-list', host, groups: await daemonRequest<StorageGroupView[]>(socket, 'GET', '/v1/storage-groups') };
    return { verb: 'group-show', host, group: await daemonRequest<StorageGroupView>(socket, 'GET', `/v1/storage-groups/${encodeURIComponent(req.name)}`) };
  }
  if (req.verb === 'list') {
    const volumes = await daemonRequest<VolumeView[]>(socket, 'GET', '/v1/volumes');
    return { verb: 'volume-list', views: [{ host, volumes }, ...(req.json ? [] : await otherVolumes(target))] };
  }
  const first = await daemonRequest<VolumeView>(socket, 'GET', `/v1/volumes/${encodeURIComponent(req.name)}`);
  if (req.json || first.owner === host) return { verb: 'volume-show', volume: first };
  const fromOwner = (await otherVolumes(target)).flatMap((a) => (a.host === first.owner ? a.volumes.filter((v) => v.name === req.name) : []));
  return { verb: 'volume-show', volume: fromOwner[0] ?? first };
}

/** In the lab with no host named, the other hosts' answers too: a resync's figures are its owner's. */
async function otherVolumes(target: Target): Promise<HostVolumes[]> {
  return (await askOtherLabHosts<VolumeView[]>(target, '/v1/volumes')).map(({ host, body }) => ({ host, volumes: body }));
}

function parse(args: string[]) {
  try {
    return parseArgs({ args, options: WHERE_OPTIONS, strict: true, allowPositionals: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${VOLUME_USAGE}`);
  }
}
