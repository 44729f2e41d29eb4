/**
 * The explained timeline of a failover, a live migration or a restart, read from one host's event log
 * (`GET /v1/events`: the core's events and alerts, each with its time and the input that caused it). Pure:
 * log entries in, incidents out; nothing is made up — a step is an entry the core wrote, and its explanation
 * is what that entry means in the core's state tables (docs/core.md). A phase the log has no entry for yet
 * (a resync before the peer is back) is said to be pending, not guessed.
 *
 * An incident is anchored on the alert the core raises for it (FAILOVER, or TAKEOVER_REFUSED and
 * START_REFUSED when it would not run its copy; VM_MIGRATED, MIGRATION_FAILED; VM_RESTARTED,
 * VM_MOVED_AFTER_FAILURES, VM_FAILED), or on the destination's
 * "resume VM … here after its live migration", which raises none. Its steps are found around the anchor on
 * the same host: the fault or trigger before it (within `LOOKBACK_MS`), the decision between, the action at
 * it, and the resync after it, up to the VM's next incident.
 */
import type { LogEntry } from './types.js';

export type IncidentKind = 'failover' | 'migration' | 'restart';
export type Phase = 'detect' | 'decide' | 'act' | 'resync';

/** What each phase is called for each kind of incident. */
export const PHASE_NAMES: Record<IncidentKind, Record<Phase, string>> = {
  failover: { detect: 'fault detected', decide: 'quorum decision', act: 'action', resync: 'resync' },
  migration: { detect: 'trigger', decide: 'switch-over', act: 'action', resync: 'resync' },
  restart: { detect: 'fault detected', decide: 'decision', act: 'action', resync: 'resync' },
};

export interface Step {
  phase: Phase;
  entry: LogEntry;
  /** What the entry means, in a sentence. */
  explanation: string;
  /** The entry's cause (the core's input) in words. */
  causeExplained: string;
}

export interface Incident {
  kind: IncidentKind;
  vm: string;
  /** The host whose log this is (the one that acted). */
  host: string;
  /** The anchor's alert, or the destination's resume event. */
  anchor: LogEntry;
  /** One line: what happened, from the anchor. */
  summary: string;
  /** refused: the core would not run the VM here (TAKEOVER_REFUSED, START_REFUSED: its copy may be stale). */
  outcome: 'done' | 'failed' | 'refused' | 'in progress';
  steps: Step[];
  /** Phases without an entry yet, with what the log is waiting for. */
  pending: { phase: Phase; why: string }[];
}

/** How far before its anchor an incident's fault or trigger is looked for. */
export const LOOKBACK_MS = 120_000;
/** How long after its anchor the action's last entries (a start) may come. */
const ACTION_AFTER_MS = 15_000;

interface Pattern {
  re: RegExp;
  explain: (m: RegExpExecArray, e: LogEntry) => string;
}

