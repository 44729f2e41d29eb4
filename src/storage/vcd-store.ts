/**
 * This host's virtual CDs on disk (what they are: `vcd.ts`). An upload is streamed, never held in memory:
 * into a temporary file in the VCD directory, hashed as it arrives, its ISO signature checked as soon as its
 * head is in, fsynced, its record written durably, then renamed into place, so a power loss leaves either
 * the whole image or none (a record without its image is not a VCD). Names being received are held here,
 * with their size, so two uploads can neither take one name nor be promised the same free space.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { writeFileDurably } from '../util/durable-file.js';
import { storageGroupOf, vcdDirectory, type StorageGroupConfig } from './storage-group.js';
import { ISO_HEAD_BYTES, VCD_BYTES_MIN, isoProblem, parseVcdRecord, vcdImagePath, vcdRecordPath, type Vcd } from './vcd.js';

/** An upload's bytes as they arrive, and how many were announced. */
export interface IncomingImage {
  bytes: number;
  stream: AsyncIterable<Buffer>;
}

const MIB = 1024 * 1024;

export class VcdStore {
  /** Uploads under way: name → its group and size. */
  private readonly receiving = new Map<string, { group: string; bytes: number }>();

  constructor(
    private readonly host: string,
    private readonly groups: readonly StorageGroupConfig[],
  ) {}

