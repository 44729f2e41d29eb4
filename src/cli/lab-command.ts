/** `lockstep lab …`: the lab bench's verbs. */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { Lab, type LabStatus } from '../lab/lab.js';
import { PROTECTION_LEVELS, type ProtectionLevel } from '../daemon/vm-definition.js';
import { EXIT, table } from './output.js';

export const LAB_USAGE = `lockstep lab — the whole pair on one machine

  lockstep lab up [--vm NAME] [--protection none|ha|ft] [--memory MIB] [--accel tcg|auto|kvm] [--json]
  lockstep lab down
  lockstep lab status [--json]
  lockstep lab fail host1|host2 power|alink|alink1|alink2|mgmt|business|disk
  lockstep lab fail quorum1|quorum2 power|mgmt
  lockstep lab heal [TARGET]
  lockstep lab latency alink MS          added A-Link round-trip time (0 removes it)
  lockstep lab client -- CMD [ARGS…]     run a command in the client namespace
  lockstep lab record append TEXT… | last | get SEQ | stats | hang  [--vm NAME]

Environment: LOCKSTEP_LAB names the lab (default 'default'; other names prefix its namespaces),
LOCKSTEP_LAB_DIR moves its directory (default /var/lib/lockstep/lab/NAME).`;

export async function labCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const lab = new Lab();
  switch (verb) {
    case 'up': {
      const { values } = parse(rest, { vm: { type: 'string' }, protection: { type: 'string' }, memory: { type: 'string' }, accel: { type: 'string' }, json: { type: 'boolean' } });
      const status = await lab.up({
        ...(values.vm !== undefined ? { vm: values.vm } : {}),
        protection: parseProtection(values.protection),
        ...(values.memory !== undefined ? { memoryMiB: parseInteger(values.memory, 'memory', 64, 65536) } : {}),
        accel: parseAccel(values.accel),
      });
      if (values.json) console.log(JSON.stringify(status, null, 2));
      else {
        console.log(renderStatus(status));
        console.log(nextSteps(status));
      }
      return EXIT.ok;
    }
    case 'down':
      parse(rest, {});
      await lab.down();
      return EXIT.ok;
    case 'status': {
      const { values } = parse(rest, { json: { type: 'boolean' } });
      const status = await lab.status();
      console.log(values.json ? JSON.stringify(status, null, 2) : renderStatus(status));
      return EXIT.ok;
    }
    case 'fail': {
      const { positionals } = parse(rest, {}, true);
      if (positionals.length !== 2) throw usage('lab fail TARGET FAULT');
      console.log(await lab.fail(positionals[0]!, positionals[1]!));
      return EXIT.ok;
    }
    case 'heal': {
      const { positionals } = parse(rest, {}, true);
      if (positionals.length > 1) throw usage('lab heal [TARGET]');
      console.log(await lab.heal(positionals[0]));
      return EXIT.ok;
    }
    case 'latency': {
      // Not parseArgs: a negative value would read as an option, and deserves the value's own error.
      const positionals = rest.filter((a) => a !== '--json' && a !== '--');
      if (positionals.length !== 2 || positionals[0] !== 'alink') throw usage('lab latency alink MS');
      const ms = Number(positionals[1]);
      if (positionals[1] === '' || !Number.isFinite(ms)) throw new LockstepError('INVALID_ARGUMENT', `latency must be a number of milliseconds (got '${positionals[1]}')`);
      console.log(await lab.setAlinkLatency(ms));
      return EXIT.ok;
    }
    case 'client': {
      const cmd = rest[0] === '--' ? rest.slice(1) : rest;
      return lab.clientExec(cmd);
    }
    case 'record': {
      const { values, positionals } = parse(rest, { vm: { type: 'string' } }, true);
      const line = recordLine(positionals);
      const reply = await lab.record(line, values.vm);
      console.log(reply);
      return reply.startsWith('error') ? EXIT.failed : EXIT.ok;
    }
    case undefined:
    case 'help':
    case '--help':
      console.log(LAB_USAGE);
      return verb === undefined ? EXIT.usage : EXIT.ok;
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown lab command '${verb}'\n\n${LAB_USAGE}`);
  }
}

function recordLine(words: string[]): string {
  const [op, ...args] = words;
  switch (op) {
    case 'append':
      if (args.length === 0) throw usage('lab record append TEXT…');
      return `append ${args.join(' ')}`;
    case 'last':
    case 'stats':
    case 'hang':
      if (args.length !== 0) throw usage(`lab record ${op}`);
      return op;
    case 'get':
      if (args.length !== 1 || !/^\d+$/.test(args[0]!)) throw usage('lab record get SEQ (a whole number)');
      return `get ${args[0]}`;
    default:
      throw usage('lab record append TEXT… | last | get SEQ | stats | hang [--vm NAME]');
  }
}

type Options = Parameters<typeof parseArgs>[0] extends infer C ? (C extends { options?: infer O } ? NonNullable<O> : never) : never;

/** Parses a verb's options; `--json` is accepted everywhere so that errors come out as JSON too. */
function parse<O extends Options>(args: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args, options: { json: { type: 'boolean' }, ...options }, strict: true, allowPositionals });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${LAB_USAGE}`);
  }
}

