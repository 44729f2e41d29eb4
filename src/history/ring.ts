/**
 * A bounded history of samples: at most `capacity` rounds, each a wall-clock time and one value per column
 * (a column is a series: `cpu`, `memory`, …). When full, a new round replaces the oldest. The memory is
 * fixed when the ring is made: `capacity × (1 + columns) × 8` bytes in typed arrays, and never grows
 * (720 rounds of 10 columns: 62 KiB). A column with no value in a round (the file could not be read) holds
 * NaN there, and is left out of what `since` answers.
 */
import { assert } from '../util/assert.js';

export type Point = readonly [wallMs: number, value: number];

export class SampleRing {
  private readonly times: Float64Array;
  private readonly values: Float64Array[];
  private readonly index: ReadonlyMap<string, number>;
  /** The slot the next round goes into, and how many slots hold a round. */
  private next = 0;
  private size = 0;

  constructor(
    readonly capacity: number,
    readonly columns: readonly string[],
  ) {
    assert(Number.isInteger(capacity) && capacity > 0, `a ring's capacity must be a positive integer, not ${capacity}`);
    assert(new Set(columns).size === columns.length, `a ring names a column twice: ${columns.join(', ')}`);
    this.times = new Float64Array(capacity);
    this.values = columns.map(() => new Float64Array(capacity));
    this.index = new Map(columns.map((c, i) => [c, i]));
  }

  /** How many rounds it holds now (at most `capacity`). */
  get length(): number {
    return this.size;
  }

  /** The newest round's time; null while empty. */
  get newestMs(): number | null {
    return this.size === 0 ? null : this.times[(this.next - 1 + this.capacity) % this.capacity]!;
  }

  /**
   * Records a round at `wallMs`. Rounds are kept in the order pushed; a time that is not after the newest
   * (the wall clock was set back) is still kept, and `since` answers in slot order, so a chart sees the
   * step back rather than losing the rounds after it. A column left out or null has no value this round.
   */
  push(wallMs: number, values: Readonly<Record<string, number | null | undefined>>): void {
    for (const key of Object.keys(values)) assert(this.index.has(key), `the ring has no column '${key}' (it has ${this.columns.join(', ')})`);
    const slot = this.next;
    this.times[slot] = wallMs;
    this.columns.forEach((c, i) => {
      const v = values[c];
      this.values[i]![slot] = v === null || v === undefined || !Number.isFinite(v) ? Number.NaN : v;
    });
    this.next = (slot + 1) % this.capacity;
    this.size = Math.min(this.capacity, this.size + 1);
  }

  /** A column's points newer than `sinceMs` (all with -Infinity), oldest first, rounds without a value left out. */
  since(column: string, sinceMs = Number.NEGATIVE_INFINITY): Point[] {
    const col = this.index.get(column);
    assert(col !== undefined, `the ring has no column '${column}'`);
    const values = this.values[col]!;
    const out: Point[] = [];
    const first = (this.next - this.size + this.capacity) % this.capacity;
    for (let i = 0; i < this.size; i++) {
      const slot = (first + i) % this.capacity;
      const t = this.times[slot]!;
      const v = values[slot]!;
      if (t > sinceMs && !Number.isNaN(v)) out.push([t, v]);
    }
    return out;
  }

  /** A column's newest value, or null when the newest round has none. */
  latest(column: string): number | null {
    const col = this.index.get(column);
    assert(col !== undefined, `the ring has no column '${column}'`);
    if (this.size === 0) return null;
    const v = this.values[col]![(this.next - 1 + this.capacity) % this.capacity]!;
    return Number.isNaN(v) ? null : v;
  }

  /** The bytes its arrays hold: fixed at construction. */
  get bytes(): number {
    return this.times.byteLength + this.values.reduce((a, v) => a + v.byteLength, 0);
  }
}