  /** Every VCD this host holds, by name. A directory that cannot be read is the daemon's failure (thrown). */
  async list(): Promise<Vcd[]> {
    const all = await Promise.all(this.groups.map((g) => this.inGroup(g)));
    return all.flat().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The VCD of that name here, or `UNKNOWN_VCD`. */
  async get(name: string): Promise<Vcd> {
    const found = await this.find(name);
    if (!found) throw new LockstepError('UNKNOWN_VCD', `no virtual CD named '${name}' on ${this.host} (VCDs stay on the host that received them)`, { vcd: name, host: this.host });
    return found;
  }

  async find(name: string): Promise<Vcd | null> {
    for (const g of this.groups) {
      const vcd = await this.read(g, name);
      if (vcd) return vcd;
    }
    return null;
  }

  /**
   * Receives an image as `name` into `groupName`. Refused before a byte is read: a name taken or being
   * received (`VCD_EXISTS`), a size no ISO image has (`VCD_NOT_ISO`), a group that lacks the room
   * (`STORAGE_GROUP_FULL`: `availableBytes` is what it can take, less the uploads under way into it).
   * While it streams: `VCD_NOT_ISO` when its head has no ISO 9660 signature, `VCD_UPLOAD` when the body ends
   * short. Nothing is left behind by a refusal.
   */
  async receive(name: string, groupName: string, image: IncomingImage, availableBytes: number): Promise<Vcd> {
    const group = storageGroupOf(this.groups, groupName, this.host);
    if (this.receiving.has(name)) throw exists(name, this.host, ' (its upload is under way)');
    if (image.bytes < VCD_BYTES_MIN) throw new LockstepError('VCD_NOT_ISO', `'${name}' is not an ISO image: ${image.bytes} bytes is less than an ISO 9660 image's ${VCD_BYTES_MIN}`, { vcd: name, bytes: image.bytes });
    // Counted and reserved with no await between: a second upload sees this one's size at once.
    const pendingBytes = [...this.receiving.values()].filter((r) => r.group === group.name).reduce((sum, r) => sum + r.bytes, 0);
    const room = Math.max(0, availableBytes - pendingBytes);
    if (image.bytes > room) {
      const pending = pendingBytes > 0 ? ` (${Math.ceil(pendingBytes / MIB)} MiB of it go to uploads under way)` : '';
      throw new LockstepError(
        'STORAGE_GROUP_FULL',
        `virtual CD '${name}' (${Math.ceil(image.bytes / MIB)} MiB) does not fit in storage group '${group.name}' on ${this.host}: ${Math.floor(room / MIB)} MiB available${pending}`,
        { vcd: name, storageGroup: group.name, bytes: image.bytes, availableBytes: room },
      );
    }
    this.receiving.set(name, { group: group.name, bytes: image.bytes });
    try {
      if (await this.find(name)) throw exists(name, this.host, '');
      return await this.write(group, name, image);
    } finally {
      this.receiving.delete(name);
    }
  }

  /**
   * Removes the temporary files of uploads a crash cut off (`.<name>.<random>.part`): called once at start,
   * before any upload can be under way. Returns what was removed.
   */
  async sweepLeftovers(): Promise<string[]> {
    const removed: string[] = [];
    for (const g of this.groups) {
      const dir = vcdDirectory(g);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      for (const n of names.filter((x) => x.startsWith('.') && x.endsWith('.part'))) {
        await rm(path.join(dir, n), { force: true });
        removed.push(path.join(dir, n));
      }
    }
    return removed;
  }

  /** Deletes a VCD (whether a VM has it inserted is the caller's to check first). */
  async remove(name: string): Promise<void> {
    const vcd = await this.get(name);
    const group = storageGroupOf(this.groups, vcd.storageGroup, this.host);
    // The image first: a record without its image is no VCD, an image without its record would be one unknown.
    await rm(vcdImagePath(group, name), { force: true });
    await rm(vcdRecordPath(group, name), { force: true });
  }

  private async write(group: StorageGroupConfig, name: string, image: IncomingImage): Promise<Vcd> {
    const dir = vcdDirectory(group);
    await mkdir(dir, { recursive: true });
    // A hidden name no listing takes for an image, unique so that a leftover of a crash is never reopened.
    const tmp = path.join(dir, `.${name}.${randomBytes(6).toString('hex')}.part`);
    const fh = await open(tmp, 'wx', 0o644);
    let closed = false;
    try {
      const hash = createHash('sha256');
      const head: Buffer[] = [];
      let headBytes = 0;
      let received = 0;
      let checked = false;
      // Read by hand, not `for await`: leaving that loop would destroy the request, and with it the
      // connection its refusal is to be answered on.
      const chunks = image.stream[Symbol.asyncIterator]();
      try {
        for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
          const chunk = next.value;
          received += chunk.length;
          hash.update(chunk);
          if (!checked) {
            head.push(chunk);
            headBytes += chunk.length;
            if (headBytes >= ISO_HEAD_BYTES) {
              const problem = isoProblem(Buffer.concat(head));
              if (problem) throw new LockstepError('VCD_NOT_ISO', `'${name}' is not an ISO image: ${problem}`, { vcd: name });
              checked = true;
              head.length = 0;
            }
          }
          await fh.write(chunk);
        }
      } catch (e) {
        if (e instanceof LockstepError) throw e;
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOSPC') throw new LockstepError('STORAGE_GROUP_FULL', `storage group '${group.name}' on ${this.host} ran out of space receiving virtual CD '${name}'`, { vcd: name, storageGroup: group.name });
        // The HTTP server ends the stream with an error when the client goes away mid-body.
        if (code === 'ECONNRESET' || (e as Error).message === 'aborted') throw uploadShort(name, received, image.bytes);
        throw e;
      }
      if (received !== image.bytes) throw uploadShort(name, received, image.bytes);
      await fh.sync();
      await fh.close();
      closed = true;
      const record = { name, bytes: received, sha256: hash.digest('hex'), created: new Date().toISOString() };
      await writeFileDurably(vcdRecordPath(group, name), `${JSON.stringify(record, null, 2)}\n`);
      await rename(tmp, vcdImagePath(group, name));
      const dh = await open(dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
      return { ...record, host: this.host, storageGroup: group.name, path: vcdImagePath(group, name) };
    } finally {
      if (!closed) await fh.close();
      await rm(tmp, { force: true });
    }
  }

  private async inGroup(group: StorageGroupConfig): Promise<Vcd[]> {
    let names: string[];
    try {
      names = await readdir(vcdDirectory(group));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const found = await Promise.all(names.filter((n) => n.endsWith('.json') && !n.startsWith('.')).map((n) => this.read(group, n.slice(0, -'.json'.length))));
    return found.flatMap((v) => (v ? [v] : []));
  }

  /** The VCD `name` in `group`: its record and its image, both there and agreeing; else null. */
  private async read(group: StorageGroupConfig, name: string): Promise<Vcd | null> {
    let text: string;
    try {
      text = await readFile(vcdRecordPath(group, name), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const record = parseVcdRecord(text);
    if (typeof record === 'string' || record.name !== name) return null;
    const image = vcdImagePath(group, name);
    try {
      const s = await stat(image);
      if (!s.isFile() || s.size !== record.bytes) return null;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    return { ...record, host: this.host, storageGroup: group.name, path: image };
  }
}

function exists(name: string, host: string, why: string): LockstepError {
  return new LockstepError('VCD_EXISTS', `a virtual CD named '${name}' exists already on ${host}${why}: delete it first, or choose another name`, { vcd: name });
}

function uploadShort(name: string, received: number, bytes: number): LockstepError {
  return new LockstepError('VCD_UPLOAD', `the upload of virtual CD '${name}' ended after ${received} of its ${bytes} bytes: nothing was kept`, { vcd: name, receivedBytes: received, bytes });
}
