/**
 * FT output commit on this machine: what holding a guest's output until its epoch is released costs.
 *
 * 1. A real guest (the lab image, TCG) whose NIC's output goes through the gate (`src/ft/output-commit.ts`),
 *    a tap in a network namespace, a client inside the namespace (`ft-output-client.ts`). Modes: the NIC
 *    detached from the gate (direct), the gate in pass-through, and the gate holding with epochs of 10, 20,
 *    50 and 100 ms — a timer stands in for the FT engine: every epoch it releases the previous epoch and
 *    seals the current one (so a frame waits one to two epochs, as it would for a checkpoint acknowledged
 *    within the next epoch). The guest is not paused: checkpoint costs are the checkpoint bench's.
 *    Figures: a request's round trip on an open connection, a connect + request, and the reply bytes/s of
 *    `get`s pipelined 8 deep (bounded by the guest's CPU under TCG, and by the pipeline when held).
 * 2. The gate alone, with the bench as a fake QEMU on both sockets: records of 64 KiB (TSO) and 1514 bytes
 *    pushed as fast as the gate takes them, through a plain unix socket (baseline), the gate in
 *    pass-through, and the gate holding with 20 ms epochs. CPU per MB is the process's CPU (fake QEMU's
 *    writer and reader included) minus the baseline's.
 *
 * Needs root (namespace, tap).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { attachOutputGate, detachOutputGate, OutputGate, outputGateSockets } from '../src/ft/output-commit.js';
import { FrameReader } from '../src/ft/output-frames.js';
import { GUEST_READY_MARKER, RECORD_SERVICE_PORT, ensureGuestImage, guestKernelCmdline } from '../src/lab/guest-image.js';
import { deleteNamespace, ensureNamespace, setLinkUp } from '../src/lab/netns.js';
import { VmSupervisor } from '../src/qemu/supervisor.js';
import { createQcow2 } from '../src/storage/disk-image.js';
import { inNetns, runIn } from '../src/util/exec.js';
import { sleep } from '../src/util/proc.js';
import type { BenchResult } from './result.js';

const NS = `lsftbench-${process.pid}`;
const TAP = 'tftb0';
const GUEST_IP = '10.10.3.50';
const HOST_IP = '10.10.3.1';
const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ft-output-client.js');
const EPOCHS_MS = [10, 20, 50, 100];
const LATENCY_COUNT = 50;
const CONNECT_COUNT = 10;
const BULK_COUNT = 2_000;
const BOOT_TIMEOUT_MS = 90_000;
const SYNTHETIC = [
  { frameBytes: 65_536, totalMB: 200 },
  { frameBytes: 1_514, totalMB: 40 },
];

interface GuestRow {
  mode: string;
  latencyMs: number[];
  connectMs: number[];
  bulkMBps: number;
  holdMsMean: number | null;
}

interface SyntheticRow {
  frameBytes: number;
  mode: string;
  mbPerS: number;
  cpuMsPerMB: number;
}

export async function run(): Promise<BenchResult> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'lockstep-bench-ft-out-'));
  try {
    const guest = await measureGuest(work);
    const synthetic: SyntheticRow[] = [];
    for (const s of SYNTHETIC) synthetic.push(...(await measureSynthetic(work, s.frameBytes, s.totalMB)));
    return summary(guest, synthetic);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function measureGuest(work: string): Promise<GuestRow[]> {
  const image = await ensureGuestImage();
  await ensureNamespace(NS);
  const runDir = path.join(work, 'run', 'ftb');
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  const gate = await OutputGate.listen({ sockets: outputGateSockets(runDir, 'net0'), name: 'ftb/net0', protected: false });
  const sup = new VmSupervisor({ runRoot: path.join(work, 'run') });
  try {
    const disk = path.join(work, 'data.qcow2');
    await createQcow2(disk, 64);
    const vm = await sup.start(
      {
        name: 'ftb',
        vcpus: 1,
        memoryMiB: 128,
        accel: 'tcg',
        boot: { kernel: image.kernel, initrd: image.initrd, cmdline: guestKernelCmdline({ ip: `${GUEST_IP}/24`, gateway: HOST_IP, hostname: 'ftb' }) },
        disks: [{ id: 'vda', path: disk, format: 'qcow2' }],
        nics: [{ id: 'net0', mac: '52:54:00:4c:53:20', tap: TAP, outputGate: gate.sockets }],
      },
      { netns: NS, runDir },
    );
    await runIn(NS, 'ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', TAP]);
    await setLinkUp(NS, TAP, true);
    const deadline = Date.now() + BOOT_TIMEOUT_MS;
    while (!(await readFile(vm.paths.serialLog, 'utf8').catch(() => '')).includes(GUEST_READY_MARKER)) {
      if (Date.now() > deadline) throw new Error('the bench guest did not boot');
      await sleep(100);
    }
    // One record of the largest size, for the bulk `get`s.
    await clientAppend();

    const rows: GuestRow[] = [];
    rows.push(await measureMode('gate, pass-through', gate));
    await detachOutputGate(vm.qmp, 'net0', gate);
    rows.push(await measureMode('direct (no gate)', gate));
    gate.protect();
    await attachOutputGate(vm.qmp, 'net0', gate);
    for (const epochMs of EPOCHS_MS) {
      let sealed = gate.seal();
      const timer = setInterval(() => {
        gate.release(sealed);
        sealed = gate.seal();
      }, epochMs);
      try {
        rows.push(await measureMode(`gate, ${epochMs} ms epochs`, gate));
      } finally {
        clearInterval(timer);
        gate.release(gate.seal());
      }
    }
    return rows;
  } finally {
    await sup.stopAll({ gracefulMs: 0, quitMs: 1000 }).catch(() => undefined);
    await gate.close();
    await deleteNamespace(NS);
  }
}

async function clientAppend(): Promise<void> {
  // The bench client only reads; the record to `get` is appended with the lab's record client.
  const [cmd, args] = inNetns(NS, process.execPath, [path.join(path.dirname(CLIENT), '..', 'src', 'lab', 'record-client.js'), GUEST_IP, String(RECORD_SERVICE_PORT), `append ${'x'.repeat(400)}`]);
  await runCommand(cmd, args);
}

async function measureMode(mode: string, gate: OutputGate): Promise<GuestRow> {
  const before = gate.stats;
  const latency = (await client('latency', LATENCY_COUNT)) as { ms: number[] };
  const connect = (await client('connect', CONNECT_COUNT)) as { ms: number[] };
  const bulk = (await client('bulk', BULK_COUNT)) as { mbPerS: number };
  const after = gate.stats;
  const released = after.framesReleased - before.framesReleased;
  return {
    mode,
    latencyMs: latency.ms,
    connectMs: connect.ms,
    bulkMBps: bulk.mbPerS,
    holdMsMean: released > 0 ? (after.holdMsTotal - before.holdMsTotal) / released : null,
  };
}

async function client(what: string, count: number): Promise<unknown> {
  const [cmd, args] = inNetns(NS, process.execPath, [CLIENT, GUEST_IP, String(RECORD_SERVICE_PORT), what, String(count)]);
  return JSON.parse(await runCommand(cmd, args));
}

function runCommand(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${args.join(' ')} exited ${code}: ${err}`))));
  });
}

/* ------------------------------------------------------------------ the gate alone */