/** Entry patterns by phase and kind; `%VM%` in a pattern is replaced by the VM's name (escaped). */
const FAILOVER_DETECT: Pattern[] = [
  { re: /^host state (\S+) → peer-lost$/, explain: (_m, e) => `${e.host} stopped hearing its peer: the peer went silent, so it asks for authority while the pair lease still runs` },
  // The peer silent for half the timeout: the host asks the quorum servers before declaring it lost (docs/core.md).
  {
    re: /^quorum lease held in epoch (\d+) while (\S+) is still heard: the (?:pair|host) keeps epoch (\d+)$/,
    explain: (m, e) => `${m[2]} went silent: before declaring it lost, ${e.host} asked the quorum servers and holds a lease in epoch ${m[1]}; until ${m[2]} is declared lost the pair goes on in epoch ${m[3]}`,
  },
  { re: /^operator asserted (\S+) is dead: taking authority in epoch (\d+)$/, explain: (m) => `an operator asserted that ${m[1]} is dead (force takeover): authority is taken in epoch ${m[2]} without a quorum grant` },
];
const FAILOVER_DECIDE: Pattern[] = [
  { re: /^host state (\S+) → isolated$/, explain: () => 'no peer and no authority: this host runs no VM until the peer returns or a quorum server grants it authority' },
  { re: /^the quorum lease it holds becomes authority in epoch (\d+)$/, explain: (m, e) => `the peer is declared lost: the lease ${e.host} already holds from every quorum server becomes its authority in epoch ${m[1]}; a server never grants an epoch to two hosts, so only ${e.host} may run the VMs` },
  { re: /^quorum granted authority in epoch (\d+)$/, explain: (m, e) => `the active quorum server granted ${e.host} authority in epoch ${m[1]}; it never grants an epoch to two hosts, so only ${e.host} may run the VMs` },
  { re: /^quorum server (\S+) denied authority: (\S+) holds epoch (\d+)$/, explain: (m) => `quorum server ${m[1]} refused: ${m[2]} holds epoch ${m[3]}` },
  { re: /^quorum servers answered epochs (.+): aligning them on (\d+)$/, explain: (m) => `the quorum servers knew different epochs (${m[1]}): asking again for ${m[2]}` },
  { re: /^peer lost and no quorum server: tie-break winner takes authority in epoch (\d+)$/, explain: (m) => `no quorum server is configured: the designated tie-break winner takes authority in epoch ${m[1]}` },
  { re: /^host state (\S+) → solo$/, explain: () => 'holds authority without the peer: runs every VM' },
];
const FAILOVER_ACT: Pattern[] = [
  { re: /^took over VM %VM% from (\S+) in epoch (\d+)$/, explain: (m, e) => `${e.host}'s copy of the disk held every acknowledged write, so ${e.host} became the VM's owner in epoch ${m[2]}` },
  { re: /^start VM %VM% \(epoch (\d+)\)/, explain: (_m, e) => `QEMU started on ${e.host} from its copy (same MAC and address: clients reach it again)` },
];
const MIGRATION_DETECT: Pattern[] = [
  { re: /^operator: migrate VM %VM% to (\S+)$/, explain: (m) => `an operator asked to move the VM to ${m[1]}` },
  { re: /^operator: maintenance on$/, explain: (_m, e) => `an operator put ${e.host} in maintenance mode: its running HA VMs move to the peer` },
  { re: /^component fault: (.+)$/, explain: (m) => `a health check failed (${m[1]}): a primary less healthy than its backup moves its VMs` },
  { re: /^live migration (\S+) of VM %VM% to (\S+): preparing$/, explain: (m) => `live migration ${m[1]} to ${m[2]} begins: the peer starts an incoming instance` },
  { re: /^live migration (\S+) of VM %VM% from (\S+): starting the incoming instance$/, explain: (m) => `${m[2]} sends the VM here (migration ${m[1]}): an incoming instance starts` },
];
const MIGRATION_DECIDE: Pattern[] = [
  { re: /^live migration (\S+) of VM %VM% to (\S+): migrating \(its copy is in sync over stream (\S+)\)$/, explain: (m) => `the peer's copy of the disk is in sync, so the memory is copied over (pre-copy) and the VM switches over` },
];
const MIGRATION_ACT: Pattern[] = [
  { re: /^handed VM %VM% over to (\S+)$/, explain: (m) => `ownership passed to ${m[1]}` },
  { re: /^live migration (\S+) of VM %VM% to (\S+) completed$/, explain: (m) => `the VM runs on ${m[2]}; the guest kept running throughout` },
  { re: /^stop VM %VM%: migrated to the peer$/, explain: () => "this host's instance ended after the switch-over" },
  { re: /^resume VM %VM% here after its live migration \(epoch (\d+)\)$/, explain: (_m, e) => `the incoming instance on ${e.host} runs the guest now` },
];
const RESTART_DETECT: Pattern[] = [
  { re: /^VM %VM% failed \((.+)\): restarting in place \((\d+) of (\d+)\)$/, explain: (m) => `the VM failed (${m[1]}): restart ${m[2]} of at most ${m[3]} in the window, here` },
  { re: /^VM %VM% failed (\d+) times: restarting it on (\S+)$/, explain: (m) => `the VM failed ${m[1]} times here: it moves to ${m[2]}` },
  { re: /^VM %VM% failed (\d+) times and no peer can take it \(or it is unprotected\): giving up$/, explain: (m) => `the VM failed ${m[1]} times and no healthy peer can take it: the core gives up` },
];
const RESTART_ACT: Pattern[] = [{ re: /^start VM %VM% \(epoch (\d+)\)/, explain: (_m, e) => `QEMU started again on ${e.host}` }];
const RESYNC: Pattern[] = [
  { re: /^host state (\S+) → pairing$/, explain: () => 'the peer is heard again: the hosts agree on a new epoch' },
  { re: /^mirror VM %VM% to (\S+) \((full|incremental), stream (\S+)\)$/, explain: (m) => `${m[1]}'s copy is brought up to date: ${m[2] === 'full' ? 'the whole disk is copied' : 'only the blocks written while it was away are copied'}` },
  { re: /^mirror of VM %VM% in sync with (\S+) \(stream (\S+)\)$/, explain: (m) => `both copies hold every write again: the VM is protected (${m[1]} is its backup)` },
  { re: /^copy of VM %VM% is in sync with (\S+) \(stream (\S+)\)$/, explain: (m) => `this host's copy holds every write again: ${m[1]} mirrors into it` },
];
/** The resync is over at the first of these. */
const RESYNC_DONE = /^(mirror|copy) of VM %VM% (is )?in sync with /;

