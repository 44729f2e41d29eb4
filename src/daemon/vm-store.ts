/**
 * The host's durable record of its VM definitions: one JSON file per VM under `<dataDir>/vms/`, written
 * durably so a power loss leaves either the old or the new definition.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeFileDurably } from '../util/durable-file.js';
import { parseVmDefinition, type VmDefinition } from './vm-definition.js';

export class VmStore {
  constructor(private readonly dir: string) {}

  async list(): Promise<VmDefinition[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const defs: VmDefinition[] = [];
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      defs.push(parseVmDefinition(JSON.parse(await readFile(path.join(this.dir, name), 'utf8'))));
    }
    return defs;
  }

  async save(def: VmDefinition): Promise<void> {
    await writeFileDurably(this.file(def.name), JSON.stringify(def, null, 2) + '\n');
  }

  async remove(name: string): Promise<void> {
    await rm(this.file(name), { force: true });
  }

  private file(name: string): string {
    return path.join(this.dir, `${name}.json`);
  }
}
