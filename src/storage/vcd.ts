/**
 * Virtual CDs (everRun's "Virtual CDs"): ISO images an operator uploads to a host, to insert into a VM's CD
 * drive. A VCD is one host's: it lives in a storage group of the host that received it, as
 * `<group>/vcds/<name>.iso` with its record beside it (`<name>.json`: size, SHA-256, when it came), and a VM
 * that starts on a host without the same image (name and SHA-256) starts with its drive empty.
 *
 * This module is the pure part: names, limits, where the files are, the ISO 9660 signature, the record's
 * shape. The files themselves are `vcd-store.ts`'s.
 */
import path from 'node:path';
import { vcdDirectory, type StorageGroupConfig } from './storage-group.js';

/** Lowercase, as every other name of the API, with dots for versions (`debian-12.5-netinst`). */
export const VCD_NAME_PATTERN = '^[a-z][a-z0-9._-]{0,63}$';
export const VCD_NAME = new RegExp(VCD_NAME_PATTERN);

/** A dual-layer DVD is 8.5 GB; twice that leaves room, and still bounds what one upload can take from a group. */
export const VCD_BYTES_MAX = 16 * 1024 ** 3;

/** ISO 9660 sectors are 2 KiB; the first 16 are the system area, the primary volume descriptor is the 17th. */
const SECTOR_BYTES = 2048;
const DESCRIPTOR_OFFSET = 16 * SECTOR_BYTES;
/** The standard identifier `CD001` follows the descriptor's type byte. */
const SIGNATURE = Buffer.from('CD001', 'ascii');

/** The least an ISO image can be: its system area and one whole volume descriptor. */
export const VCD_BYTES_MIN = DESCRIPTOR_OFFSET + SECTOR_BYTES;

/** How much of an upload's beginning `isoProblem` needs. */
export const ISO_HEAD_BYTES = DESCRIPTOR_OFFSET + 1 + SIGNATURE.length;

/**
 * Why `head` (an image's first `ISO_HEAD_BYTES` at least) is not the start of an ISO 9660 image; null when
 * it is. A disk image or a zip inserted as a CD is an operator's mistake the guest would only show as an
 * unreadable disc, so it is refused at upload, before the rest of it is stored.
 */
export function isoProblem(head: Buffer): string | null {
  if (head.length < ISO_HEAD_BYTES) return `it is ${head.length} bytes long, shorter than an ISO 9660 volume descriptor`;
  const found = head.subarray(DESCRIPTOR_OFFSET + 1, ISO_HEAD_BYTES);
  if (found.equals(SIGNATURE)) return null;
  return `it has no ISO 9660 signature (CD001 at byte ${DESCRIPTOR_OFFSET + 1}; found ${JSON.stringify(found.toString('latin1'))}): it is not a CD image`;
}

/** A VCD as this host holds it. */
export interface Vcd {
  name: string;
  /** The host that holds it (VCDs are not copied to the peer). */
  host: string;
  storageGroup: string;
  bytes: number;
  /** Of the image as received, hex. */
  sha256: string;
  /** When its upload completed (ISO 8601). */
  created: string;
  path: string;
}

/** What the record beside an image holds: what cannot be read back from the image cheaply. */
export interface VcdRecord {
  name: string;
  bytes: number;
  sha256: string;
  created: string;
}

export function vcdImagePath(group: StorageGroupConfig, name: string): string {
  return path.join(vcdDirectory(group), `${name}.iso`);
}

export function vcdRecordPath(group: StorageGroupConfig, name: string): string {
  return path.join(vcdDirectory(group), `${name}.json`);
}

/** A record file's content, or why it is not one (a hand-made or half-written file). */
export function parseVcdRecord(text: string): VcdRecord | string {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof o !== 'object' || o === null) return 'not an object';
  const r = o as Record<string, unknown>;
  if (typeof r['name'] !== 'string' || !VCD_NAME.test(r['name'])) return 'no valid name';
  if (typeof r['bytes'] !== 'number' || !Number.isSafeInteger(r['bytes']) || r['bytes'] < 0) return 'no valid size';
  if (typeof r['sha256'] !== 'string' || !/^[0-9a-f]{64}$/.test(r['sha256'])) return 'no valid sha256';
  if (typeof r['created'] !== 'string' || Number.isNaN(Date.parse(r['created']))) return 'no valid creation time';
  return { name: r['name'], bytes: r['bytes'], sha256: r['sha256'], created: r['created'] };
}