/** Anchors: the alert codes that start an incident, and its kind. */
const ANCHOR_CODES: Record<string, IncidentKind> = {
  FAILOVER: 'failover',
  VM_MIGRATED: 'migration',
  MIGRATION_FAILED: 'migration',
  VM_RESTARTED: 'restart',
  VM_MOVED_AFTER_FAILURES: 'restart',
  VM_FAILED: 'restart',
  // The core would not run its copy: a failover that did not happen, and why, is the story most worth telling.
  TAKEOVER_REFUSED: 'failover',
  START_REFUSED: 'failover',
};
/** Anchors whose incident ended without the action: the VM does not run (yet). */
const REFUSED = new Set(['TAKEOVER_REFUSED', 'START_REFUSED']);
const FAILED = new Set(['MIGRATION_FAILED', 'VM_FAILED']);
const RESUME_AFTER_MIGRATION = /^resume VM (\S+) here after its live migration/;
/** The VM an anchor alert is about, from its message (the alerts name it first). */
const ANCHOR_VM = /VM (\S+?)(?: |$|:)/;

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function forVm(patterns: Pattern[], vm: string): Pattern[] {
  return patterns.map((p) => ({ re: new RegExp(p.re.source.replaceAll('%VM%', escapeRe(vm))), explain: p.explain }));
}

function matchAny(patterns: Pattern[], e: LogEntry): string | null {
  for (const p of patterns) {
    const m = p.re.exec(e.what);
    if (m) return p.explain(m, e);
  }
  return null;
}

/** The core's input that caused an entry (`describeInput` in src/core/host-core.ts), in words. */
export function explainCause(cause: string): string {
  if (cause === 'tick') return 'a timer of the core ran out (nothing arrived in time)';
  if (cause === 'health report') return "the host's health checks";
  let m = /^peer (\S+)$/.exec(cause);
  if (m) return `a message from the peer over the A-Link (${m[1]})`;
  m = /^quorum (\S+) (\S+)$/.exec(cause);
  if (m) return `quorum server ${m[1]} answered: ${m[2]}`;
  m = /^operator (\S+)$/.exec(cause);
  if (m) return `an operator's command (${m[1]})`;
  m = /^VM (\S+) (\S+)$/.exec(cause);
  if (m) return `VM ${m[1]}'s QEMU reported: ${m[2]}`;
  m = /^A-Link RTT (.+)$/.exec(cause);
  if (m) return `the A-Link's measured round trip (${m[1]})`;
  return cause;
}

function anchorOf(e: LogEntry): { kind: IncidentKind; vm: string } | null {
  if (e.kind === 'alert' && e.code !== null && ANCHOR_CODES[e.code] !== undefined) {
    const m = ANCHOR_VM.exec(e.what);
    return m ? { kind: ANCHOR_CODES[e.code]!, vm: m[1]! } : null;
  }
  if (e.kind === 'event') {
    const m = RESUME_AFTER_MIGRATION.exec(e.what);
    if (m) return { kind: 'migration', vm: m[1]! };
  }
  return null;
}

/**
 * Every incident in `log` (one host's entries or several's, any order), newest first. Entries of other
 * hosts never join an incident: each host's log tells what it saw and did.
 */
export function incidents(log: readonly LogEntry[], protectionOf: (vm: string) => string | undefined = () => undefined): Incident[] {
  const sorted = [...log].sort((a, b) => a.id - b.id);
  const anchors: { at: number; kind: IncidentKind; vm: string; entry: LogEntry }[] = [];
  sorted.forEach((e, at) => {
    const a = anchorOf(e);
    if (a === null) return;
    // A failed migration's destination and source may both raise MIGRATION_FAILED; a resume right after the
    // source's VM_MIGRATED is the same migration seen from here: one incident per VM and step.
    const prev = anchors.at(-1);
    if (prev && prev.vm === a.vm && prev.kind === a.kind && prev.entry.host === e.host && prev.entry.atMs === e.atMs) return;
    anchors.push({ at, ...a, entry: e });
  });
  const out = anchors.map((a, i) => {
    const next = anchors.slice(i + 1).find((b) => b.vm === a.vm && b.entry.host === a.entry.host);
    const prev = anchors.slice(0, i).reverse().find((b) => b.vm === a.vm && b.entry.host === a.entry.host);
    const hostLog = sorted.filter((e) => e.host === a.entry.host && e.kind === 'event' && !e.what.startsWith('alert '));
    return build(a.kind, a.vm, a.entry, hostLog, prev?.entry ?? null, next?.entry ?? null, protectionOf(a.vm) === 'none');
  });
  return out.reverse();
}