function usage(form: string): LockstepError {
  return new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${form}`);
}

function parseProtection(v: string | undefined): ProtectionLevel | 'strongest' {
  if (v === undefined) return 'strongest';
  if (!(PROTECTION_LEVELS as readonly string[]).includes(v)) throw new LockstepError('INVALID_ARGUMENT', `--protection must be one of ${PROTECTION_LEVELS.join(', ')} (got '${v}')`);
  return v as ProtectionLevel;
}

function parseAccel(v: string | undefined): 'auto' | 'kvm' | 'tcg' {
  if (v === undefined) return 'tcg';
  if (v !== 'auto' && v !== 'kvm' && v !== 'tcg') throw new LockstepError('INVALID_ARGUMENT', `--accel must be tcg, auto or kvm (got '${v}')`);
  return v;
}

function parseInteger(v: string, name: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new LockstepError('INVALID_ARGUMENT', `--${name} must be a whole number from ${min} to ${max} (got '${v}')`);
  return n;
}

export function renderStatus(s: LabStatus): string {
  if (!s.up) return `lab '${s.lab}' is down (\`lockstep lab up\` brings it up)`;
  const hosts = table(
    ['host', 'state', 'daemon', 'availability', 'epoch', 'health', 'mgmt', 'alink1', 'alink2', 'faults'],
    s.hosts.map((h) => [
      h.name,
      h.state,
      h.daemon.state === 'running' ? `pid ${h.daemon.pid}` : 'not running',
      h.availability ? `${h.availability.state} (${h.availability.authority})` : '-',
      h.availability ? String(h.availability.epoch) : '-',
      h.availability ? String(h.availability.health) : '-',
      h.addresses.mgmt,
      h.addresses.alink1 ?? '',
      h.addresses.alink2 ?? '',
      h.faults.join(',') || '-',
    ]),
  );
  const quorum = table(['quorum server', 'state', 'mgmt', 'faults'], s.quorumServers.map((q) => [q.name, q.state, q.address, q.faults.join(',') || '-']));
  const vms =
    s.vms.length === 0
      ? 'no VMs (`lockstep lab up --vm demo` makes one)'
      : table(['vm', 'running on', 'owner', 'protection', 'state', 'address'], s.vms.map((v) => [v.name, v.host ?? '-', v.owner ?? '-', v.protection, v.state, v.address]));
  const latency = s.alinkLatencyMs > 0 ? `\nA-Link latency: +${s.alinkLatencyMs} ms round trip` : '';
  return `lab '${s.lab}' is up (client ${s.client.addresses.business} on the business network)${latency}\n\n${hosts}\n\n${quorum}\n\n${vms}\n\n${renderManagement(s)}`;
}

/** Each host's management API and its first-run step: the console's way in (docs/lab.md). */
export function renderManagement(s: LabStatus): string {
  const rows = s.hosts.map((h) => [
    h.name,
    `${h.management.url}/api/v1`,
    h.management.setupNeeded === null ? 'no answer' : h.management.setupNeeded ? `first run: npx lockstep user setup admin --host ${h.name}` : 'set up (log in)',
  ]);
  const consoles = s.hosts.map((h) => `${h.management.url}/`).join(' and ');
  return (
    `${table(['management API', 'url', 'users'], rows)}\n(self-signed certificates; reachable from the management network, e.g. \`npx lockstep lab client -- curl -k ${s.hosts[0]?.management.url ?? ''}/api/openapi.json\`)\n` +
    `Availability Console: ${consoles} in a browser on the management network (docs/console.md); a host without users opens on its first-run setup`
  );
}

function nextSteps(s: LabStatus): string {
  const vm = s.vms[0]?.name;
  if (!vm) return '\nNext: `npx lockstep lab up --vm demo` boots the demo VM.';
  return `
Try next:
  npx lockstep lab record append hello        # the guest answers "ok <seq>" once it is on disk
  npx lockstep lab record last
  npx lockstep lab status --json
  npx lockstep lab fail host1 business        # the client loses the VM; \`lockstep lab heal\` restores it
  npx lockstep lab client -- ping -c 2 ${s.vms[0]!.address}
  npx lockstep lab down                       # removes everything the lab made`;
}
