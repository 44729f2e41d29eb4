/**
 * Draws `docs/performance-latency.svg` from `bench/results/ha-writes.json`: append latency p50 and p99,
 * unprotected vs HA-mirrored, at each A-Link RTT, with the goal (local p50 + 1.5 × RTT) marked over the HA
 * p50 bar. Plain SVG text, no dependency. `run.ts` calls it after a run that included ha-writes;
 * `node dist/bench/plot.js` redraws it from the last results.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../src/util/paths.js';

interface WritesRow {
  addedRttMs: number;
  pingRttMs: number;
  local: { p50Ms: number; p99Ms: number; appendsPerSecond: number };
  mirrored: { p50Ms: number; p99Ms: number; appendsPerSecond: number };
  goal: { allowedP50Ms: number; met: boolean };
}

export const LATENCY_SVG = path.join('docs', 'performance-latency.svg');

export async function plotLatency(root = repoRoot()): Promise<string> {
  const results = JSON.parse(await readFile(path.join(root, 'bench', 'results', 'ha-writes.json'), 'utf8')) as { data: { rows: WritesRow[] }; startedAt: string; machine: { cpus: number; cpuModel: string | null } };
  const svg = latencySvg(results.data.rows, `${results.startedAt.slice(0, 10)}, ${results.machine.cpus} × ${results.machine.cpuModel ?? 'CPU'}, QEMU under TCG`);
  const file = path.join(root, LATENCY_SVG);
  await writeFile(file, svg);
  return file;
}

const BARS = [
  { key: 'local p50', color: '#9ecae1', get: (r: WritesRow) => r.local.p50Ms },
  { key: 'local p99', color: '#3182bd', get: (r: WritesRow) => r.local.p99Ms },
  { key: 'HA p50', color: '#fdae6b', get: (r: WritesRow) => r.mirrored.p50Ms },
  { key: 'HA p99', color: '#e6550d', get: (r: WritesRow) => r.mirrored.p99Ms },
] as const;

export function latencySvg(rows: readonly WritesRow[], subtitle: string): string {
  const W = 780;
  const H = 420;
  const M = { top: 64, right: 200, bottom: 56, left: 60 };
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const maxValue = Math.max(...rows.flatMap((r) => [...BARS.map((b) => b.get(r)), r.goal.allowedP50Ms]));
  const step = niceStep(maxValue / 5);
  const top = Math.ceil(maxValue / step) * step;
  const y = (v: number): number => M.top + plotH - (v / top) * plotH;
  const groupW = plotW / rows.length;
  const barW = Math.min(44, (groupW * 0.8) / BARS.length);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${M.left}" y="24" font-size="16" font-weight="bold">Guest fsync'd append latency: unprotected vs HA-mirrored</text>`);
  out.push(`<text x="${M.left}" y="44" fill="#555">${esc(subtitle)}; one append in flight; bench/ha-writes.ts</text>`);
  for (let v = 0; v <= top + 1e-9; v += step) {
    out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${M.left - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
  }
  out.push(`<text transform="translate(16 ${M.top + plotH / 2}) rotate(-90)" text-anchor="middle">latency, ms</text>`);
  rows.forEach((r, g) => {
    const x0 = M.left + g * groupW + (groupW - barW * BARS.length) / 2;
    BARS.forEach((b, i) => {
      const v = b.get(r);
      const x = x0 + i * barW;
      out.push(`<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${(y(0) - y(v)).toFixed(1)}" fill="${b.color}"><title>${b.key}: ${v.toFixed(2)} ms</title></rect>`);
      out.push(`<text x="${(x + (barW - 4) / 2).toFixed(1)}" y="${(y(v) - 4).toFixed(1)}" text-anchor="middle" font-size="11">${v.toFixed(1)}</text>`);
    });
    // The goal for the HA p50 bar: local p50 + 1.5 × RTT.
    const gx = x0 + 2 * barW - 4;
    const gy = y(r.goal.allowedP50Ms);
    out.push(`<line x1="${gx.toFixed(1)}" x2="${(gx + barW + 4).toFixed(1)}" y1="${gy.toFixed(1)}" y2="${gy.toFixed(1)}" stroke="black" stroke-width="2" stroke-dasharray="4 3"/>`);
    const label = `+${r.addedRttMs} ms RTT added (ping ${r.pingRttMs.toFixed(2)} ms)`;
    out.push(`<text x="${(M.left + g * groupW + groupW / 2).toFixed(1)}" y="${M.top + plotH + 20}" text-anchor="middle">${esc(label)}</text>`);
    out.push(
      `<text x="${(M.left + g * groupW + groupW / 2).toFixed(1)}" y="${M.top + plotH + 36}" text-anchor="middle" fill="#555">${r.local.appendsPerSecond.toFixed(0)} vs ${r.mirrored.appendsPerSecond.toFixed(0)} appends/s; goal ${r.goal.met ? 'met' : 'not met'}</text>`,
    );
  });
  out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  const lx = M.left + plotW + 20;
  BARS.forEach((b, i) => {
    out.push(`<rect x="${lx}" y="${M.top + i * 22}" width="14" height="14" fill="${b.color}"/>`);
    out.push(`<text x="${lx + 20}" y="${M.top + i * 22 + 11}">${b.key}</text>`);
  });
  const gy = M.top + BARS.length * 22 + 7;
  out.push(`<line x1="${lx}" x2="${lx + 14}" y1="${gy}" y2="${gy}" stroke="black" stroke-width="2" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${lx + 20}" y="${gy + 4}">goal for HA p50:</text>`);
  out.push(`<text x="${lx + 20}" y="${gy + 18}">local p50 + 1.5 × RTT</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(`written ${path.relative(process.cwd(), await plotLatency())}`);
}
