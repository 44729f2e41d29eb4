/**
 * `lockstep vm migrate`: live migration of a VM to the peer, and the CLI following it. Only the VM's owner
 * accepts the command (the peer refuses it), so the CLI finds the owner first; then, unless told not to
 * wait, it watches the owner's `local.migration` until the pair records the other host as the owner and the
 * VM runs there, or the migration failed. The decisions (where to send it, what an answer means, how the
 * progress reads) are pure functions; `migrateVm` does the talking.
 */
import { LockstepError, isLockstepError } from '../util/errors.js';
import { sleep } from '../util/proc.js';
import { daemonRequest } from '../daemon/api-client.js';
import type { Daemon, Target } from './daemon-target.js';
import { EXIT } from './output.js';
import { formatSeconds, renderProgress, runsOnOwner, type MigrationView, type VmView } from './vm-view.js';

const POLL_MS = 250;
/** Longest the CLI follows a migration; a healthy one of a lab VM takes seconds. */
export const MIGRATION_WAIT_MS = 10 * 60_000;
/** Without a terminal, a progress line at most this often (and at each phase change). */
const PLAIN_LINE_MS = 1000;

/** One host's answer to `GET /v1/vms/NAME`: the VM, or the error it answered (or could not answer) with. */
export type HostAnswer = { host: string; peer: string | null } & ({ vm: VmView } | { error: LockstepError });

/**
 * Where a migration must be sent, from the hosts' answers: the owner, as the owner itself says (a host's view
 * of its own VM is the one its daemon checks the command against), and the peer it goes to.
 */
export function routeMigration(name: string, answers: readonly HostAnswer[]): { owner: string; target: string } {
  const seen = answers.flatMap((a) => ('vm' in a ? [{ ...a, vm: a.vm }] : []));
  if (seen.length === 0) {
    const errors = answers.flatMap((a) => ('error' in a ? [a.error] : []));
    // A paired host that does not know the VM speaks for the pair; an unreachable one says nothing.
    throw errors.find((e) => e.code === 'UNKNOWN_VM') ?? errors[0] ?? new LockstepError('UNKNOWN_VM', `no VM named '${name}'`, { vm: name });
  }
  const claims = seen.filter((a) => a.vm.owner === a.host);
  if (claims.length === 1) {
    const owner = claims[0]!;
    if (owner.peer === null) throw new LockstepError('NOT_PAIRED', `${owner.host} is not paired: there is no peer to migrate VM ${name} to`, { host: owner.host });
    return { owner: owner.host, target: owner.peer };
  }
  const named = seen[0]!.vm.owner;
  const ownerAnswer = answers.find((a) => a.host === named);
  if (claims.length === 0 && ownerAnswer === undefined) {
    throw new LockstepError(
      'INVALID_ARGUMENT',
      `VM ${name} is owned by ${named}, and the lockstepd asked is ${seen.map((a) => a.host).join(', ')}'s: only the owner migrates it — send the command to ${named}'s lockstepd (--socket)`,
      { vm: name, owner: named },
    );
  }
  if (claims.length === 0 && ownerAnswer !== undefined && 'error' in ownerAnswer) {
    throw new LockstepError(ownerAnswer.error.code, `VM ${name} is owned by ${named}, whose lockstepd cannot be asked: ${ownerAnswer.error.message}`, {
      ...ownerAnswer.error.fields,
      vm: name,
      owner: named,
    });
  }
  // Ownership is changing hands (a takeover or a migration ending): the hosts have not agreed yet.
  const views = seen.map((a) => `${a.host} says ${a.vm.owner}`).join(', ');
  throw new LockstepError('COMMAND_REFUSED', `the hosts do not agree yet on who owns VM ${name} (${views}): try again in a moment`, { vm: name });
}

export type MigrationStep =
  | { kind: 'moving'; migration: MigrationView | null }
  | { kind: 'done'; downtimeMs: number | null; multifd: number | null }
  | { kind: 'failed'; error: string };

/**
 * What the source's and the target's answers (null: no answer) say of a migration to `targetHost`. It is
 * done once the pair records the target as the owner and the VM runs there — by the target's own QEMU when
 * the target answered, else by the core's state as the source sees it.
 */
export function migrationStep(source: VmView | null, target: VmView | null, targetHost: string): MigrationStep {
  for (const m of [source?.local?.migration, target?.local?.migration]) {
    if (m?.phase === 'failed') return { kind: 'failed', error: m.error ?? 'the daemon gave no reason' };
  }
  const done = target !== null ? target.owner === targetHost && target.local?.state === 'running' : source !== null && source.owner === targetHost && runsOnOwner(source.state);
  if (done) {
    const reported = [target?.local?.migration, source?.local?.migration];
    return { kind: 'done', downtimeMs: reported.find((m) => typeof m?.downtimeMs === 'number')?.downtimeMs ?? null, multifd: reported.find((m) => m?.multifd !== undefined)?.multifd ?? null };
  }
  return { kind: 'moving', migration: source?.local?.migration ?? target?.local?.migration ?? null };
}

