/**
 * FT admission on the backup (docs/ft.md, "Admission"): an FT VM's backup keeps the VM's checkpoint image,
 * as large as its RAM, on the FT tmpfs (`ft.memoryDir`, `checkpoint-store.ts`), beside the RAM files of the
 * guests this host runs. The image is sparse until the first full checkpoint fills it, so a tmpfs without
 * room does not fail when the run starts: it fails the epoch that fills it, and every run after. So the
 * backup admits the FT VMs it backs against what the tmpfs has left, and tells its decision core which ones
 * do not fit (`ft-room`): the core runs those as HA, on both hosts, with an alert, until they fit.
 *
 * The account is redone at each health round. An FT run served here already holds its store: its pages are
 * used and its holes promised, so it costs nothing more and is never pushed out by a newcomer. The others
 * are admitted in name order while room lasts, so that the same VMs stay admitted from one round to the next.
 */
import type { VmName } from '../core/types.js';
import { ramRoom, type RamRoom } from '../qemu/ram-room.js';
import { describeError } from '../util/errors.js';

export interface FtBackedVm {
  vm: VmName;
  /** The checkpoint image's size: the guest's RAM. */
  ramBytes: number;
  /** An FT run of this VM is served here now, its store on the tmpfs. */
  served: boolean;
}

/** The VMs that do not fit in `room`, in name order. */
export function ftRoomShortfall(room: RamRoom, vms: readonly FtBackedVm[]): VmName[] {
  let left = room.freeBytes - room.promisedBytes;
  const short: VmName[] = [];
  for (const v of [...vms].filter((v) => !v.served).sort((a, b) => (a.vm < b.vm ? -1 : 1))) {
    if (v.ramBytes <= left) left -= v.ramBytes;
    else short.push(v.vm);
  }
  return short;
}

export interface FtRoomWatchOptions {
  memoryDir: string;
  /** The peer's FT VMs this host backs now. */
  backed: () => FtBackedVm[];
  /** The list changed (the core's `ft-room` input). */
  report: (short: VmName[]) => void;
  log: (line: string) => void;
}

export class FtRoomWatch {
  /** What the core was told last: nothing is short when it starts. */
  private reported: VmName[] = [];
  private checking = false;
  private lastFailure: string | null = null;

  constructor(private readonly opts: FtRoomWatchOptions) {}

  /** Accounts the room once; a round still going makes this one a no-op. */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const vms = this.opts.backed();
      let room: RamRoom;
      try {
        // No FT VM backed here: nothing to account (the directory may not even exist before a first FT VM).
        room = vms.length === 0 ? { freeBytes: 0, promisedBytes: 0 } : await ramRoom(this.opts.memoryDir);
      } catch (e) {
        // The last account stands: a tmpfs that cannot be read now says nothing new about its room.
        const why = describeError(e);
        if (why !== this.lastFailure) this.opts.log(`cannot account the FT memory room in ${this.opts.memoryDir}: ${why}`);
        this.lastFailure = why;
        return;
      }
      this.lastFailure = null;
      const short = ftRoomShortfall(room, vms);
      if (short.length === this.reported.length && short.every((vm, i) => vm === this.reported[i])) return;
      const mib = (bytes: number): number => Math.floor(bytes / (1024 * 1024));
      this.opts.log(
        short.length === 0
          ? `FT memory room in ${this.opts.memoryDir} for every FT VM backed here`
          : `no room in ${this.opts.memoryDir} for the checkpoint image of ${short.join(', ')} (${mib(room.freeBytes)} MiB free, ${mib(room.promisedBytes)} MiB promised to files there): served as HA until there is`,
      );
      this.reported = short;
      this.opts.report(short);
    } finally {
      this.checking = false;
    }
  }
}