async function measureSynthetic(work: string, frameBytes: number, totalMB: number): Promise<SyntheticRow[]> {
  const record = Buffer.alloc(8 + frameBytes);
  record.writeUInt32BE(frameBytes, 0);
  record.writeUInt32BE(12, 4);
  const count = Math.ceil((totalMB * 1e6) / record.length);
  const rows: SyntheticRow[] = [];
  const baseline = await pushThrough(work, record, count, null);
  rows.push({ frameBytes, mode: 'unix socket, no gate', mbPerS: baseline.mbPerS, cpuMsPerMB: baseline.cpuMsPerMB });
  for (const epochMs of [null, 20] as const) {
    const gateDir = await mkdtemp(path.join(work, 'gate-'));
    const gate = await OutputGate.listen({
      sockets: outputGateSockets(gateDir, 'net0'),
      name: 'bench/net0',
      protected: epochMs !== null,
      limits: { heldBytesSoftMax: 256 * 1024 * 1024, heldBytesMax: 512 * 1024 * 1024, heldFramesMax: 1_000_000 },
    });
    let timer: NodeJS.Timeout | undefined;
    if (epochMs !== null) {
      let sealed = gate.seal();
      timer = setInterval(() => {
        gate.release(sealed);
        sealed = gate.seal();
      }, epochMs);
    }
    try {
      const r = await pushThrough(work, record, count, gate);
      rows.push({ frameBytes, mode: epochMs === null ? 'gate, pass-through' : `gate, ${epochMs} ms epochs`, mbPerS: r.mbPerS, cpuMsPerMB: r.cpuMsPerMB - baseline.cpuMsPerMB });
    } finally {
      clearInterval(timer);
      await gate.close();
    }
  }
  return rows;
}

