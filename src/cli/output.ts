/** How the CLI speaks: aligned tables for people, JSON for scripts, and exit codes scripts can trust. */
import { isLockstepError, describeError, type ErrorCode } from '../util/errors.js';

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** Errors that mean "the command was wrong", as opposed to "the command could not be carried out". */
const USAGE_CODES: readonly ErrorCode[] = ['INVALID_ARGUMENT', 'UNKNOWN_VM', 'UNKNOWN_VOLUME', 'UNKNOWN_STORAGE_GROUP', 'UNKNOWN_HOST', 'UNKNOWN_FAULT', 'UNKNOWN_USER', 'UNKNOWN_GROUP', 'UNKNOWN_RECEIVER', 'UNKNOWN_VCD', 'VCD_NOT_ISO', 'INVALID_SPEC', 'UNKNOWN_SNAPSHOT', 'IMAGE_INVALID'];

export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n');
}

/** Prints an error the way a person or a script wants it, and returns the exit code it deserves. */
export function reportError(e: unknown, json: boolean): number {
  const code = isLockstepError(e) ? e.code : 'INTERNAL';
  if (json) console.log(JSON.stringify({ error: { code, message: describeError(e), fields: isLockstepError(e) ? e.fields : {} } }));
  else if (isLockstepError(e)) console.error(`lockstep: ${describeError(e)}`);
  else console.error(`lockstep: internal error (a bug — please report it): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return isLockstepError(e) && USAGE_CODES.includes(e.code) ? EXIT.usage : EXIT.failed;
}

/** Aligned `key  value` lines, for one object shown in full (a VM's `show`). */
export function keyValues(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`.trimEnd()).join('\n');
}