/** The pair's daemons the CLI can reach for this target: both lab hosts, or the one socket given. */
function pairOf(target: Target): Daemon[] {
  return target.kind === 'lab' ? target.pair : [target.daemon];
}

export async function migrateVm(target: Target, name: string, opts: { wait: boolean; json: boolean }): Promise<number> {
  const daemons = pairOf(target);
  const { owner, target: to } = routeMigration(name, await Promise.all(daemons.map((d) => askVm(d, name))));
  const source = daemons.find((d) => d.host === owner)!;
  const destination = daemons.find((d) => d.host === to) ?? null;
  const started = Date.now();
  const accepted = await daemonRequest<VmView | null>(source.socket, 'POST', `/v1/vms/${encodeURIComponent(name)}/migrate`, undefined, 60_000);
  if (!opts.wait) {
    console.log(opts.json ? JSON.stringify(accepted, null, 2) : `migrating VM ${name} from ${owner} to ${to} (\`lockstep vm show ${name}\` follows it)`);
    return EXIT.ok;
  }
  const progress = new ProgressLine(process.stderr);
  let lastDowntimeMs: number | null = null;
  let lastMultifd: number | null = null;
  try {
    for (;;) {
      const [src, dst] = await Promise.all([askVm(source, name), destination ? askVm(destination, name) : null]);
      const answers = dst ? [src, dst] : [src];
      if (answers.every((a) => 'error' in a && a.error.code === 'UNKNOWN_VM')) throw new LockstepError('UNKNOWN_VM', `VM ${name} was removed during its migration`, { vm: name });
      const dstVm = dst && 'vm' in dst ? dst.vm : null;
      const step = migrationStep('vm' in src ? src.vm : null, dstVm, to);
      const elapsed = Date.now() - started;
      if (step.kind === 'failed') {
        throw new LockstepError('MIGRATION_FAILED', `migration of VM ${name} from ${owner} to ${to} failed: ${step.error}`, { vm: name, from: owner, to });
      }
      if (step.kind === 'done') {
        progress.end();
        const downtimeMs = step.downtimeMs ?? lastDowntimeMs;
        const multifd = step.multifd ?? lastMultifd;
        const done = dstVm ?? ('vm' in src ? src.vm : null);
        console.log(
          opts.json
            ? JSON.stringify(done, null, 2)
            : `migrated ${name} to ${to} in ${formatSeconds(elapsed)}${downtimeMs === null ? '' : `, downtime ${Math.round(downtimeMs)} ms`}` +
                (multifd === null ? '' : multifd > 0 ? `, RAM over ${multifd} multifd connections` : ', RAM over one stream'),
        );
        return EXIT.ok;
      }
      lastDowntimeMs = step.migration?.downtimeMs ?? lastDowntimeMs;
      lastMultifd = step.migration?.multifd ?? lastMultifd;
      progress.show(step.migration);
      if (elapsed > MIGRATION_WAIT_MS) {
        throw new LockstepError(
          'MIGRATION_FAILED',
          `migration of VM ${name} to ${to} did not complete within ${MIGRATION_WAIT_MS / 60_000} minutes; it may still be under way (\`lockstep vm show ${name}\`)`,
          { vm: name, from: owner, to },
        );
      }
      await sleep(POLL_MS);
    }
  } finally {
    progress.end();
  }
}

async function askVm(d: Daemon, name: string): Promise<HostAnswer> {
  try {
    return { host: d.host, peer: d.peer, vm: await daemonRequest<VmView>(d.socket, 'GET', `/v1/vms/${encodeURIComponent(name)}`, undefined, 5000) };
  } catch (e) {
    if (!isLockstepError(e)) throw e;
    return { host: d.host, peer: d.peer, error: e };
  }
}

/** Progress on stderr: one line redrawn in place on a terminal, plain lines (throttled) otherwise. */
class ProgressLine {
  private drawn = false;
  private lastText = '';
  private lastPhase = '';
  private lastAt = 0;

  constructor(private readonly out: NodeJS.WriteStream) {}

  show(m: MigrationView | null): void {
    if (this.out.isTTY) {
      const text = renderProgress(m, 30);
      this.out.write(`\r${text.slice(0, Math.max(20, (this.out.columns ?? 80) - 1))}\x1b[K`);
      this.drawn = true;
      return;
    }
    const text = renderProgress(m, 20);
    const phase = m?.phase ?? '';
    if (text === this.lastText || (phase === this.lastPhase && Date.now() - this.lastAt < PLAIN_LINE_MS)) return;
    this.out.write(`${text}\n`);
    [this.lastText, this.lastPhase, this.lastAt] = [text, phase, Date.now()];
  }

  end(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