/** Writes `count` records into the gate's fromGuest socket (or a plain unix socket) as a blocking QEMU
 * would, and reads them back from toNetwork. */
async function pushThrough(work: string, record: Buffer, count: number, gate: OutputGate | null): Promise<{ mbPerS: number; cpuMsPerMB: number }> {
  let sinkServer: net.Server | null = null;
  let toWrite: string;
  let toRead: string;
  if (gate === null) {
    toWrite = path.join(work, `plain-${process.pid}.sock`);
    toRead = toWrite;
    await rm(toWrite, { force: true });
  } else {
    toWrite = gate.sockets.fromGuest;
    toRead = gate.sockets.toNetwork;
  }
  let received = 0;
  const done = new Promise<void>((resolve) => {
    const onData = (reader: FrameReader) => (b: Buffer) => {
      received += reader.push(b).length;
      if (received >= count) resolve();
    };
    if (gate === null) {
      sinkServer = net.createServer((s) => s.on('data', onData(new FrameReader('sink'))));
      sinkServer.listen(toRead);
    } else {
      const s = net.connect(toRead);
      s.on('data', onData(new FrameReader('sink')));
    }
  });
  if (sinkServer !== null) await new Promise((r) => (sinkServer as net.Server).once('listening', r));
  const writer = await new Promise<net.Socket>((resolve) => {
    const s = net.connect(toWrite, () => resolve(s));
  });
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    if (!writer.write(record)) await new Promise((r) => writer.once('drain', r));
  }
  await done;
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  writer.destroy();
  if (sinkServer !== null) (sinkServer as net.Server).close();
  const mb = (count * record.length) / 1e6;
  return { mbPerS: mb / seconds, cpuMsPerMB: (cpu.user + cpu.system) / 1000 / mb };
}

/* ------------------------------------------------------------------ table */

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function summary(guest: GuestRow[], synthetic: SyntheticRow[]): BenchResult {
  const rows = [
    ...guest.map((g) => [
      'guest',
      g.mode,
      median(g.latencyMs).toFixed(1),
      median(g.connectMs).toFixed(1),
      g.holdMsMean === null ? '-' : g.holdMsMean.toFixed(1),
      g.bulkMBps.toFixed(2),
      '-',
    ]),
    ...synthetic.map((s) => [`gate alone, ${s.frameBytes}-byte frames`, s.mode, '-', '-', '-', s.mbPerS.toFixed(0), s.mode.startsWith('unix') ? '-' : s.cpuMsPerMB.toFixed(2)]),
  ];
  return {
    name: 'ft-output-commit',
    title: 'FT output commit: the cost of holding a guest’s output per epoch',
    columns: ['setup', 'mode', 'request ms (median)', 'connect+request ms', 'held ms (mean)', 'MB/s', 'gate CPU ms/MB'],
    rows,
    notes: [
      `guest: ${LATENCY_COUNT} sequential 'last' requests on an open connection, ${CONNECT_COUNT} connects + 'last', ${BULK_COUNT} pipelined (8 deep) 'get' of a 400-byte record (MB/s of replies: the TCG guest's CPU bounds it)`,
      'epochs: a timer releases the previous epoch and seals the current one every epoch (a frame waits 1-2 epochs); the guest is not paused',
      'gate alone: the bench is a fake QEMU on both sockets; CPU includes nothing but the gate (the baseline\'s writer and reader CPU subtracted)',
    ],
    data: { guest, synthetic },
  };
}
