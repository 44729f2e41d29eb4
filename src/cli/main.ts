/** `lockstep`: the CLI. Each verb lives in its own module; this file only routes and reports errors. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';
import { LockstepError } from '../util/errors.js';
import { EXIT, reportError } from './output.js';
import { labCommand, LAB_USAGE } from './lab-command.js';
import { vmCommand, VM_USAGE } from './vm-command.js';
import { volumeCommand, VOLUME_USAGE } from './volume-command.js';
import { vcdCommand, VCD_USAGE } from './vcd-command.js';
import { snapshotCommand, SNAPSHOT_USAGE } from './snapshot-command.js';
import { supportCommand, SUPPORT_USAGE } from './support-command.js';
import { doctorCommand } from './doctor-command.js';
import { userCommand, USER_USAGE } from './user-command.js';
import { logCommand, LOG_USAGE } from './log-command.js';
import { hostCommand, parseHostCommand, parseStatusCommand, HOST_USAGE } from './host-command.js';
import { networkCommand, NETWORK_USAGE } from './network-command.js';
import { prefCommand, PREF_USAGE } from './pref-command.js';

const USAGE = `lockstep — fault-tolerant and highly available VMs on two Linux servers

  lockstep status       the pair at a glance: hosts (state, epoch, authority, health, A-Link) and VMs
  lockstep host …       one host: list, show, sensors, history, maintenance on|off, repaired, force-takeover;
                        health: both hosts' health components (the peer's as it reports them over the A-Link)
  lockstep network list both hosts' networks: A-Link paths, management, business (state, speed, bandwidth),
                        the peer's as it reports them over the A-Link
  lockstep vm …         the pair's VMs: list, show, create, start, stop, protect, migrate, remove, history
  lockstep volume …     the pair's volumes (VM disks) and their state: list, show
  lockstep storage-group …  a host's storage groups and their usage: list, show
  lockstep vcd …        a host's virtual CDs (ISO images): list, create, delete
  lockstep snapshot …   a host's snapshots of VMs' volumes and imported disk images: list, show, take,
                        export, import, delete (a VM from one: vm create … --from ID)
  lockstep alert list   a host's alerts (the core's, from its event log)
  lockstep audit list   a host's audit log: users' actions and the platform's own
  lockstep user …       a host's management API users: setup, list, add, passwd, remove
  lockstep pref show    what is set up for the pair as a host runs it: addresses, quorum, clock, limits
  lockstep notification …  a host's notification receivers: list, test [RECEIVER]
  lockstep support bundle  a host's support bundle (.tar.gz) for a support case
  lockstep lab …        the whole pair on one machine (lockstep lab help)
  lockstep doctor       what this machine has and what Lockstep will do about it
  lockstep version

${HOST_USAGE}

${NETWORK_USAGE}

${VM_USAGE}

${VOLUME_USAGE}

${VCD_USAGE}

${SNAPSHOT_USAGE}

${LOG_USAGE}

${USER_USAGE}

${PREF_USAGE}

${SUPPORT_USAGE}

${LAB_USAGE}`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const json = argv.includes('--json');
  try {
    switch (command) {
      case 'status':
        return await hostCommand(parseStatusCommand(rest));
      case 'host':
        return await hostCommand(parseHostCommand(rest));
      case 'network':
        return await networkCommand(rest);
      case 'vm':
        return await vmCommand(rest);
      case 'volume':
      case 'storage-group':
        return await volumeCommand(command, rest);
      case 'vcd':
        return await vcdCommand(rest);
      case 'snapshot':
        return await snapshotCommand(rest);
      case 'support':
        return await supportCommand(rest);
      case 'alert':
      case 'audit':
        return await logCommand(command, rest);
      case 'user':
        return await userCommand(rest);
      case 'pref':
      case 'notification':
        return await prefCommand(command, rest);
      case 'lab':
        return await labCommand(rest);
      case 'doctor':
        return await doctorCommand(rest);
      case 'version':
      case '--version':
        console.log(version());
        return EXIT.ok;
      case undefined:
      case 'help':
      case '--help':
        console.log(USAGE);
        return command === undefined ? EXIT.usage : EXIT.ok;
      default:
        throw new LockstepError('INVALID_ARGUMENT', `unknown command '${command}' (\`lockstep help\` lists them)`);
    }
  } catch (e) {
    return reportError(e, json);
  }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
  return `lockstep ${pkg.version}`;
}
