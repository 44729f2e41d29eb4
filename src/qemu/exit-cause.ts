/**
 * Why a QEMU process ended, decided from what we know when it has: whether the supervisor was stopping it,
 * the reason in QEMU's last SHUTDOWN event (if it sent one), and the exit status. Pure, so every case is a
 * table row in the tests.
 */

/**
 * - `guest-shutdown`: the guest powered itself off (or reset with reboot disabled);
 * - `quit`: someone asked QEMU to quit (QMP `quit`), or it exited 0 without saying why;
 * - `killed`: a signal ended it (SIGKILL, or SIGTERM/SIGINT/SIGHUP, which QEMU handles as a clean exit);
 * - `crashed`: QEMU failed (fatal signal such as SIGSEGV/SIGABRT, non-zero exit, guest panic);
 * - `stopped-by-supervisor`: `VmInstance.stop()` was under way, whichever step ended it;
 * - `guest-hung`: the guest stopped beating (guest-heartbeat.ts) and the supervisor killed its QEMU.
 */
export type VmExitCause = 'guest-shutdown' | 'quit' | 'killed' | 'crashed' | 'stopped-by-supervisor' | 'guest-hung';

export interface ExitFacts {
  stoppedBySupervisor: boolean;
  /** The supervisor killed QEMU because its guest was hung. */
  killedAsHung: boolean;
  /** `data` of QEMU's SHUTDOWN event: `reason` ('guest-shutdown', 'host-qmp-quit', 'host-signal', …), `guest`. */
  shutdown: { reason: string; guest: boolean } | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Signals that mean QEMU itself failed, as opposed to being told to go. */
const CRASH_SIGNALS: ReadonlySet<string> = new Set(['SIGSEGV', 'SIGABRT', 'SIGBUS', 'SIGILL', 'SIGFPE', 'SIGTRAP', 'SIGSYS']);

export function exitCause(f: ExitFacts): VmExitCause {
  if (f.stoppedBySupervisor) return 'stopped-by-supervisor';
  if (f.killedAsHung) return 'guest-hung';
  if (f.signal !== null) return CRASH_SIGNALS.has(f.signal) ? 'crashed' : 'killed';
  if (f.shutdown) {
    switch (f.shutdown.reason) {
      case 'host-qmp-quit':
        return 'quit';
      case 'host-signal':
        return 'killed';
      case 'guest-panic':
        return 'crashed';
      case 'guest-shutdown':
        return 'guest-shutdown';
      default:
        // guest-reset/host-qmp-system-reset under -no-reboot, host-ui, subsystem-reset: QEMU says who asked.
        return f.shutdown.guest ? 'guest-shutdown' : 'quit';
    }
  }
  return f.code === 0 ? 'quit' : 'crashed';
}
