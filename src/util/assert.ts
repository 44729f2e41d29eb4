/**
 * A broken invariant: a bug in Lockstep, never bad input. Throwing it is meant to crash the process; in an
 * availability daemon a crash (and the peer taking over) is safer than carrying on in a state we did not
 * foresee.
 */
export class BugError extends Error {
  override readonly name = 'BugError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new BugError(`invariant broken: ${message}`);
}

export function unreachable(value: never, what: string): never {
  throw new BugError(`unreachable: unexpected ${what}: ${JSON.stringify(value)}`);
}
