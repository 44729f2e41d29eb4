/**
 * The FT tests' guest: a boot sector that keeps a known pattern in RAM, after QEMU's own migration test
 * bootblock. Assembled from `pattern-guest.S` (next to this file, with the reasons); a test rebuilds it with
 * binutils and compares. One pass adds one to the first byte of every 4 KiB page of [start, end) in address
 * order and prints 'B' on the serial port; so RAM at a paused instant holds k+1 before the page being
 * incremented and k from it on (mod 256). `checkPattern` checks exactly that shape, as QEMU's test does.
 */
import { bootSector } from '../../src/qemu/boot-sector.js';

const PAGE_BYTES = 4096;

// One line per instruction (offsets from 0x7c00), as `objdump -m i8086 / -m i386` shows them.
const CODE_HEX = [
  'fa', // 00 cli
  '31c0', // 01 xor %ax,%ax
  '8ed8', // 03 mov %ax,%ds
  'e492', // 05 in $0x92,%al         (fast A20 gate)
  '0c02', // 07 or $2,%al
  'e692', // 09 out %al,$0x92
  '0f0116687c', // 0b lgdt 0x7c68
  '0f20c0', // 10 mov %cr0,%eax
  '6683c801', // 13 or $1,%eax
  '0f22c0', // 17 mov %eax,%cr0          (protected mode)
  'ea1f7c0800', // 1a ljmp $0x08,$0x7c1f
  '66b81000', // 1f mov $0x10,%ax         (32-bit code from here)
  '8ed8', // 23 mov %ax,%ds
  '8ec0', // 25 mov %ax,%es
  '8ed0', // 27 mov %ax,%ss
  '66baf803', // 29 mov $0x3f8,%dx        (COM1)
  'b041', // 2d mov $'A',%al
  'ee', // 2f out %al,(%dx)
  'a16e7c0000', // 30 pass: mov (start),%eax
  'fe00', // 35 1: incb (%eax)
  '0500100000', // 37 add $4096,%eax
  '3b05727c0000', // 3c cmp (end),%eax
  '72f1', // 42 jb 1b
  'b042', // 44 mov $'B',%al
  'ee', // 46 out %al,(%dx)
  'ebe7', // 47 jmp pass
  '8db42600000000', // 49 padding to 8 bytes (as's multi-byte nop)
  '0000000000000000', // 50 gdt: null descriptor
  'ffff0000009acf00', // 58 0x08: code, base 0, limit 4 GiB, 32-bit
  'ffff00000092cf00', // 60 0x10: data, base 0, limit 4 GiB
  '1700507c0000', // 68 gdtr: limit 23, base 0x7c50
  '00001000', // 6e start (little-endian, patched)
  '00009000', // 72 end (patched)
].join('');

const START_OFFSET = 0x6e;
const END_OFFSET = 0x72;

export interface PatternRegion {
  /** First byte of the region, page aligned, at or above 1 MiB (below is the BIOS's and this code's). */
  startBytes: number;
  /** End of the region (exclusive), page aligned, inside guest RAM. */
  endBytes: number;
}

/** The bytes `pattern-guest.S` assembles to, with its default region (1 MiB to 9 MiB). */
export function patternGuestCode(): Buffer {
  return Buffer.from(CODE_HEX, 'hex');
}

export function patternGuestBootSector(region: PatternRegion): Buffer {
  if (region.startBytes < 0x100000 || region.startBytes % PAGE_BYTES !== 0 || region.endBytes % PAGE_BYTES !== 0 || region.endBytes <= region.startBytes) {
    throw new Error(`pattern region [${region.startBytes}, ${region.endBytes}) must be page aligned, above 1 MiB and not empty`);
  }
  const code = patternGuestCode();
  code.writeUInt32LE(region.startBytes, START_OFFSET);
  code.writeUInt32LE(region.endBytes, END_OFFSET);
  return bootSector(code);
}

export interface PatternCheck {
  /** No page breaks the shape. */
  consistent: boolean;
  /** The counter of the region's first page. */
  first: number;
  /** Where the pass was (the page whose counter is one less than the page before), or null if none. */
  edgePage: number | null;
  /** Pages whose counter fits neither side of the edge. */
  bad: number[];
}

/**
 * Checks a RAM image (guest physical address = file offset, true for a pc guest below 3.5 GiB) the way
 * QEMU's migration test does: every page's counter equals the previous page's, except at one edge where it
 * is one less (mod 256).
 */
export function checkPattern(ram: Buffer, region: PatternRegion): PatternCheck {
  const first = ram[region.startBytes]!;
  let last = first;
  let edgePage: number | null = null;
  const bad: number[] = [];
  for (let a = region.startBytes + PAGE_BYTES; a < region.endBytes; a += PAGE_BYTES) {
    const b = ram[a]!;
    if (b === last) continue;
    if ((b + 1) % 256 === last && edgePage === null) {
      edgePage = a / PAGE_BYTES;
      last = b;
    } else if (bad.length < 16) {
      bad.push(a / PAGE_BYTES);
    }
  }
  return { consistent: bad.length === 0, first, edgePage, bad };
}
