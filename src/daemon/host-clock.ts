/**
 * The host's clock as the preferences show it: the time now, the time zone, and whether NTP keeps the clock
 * synchronised — as far as it can be read honestly from where lockstepd runs.
 *
 * Synchronisation is the kernel's own word on it, read with adjtimex(2) (`busybox adjtimex` without options
 * only reads): an NTP daemon (chrony, ntpd, systemd-timesyncd) that disciplines the clock clears the
 * kernel's STA_UNSYNC flag and keeps its error bound small; without one, the kernel sets the flag once the
 * bound passes 16 s. It needs no systemd and no D-Bus, so it also works inside a network namespace (the
 * lab's hosts), where `timedatectl` cannot answer, and it is the clock the host's processes actually use.
 * When it cannot be read, the answer is "unknown", with why; nothing is guessed.
 */
import type { RunOptions, RunResult } from '../util/exec.js';
import { describeError } from '../util/errors.js';

export interface NtpStatus {
  /** true: the kernel says the clock is synchronised; false: it says it is not; null: unknown (`detail` says why). */
  synchronized: boolean | null;
  source: string;
  detail: string;
  /** The kernel's bound on the clock's error (maxerror) and its estimate (esterror), in ms; null when unknown. */
  maxErrorMs: number | null;
  estimatedErrorMs: number | null;
}

export interface HostClock {
  /** The host's clock when asked (UTC, RFC 3339). */
  now: string;
  /** lockstepd's time zone: TZ if set, else the host's /etc/localtime. */
  timeZone: string;
  utcOffsetMinutes: number;
  ntp: NtpStatus;
}

export type Runner = (cmd: string, args: readonly string[], opts: RunOptions) => Promise<RunResult>;

const SOURCE = 'kernel (adjtimex)';
/** STA_UNSYNC in adjtimex's status word (include/uapi/linux/timex.h). */
const STA_UNSYNC = 0x0040;
const ADJTIMEX_TIMEOUT_MS = 2000;
/** A reading is reused this long: a console left open on the preferences page starts no program per redraw. */
const NTP_READING_REUSE_MS = 10_000;

/** Reads the host's clock; the NTP reading is kept for a few seconds. */
export class HostClockReader {
  private reading: { atMs: number; status: Promise<NtpStatus> } | null = null;

  constructor(
    private readonly run: Runner,
    private readonly nowMs: () => number = Date.now,
  ) {}

  async read(): Promise<HostClock> {
    const asked = this.nowMs();
    if (this.reading === null || asked - this.reading.atMs > NTP_READING_REUSE_MS) this.reading = { atMs: asked, status: this.readNtp() };
    const ntp = await this.reading.status;
    // The time once the reading is in, so that the answer's time is as close as can be to when it is sent.
    const now = this.nowMs();
    // East of UTC is positive; `0 -` rather than a unary minus, which makes UTC's offset -0.
    const utcOffsetMinutes = 0 - new Date(now).getTimezoneOffset();
    return { now: new Date(now).toISOString(), timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'unknown', utcOffsetMinutes, ntp };
  }

  private async readNtp(): Promise<NtpStatus> {
    try {
      const r = await this.run('busybox', ['adjtimex'], { timeoutMs: ADJTIMEX_TIMEOUT_MS, allowFailure: true });
      if (r.code !== 0) return unknown(`busybox adjtimex exited ${r.code}: ${(r.stderr || r.stdout).trim().split('\n')[0] ?? ''}`);
      return parseAdjtimex(r.stdout);
    } catch (e) {
      return unknown(`cannot run busybox adjtimex: ${describeError(e)}`);
    }
  }
}

/** What `busybox adjtimex` printed, as an NTP status. */
export function parseAdjtimex(text: string): NtpStatus {
  const field = (name: string): string | null => new RegExp(`^\\s*${name}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? null;
  const status = field('status');
  const statusWord = status === null ? NaN : Number(/^(\d+)/.exec(status)?.[1]);
  if (!Number.isInteger(statusWord)) return unknown(`busybox adjtimex printed no status word: ${JSON.stringify(text.slice(0, 200))}`);
  const usToMs = (v: string | null): number | null => {
    const n = v === null ? NaN : Number(/^(\d+)/.exec(v)?.[1]);
    return Number.isFinite(n) ? n / 1000 : null;
  };
  const synchronized = (statusWord & STA_UNSYNC) === 0;
  const verdict = /\((.*)\)/.exec(field('return value') ?? '')?.[1] ?? (synchronized ? 'clock synchronized' : 'clock not synchronized');
  return { synchronized, source: SOURCE, detail: `${verdict}, status ${status}`, maxErrorMs: usToMs(field('maxerror')), estimatedErrorMs: usToMs(field('esterror')) };
}

function unknown(why: string): NtpStatus {
  return { synchronized: null, source: SOURCE, detail: why, maxErrorMs: null, estimatedErrorMs: null };
}
