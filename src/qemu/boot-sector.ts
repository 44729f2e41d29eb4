/** BIOS boot sectors built from machine code: tiny guests for probes and tests, no toolchain at run time. */
import { assert } from '../util/assert.js';

export const BOOT_SECTOR_BYTES = 512;

/** Pads `code` (loaded by the BIOS at 0000:7c00, run in real mode) to a sector ending in the 0x55 0xaa
 * signature SeaBIOS looks for. */
export function bootSector(code: Uint8Array): Buffer {
  assert(code.length <= BOOT_SECTOR_BYTES - 2, `boot sector code is ${code.length} bytes; at most 510 fit`);
  const sector = Buffer.alloc(BOOT_SECTOR_BYTES);
  sector.set(code, 0);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}
