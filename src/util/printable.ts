/**
 * A value from the wire, shown in an error message: JSON where it can be, one line, at most 60 characters.
 * Whatever a peer sends must not turn an error message into a flood.
 */
export function printableValue(v: unknown): string {
  let s: string;
  try {
    s = v === undefined ? 'missing' : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}…` : s;
}
