/**
 * `lockstep vcd …`: a host's virtual CDs (ISO images to insert into VMs' CD drives), through lockstepd's
 * local API (docs/vcd.md). A VCD is the host's that received it, so every answer is the asked host's;
 * `create` streams the file to it.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest, daemonUpload } from '../daemon/api-client.js';
import { resolveTarget } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { formatBytes } from './vm-view.js';
import { EXIT, table } from './output.js';
import { ISO_HEAD_BYTES, VCD_NAME, isoProblem } from '../storage/vcd.js';
import { open } from 'node:fs/promises';

export const VCD_USAGE = `lockstep vcd — a host's virtual CDs (ISO images for VMs' CD drives)

  lockstep vcd list
  lockstep vcd create NAME ISO-FILE [--storage-group GROUP]
  lockstep vcd delete NAME

Every verb takes --json (the API's JSON) and --socket PATH or --host host1|host2 as \`lockstep vm\` does.
A VCD stays on the host that received it: upload it to each host whose VMs need it.`;

export type VcdRequest =
  | { verb: 'help'; exit: number }
  | (Common & { verb: 'list' })
  | (Common & { verb: 'create'; name: string; file: string; storageGroup: string | null })
  | (Common & { verb: 'delete'; name: string });

export function parseVcdCommand(argv: readonly string[]): VcdRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep vcd list');
      return { verb, ...commonOptions(values) };
    }
    case 'create': {
      const { values, positionals } = parse(rest, CREATE_OPTIONS);
      if (positionals.length !== 2) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep vcd create NAME ISO-FILE [--storage-group GROUP]');
      return { verb, name: vcdName(positionals[0]!), file: positionals[1]!, storageGroup: values['storage-group'] ?? null, ...commonOptions(values) };
    }
    case 'delete': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 1) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep vcd delete NAME');
      return { verb, name: vcdName(positionals[0]!), ...commonOptions(values) };
    }
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown vcd command '${verb}'\n\n${VCD_USAGE}`);
  }
}

/** A VCD as the CLI reads lockstepd's answer: only what it shows is typed. */
export interface VcdView {
  name: string;
  host?: string;
  storageGroup?: string;
  bytes?: number;
  sha256?: string;
  created?: string;
}

export type VcdAnswer = { verb: 'list'; host: string; vcds: VcdView[] } | { verb: 'create'; vcd: VcdView } | { verb: 'delete'; host: string; name: string };

export async function vcdCommand(argv: string[]): Promise<number> {
  const req = parseVcdCommand(argv);
  if (req.verb === 'help') {
    console.log(VCD_USAGE);
    return req.exit;
  }
  if (req.verb === 'create') await refuseNonIso(req.file);
  const { daemon } = await resolveTarget(req.where);
  let answer: VcdAnswer;
  switch (req.verb) {
    case 'list':
      answer = { verb: 'list', host: daemon.host, vcds: await daemonRequest<VcdView[]>(daemon.socket, 'GET', '/v1/vcds') };
      break;
    case 'create': {
      const query = req.storageGroup === null ? '' : `?storageGroup=${encodeURIComponent(req.storageGroup)}`;
      answer = { verb: 'create', vcd: await daemonUpload<VcdView>(daemon.socket, `/v1/vcds/${encodeURIComponent(req.name)}${query}`, req.file, 'application/octet-stream') };
      break;
    }
    case 'delete':
      await daemonRequest(daemon.socket, 'DELETE', `/v1/vcds/${encodeURIComponent(req.name)}`);
      answer = { verb: 'delete', host: daemon.host, name: req.name };
      break;
  }
  console.log(renderVcdAnswer(req.json, answer));
  return EXIT.ok;
}

export function renderVcdAnswer(json: boolean, a: VcdAnswer): string {
  switch (a.verb) {
    case 'list':
      if (json) return JSON.stringify(a.vcds, null, 2);
      if (a.vcds.length === 0) return `${a.host} holds no virtual CDs`;
      return table(
        ['name', 'host', 'storage group', 'size', 'sha256', 'created'],
        a.vcds.map((v) => [v.name, v.host ?? a.host, v.storageGroup ?? '-', v.bytes === undefined ? '-' : formatBytes(v.bytes), (v.sha256 ?? '-').slice(0, 12), v.created ?? '-']),
      );
    case 'create':
      return json ? JSON.stringify(a.vcd, null, 2) : `virtual CD ${a.vcd.name} stored on ${a.vcd.host ?? '?'} in storage group ${a.vcd.storageGroup ?? '?'}: ${a.vcd.bytes === undefined ? '?' : formatBytes(a.vcd.bytes)}, sha256 ${a.vcd.sha256 ?? '?'}`;
    case 'delete':
      return json ? JSON.stringify({ deleted: a.name, host: a.host }) : `virtual CD ${a.name} deleted from ${a.host}`;
  }
}

/**
 * The daemon checks the image too, but only once its head has arrived, and answers by closing the upload:
 * read here first, a wrong file is said clearly before anything is sent.
 */
async function refuseNonIso(file: string): Promise<void> {
  let head: Buffer;
  try {
    const fh = await open(file, 'r');
    try {
      const { buffer, bytesRead } = await fh.read(Buffer.alloc(ISO_HEAD_BYTES), 0, ISO_HEAD_BYTES, 0);
      head = buffer.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `cannot read ${file}: ${(e as Error).message}`, { file });
  }
  const problem = isoProblem(head);
  if (problem) throw new LockstepError('VCD_NOT_ISO', `${file} is not an ISO image: ${problem}`, { file });
}

function vcdName(name: string): string {
  if (!VCD_NAME.test(name)) throw new LockstepError('INVALID_ARGUMENT', `virtual CD name '${name}' must start with a lowercase letter and use a–z, 0–9, '.', '_' and '-', 64 characters at most`, { field: 'name' });
  return name;
}

const CREATE_OPTIONS = { 'storage-group': { type: 'string' } } as const;

function parse<O extends typeof CREATE_OPTIONS | Record<never, never>>(args: string[], extra: O = {} as O) {
  try {
    return parseArgs({ args, options: { ...WHERE_OPTIONS, ...extra } as typeof WHERE_OPTIONS & typeof CREATE_OPTIONS, strict: true, allowPositionals: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${VCD_USAGE}`);
  }
}
