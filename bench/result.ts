/**
 * What every bench returns to `run.ts`, which prints its table and writes `bench/results/<name>.json`.
 * A bench is a module exporting `run(): Promise<BenchResult>`.
 */
export interface BenchResult {
  /** Names the results file. */
  name: string;
  title: string;
  /** The printed table, cells already formatted. */
  columns: string[];
  rows: string[][];
  /** How it was measured, and what the figures mean, under the table. */
  notes: string[];
  /** Every measurement, for the results file. */
  data: unknown;
}

export interface BenchModule {
  run(): Promise<BenchResult>;
}

/** A plain-text table: columns padded to their widest cell, numbers (anything starting with a digit) right-aligned. */
export function formatTable(columns: string[], rows: string[][]): string {
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((cell, i) => (/^[\d.-]/.test(cell) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