/** `unprotected`: the VM has one copy, so no resync is to come. */
function build(kind: IncidentKind, vm: string, anchor: LogEntry, events: LogEntry[], prev: LogEntry | null, next: LogEntry | null, unprotected: boolean): Incident {
  const lo = Math.max(anchor.wallMs - LOOKBACK_MS, prev ? prev.wallMs : -Infinity);
  const before = events.filter((e) => e.id < anchor.id && e.wallMs >= lo && (prev === null || e.id > prev.id));
  // The next incident's step (its events come before its alert, in one wall-clock instant) is its own.
  const after = events.filter((e) => e.id > anchor.id && (next === null || (e.id < next.id && e.wallMs < next.wallMs)));
  const steps: Step[] = [];
  const add = (phase: Phase, entry: LogEntry, explanation: string): void => {
    steps.push({ phase, entry, explanation, causeExplained: explainCause(entry.cause) });
  };
  const detect = kind === 'failover' ? FAILOVER_DETECT : kind === 'migration' ? MIGRATION_DETECT : RESTART_DETECT;
  const decide = kind === 'failover' ? FAILOVER_DECIDE : kind === 'migration' ? MIGRATION_DECIDE : [];
  const act = kind === 'failover' ? FAILOVER_ACT : kind === 'migration' ? MIGRATION_ACT : RESTART_ACT;
  const [detectP, decideP, actP, resyncP] = [forVm(detect, vm), forVm(decide, vm), forVm(act, vm), forVm(RESYNC, vm)];
  const done = new RegExp(RESYNC_DONE.source.replaceAll('%VM%', escapeRe(vm)));

  // The fault or trigger: for a failover the last sign before the anchor (the peer may have been lost and
  // found before); for a migration or restart every trigger entry, oldest first.
  const detected = before.map((e) => ({ e, why: matchAny(detectP, e) })).filter((x) => x.why !== null);
  const firstDetect = kind === 'failover' ? detected.slice(-1) : detected;
  for (const { e, why } of firstDetect) add('detect', e, why!);
  const since = firstDetect[0]?.e.id ?? -Infinity;
  for (const e of before) {
    if (e.id <= since) continue;
    const why = matchAny(decideP, e);
    if (why !== null) add('decide', e, why);
  }
  // The action: entries of the anchor's step (same core time), those just before it, and a start shortly after.
  for (const e of [...before.filter((x) => x.id > since), ...after.filter((x) => x.wallMs <= anchor.wallMs + ACTION_AFTER_MS)]) {
    const why = matchAny(actP, e);
    if (why !== null) add('act', e, why);
  }
  const anchorWhy =
    anchor.kind !== 'alert'
      ? 'the VM runs here now'
      : anchor.code !== null && REFUSED.has(anchor.code)
        ? `the core refused to run the VM here (${anchor.code}): a copy that may lack acknowledged writes is never run`
        : `the core raised the ${anchor.severity} alert ${anchor.code}`;
  add('act', anchor, anchorWhy);
  let resynced = false;
  for (const e of after) {
    const why = matchAny(resyncP, e);
    if (why === null) continue;
    add('resync', e, why);
    if (done.test(e.what)) {
      resynced = true;
      break;
    }
  }
  steps.sort((a, b) => a.entry.id - b.entry.id || PHASES.indexOf(a.phase) - PHASES.indexOf(b.phase));

  const pending: { phase: Phase; why: string }[] = [];
  const has = (p: Phase): boolean => steps.some((s) => s.phase === p);
  if (!has('detect')) pending.push({ phase: 'detect', why: `no fault or trigger in ${anchor.host}'s log within ${LOOKBACK_MS / 1000} s before` });
  if (kind !== 'restart' && !has('decide')) pending.push({ phase: 'decide', why: kind === 'failover' ? 'no quorum decision in this log (an operator forced it, or it is older)' : "this host's log has no switch-over (it is the destination)" });
  const refused = anchor.code !== null && REFUSED.has(anchor.code);
  const failed = anchor.code !== null && FAILED.has(anchor.code);
  if (!resynced && !failed && !refused && !unprotected) pending.push({ phase: 'resync', why: kind === 'failover' ? `waiting for the peer to return and its copy of ${vm} to be brought up to date` : `waiting for both copies of ${vm} to be in sync` });
  return {
    kind,
    vm,
    host: anchor.host,
    anchor,
    summary: anchor.kind === 'alert' ? anchor.what : `VM ${vm} arrived on ${anchor.host} by live migration`,
    outcome: refused ? 'refused' : failed ? 'failed' : resynced || unprotected ? 'done' : 'in progress',
    steps: dedupe(steps),
    pending,
  };
}

const PHASES: Phase[] = ['detect', 'decide', 'act', 'resync'];

/** An entry that matched two phases' patterns (a start is a failover's action, never its resync) counts once. */
function dedupe(steps: Step[]): Step[] {
  const seen = new Set<number>();
  return steps.filter((s) => {
    if (seen.has(s.entry.id)) return false;
    seen.add(s.entry.id);
    return true;
  });
}
