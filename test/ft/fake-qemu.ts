/**
 * The test as QEMU on an output gate's two sockets: it writes records as filter-redirector does (`fout`'s
 * outdev) and collects what the gate releases (`fin`'s indev), over the gate's real unix sockets.
 */
import net from 'node:net';
import { FrameReader } from '../../src/ft/output-frames.js';
import type { OutputGate } from '../../src/ft/output-commit.js';
import type { Cleanup } from '../support/cleanup.js';

/** A record as QEMU writes it: BE length, BE vnet header length, a 12-byte vnet header, an Ethernet frame
 * whose payload starts with `tag` (so frames can be told apart after the trip). */
export function record(tag: string, payloadBytes = 50, vnetHdrLen = 12): Buffer {
  const frame = Buffer.alloc(vnetHdrLen + 14 + payloadBytes);
  frame.write(tag, vnetHdrLen + 14);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(frame.length, 0);
  head.writeUInt32BE(vnetHdrLen, 4);
  return Buffer.concat([head, frame]);
}

export const tagOf = (r: Buffer): string => r.subarray(8 + r.readUInt32BE(4) + 14).toString('latin1').replace(/\0+$/, '');

export interface FakeQemu {
  /** QEMU's fout end: the test writes guest records here. */
  guest: net.Socket;
  /** QEMU's fin end: what the gate released arrives here. */
  net: net.Socket;
  received: Buffer[];
}

export async function fakeQemu(cleanup: Cleanup, gate: OutputGate): Promise<FakeQemu> {
  const connect = (p: string): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const s = net.connect(p, () => resolve(s));
      s.once('error', reject);
    });
  const guest = await connect(gate.sockets.fromGuest);
  const netSock = await connect(gate.sockets.toNetwork);
  for (const s of [guest, netSock]) {
    s.on('error', () => undefined);
    cleanup.add(() => s.destroy());
  }
  const received: Buffer[] = [];
  const reader = new FrameReader('fake-fin');
  netSock.on('data', (b: Buffer) => received.push(...reader.push(b)));
  await gate.waitForQemu(2000);
  return { guest, net: netSock, received };
}
