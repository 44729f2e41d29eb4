/**
 * A VM with two NICs on a real kernel and a real QEMU, brought up as the VM runner does (src/daemon/vm-nics.ts),
 * inside a network namespace with a business bridge: a tap per NIC on the bridge and up, a virtio-net device
 * per NIC with its MAC, in the definition's order; the lab guest configures both addresses (the second
 * found by its MAC) and each answers from its own NIC; with an FT output gate attached to each NIC at run
 * time, an answer waits in its own NIC's gate until that gate releases it; no tap is left once they are
 * removed after QEMU's exit.
 *
 * Needs root (namespaces, taps); skipped otherwise. Everything it creates is named after this process.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureGuestImage, guestKernelCmdline } from '../../src/lab/guest-image.js';
import { deleteNamespace, ensureAddress, ensureBridge, ensureNamespace, setLinkUp } from '../../src/lab/netns.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { inNetns, run, runIn } from '../../src/util/exec.js';
import { Cleanup, tempDir } from '../qemu/helpers.js';

const isRoot = process.getuid?.() === 0;
const NS = `lsnic-${process.pid}`;
const BRIDGE = 'brnic';
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'vm-nics-node.js');

const cleanup = new Cleanup();
after(() => cleanup.run());

test('two NICs: two taps on the business bridge, two virtio-net devices with their MACs in order, the guest answers on both from each NIC, each NIC behind its own gate; the taps go with the QEMU', { skip: !isRoot && 'needs root (namespaces, taps)' }, async () => {
  const image = await ensureGuestImage();
  const dir = await tempDir(cleanup, 'lockstep-vm-nics-');
  const disk = path.join(dir, 'data.qcow2');
  await createQcow2(disk, 64);
  await ensureNamespace(NS);
  cleanup.add(() => deleteNamespace(NS));
  await ensureBridge(NS, BRIDGE);
  await ensureAddress(NS, BRIDGE, '10.10.3.1/24');
  await setLinkUp(NS, BRIDGE, true);
  const nics = [
    { mac: '52:54:00:4c:5e:01', address: '10.10.3.80' },
    { mac: '52:54:00:4c:5e:02', address: '10.10.3.81' },
  ];
  const cmdline = guestKernelCmdline({ ip: '10.10.3.80/24', hostname: 'duo', moreNics: [{ mac: nics[1]!.mac, ip: '10.10.3.81/24' }] });
  const args = { vm: 'duo', nics, bridge: BRIDGE, runRoot: path.join(dir, 'run'), guest: { kernel: image.kernel, initrd: image.initrd, cmdline, disk } };
  const [cmd, argv] = inNetns(NS, process.execPath, [FIXTURE, JSON.stringify(args)]);
  const shown = JSON.parse((await run(cmd, argv, { timeoutMs: 180_000 })).stdout) as {
    taps: { name: string; master: string | null; up: boolean }[];
    devices: { id: string; mac: string; ethernet: boolean }[];
    pings: boolean[];
    neighbours: (string | null)[];
    serial: string;
    gated: { answeredWhileHeld: boolean; answered: boolean; otherLetOut: number }[];
    left: string[];
  };
  assert.deepEqual(shown.taps, [
    { name: 't-duo', master: BRIDGE, up: true },
    { name: 't-duo.1', master: BRIDGE, up: true },
  ]);
  assert.deepEqual(shown.devices, [
    { id: 'net0', mac: nics[0]!.mac, ethernet: true },
    { id: 'net1', mac: nics[1]!.mac, ethernet: true },
  ]);
  assert.match(shown.serial, /lockstep-guest: duo eth\d 10\.10\.3\.81\/24/, 'the guest configured its second NIC, found by its MAC');
  assert.deepEqual(shown.pings, [true, true], 'both addresses answer');
  assert.deepEqual(shown.neighbours, nics.map((n) => n.mac), 'each address answered from its own NIC');
  for (const [i, g] of shown.gated.entries()) {
    assert.deepEqual([g.answeredWhileHeld, g.answered], [false, true], `NIC ${i}'s answer left only at its own gate's release`);
    assert.equal(g.otherLetOut, 0, `the other NIC's gate let nothing out meanwhile`);
  }
  assert.deepEqual(shown.left, [], 'no tap left after the QEMU exited');
  const { stdout } = await runIn(NS, 'ip', ['-o', 'link', 'show']);
  assert.doesNotMatch(stdout, /t-duo/, 'nothing of the VM is left in the namespace');
});
