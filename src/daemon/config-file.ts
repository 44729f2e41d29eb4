/**
 * lockstepd's config file as the preference setters rewrite it: lockstepd.json stays the source of truth,
 * so a change is written there first, whole or not at all (temporary file, fsync, rename, fsync the folder:
 * util/durable-file.ts), and only then applied (live-preferences.ts). One section is replaced; the rest is
 * what the file holds, written back as it parses (the JSON is re-indented; comments are not JSON anyway).
 *
 * A file someone edited by hand since lockstepd read it is not overwritten: their edit may be half done,
 * and lockstepd runs the old one. The file's digest as lockstepd last read or wrote it tells. It is a check
 * for edits made while lockstepd runs, not a lock: an edit saved in the instant between the check and the
 * rename is not seen.
 */
import { createHash } from 'node:crypto';
import { readFile, realpath, stat } from 'node:fs/promises';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { writeFileDurably } from '../util/durable-file.js';
import { parseDaemonConfig, type DaemonConfig, type LiveSection } from './config.js';

export class ConfigFile {
  private constructor(
    readonly path: string,
    /** The sha256 of the text lockstepd last read from the file or wrote to it. */
    private digest: string,
  ) {}

  /** Reads and checks the config at `file` (lockstepd's start): `INVALID_SPEC` naming the field when it is wrong. */
  static async load(file: string): Promise<{ config: DaemonConfig; file: ConfigFile }> {
    let text: string;
    let raw: unknown;
    try {
      text = await readFile(file, 'utf8');
      raw = JSON.parse(text);
    } catch (e) {
      throw new LockstepError('INVALID_SPEC', `cannot read config ${file}: ${(e as Error).message}`, { file }, { cause: e });
    }
    return { config: parseDaemonConfig(raw, file), file: new ConfigFile(file, digestOf(text)) };
  }

  /**
   * Replaces `section` with `value` (null: removes it, as if never written), checked by the config's own
   * parser as the next start would read the file; returns the config so parsed. Nothing is written when the
   * file changed on disk (`CONFIG_CHANGED`), the value is wrong (`INVALID_SPEC`, naming the field as
   * `section.…`), or the write fails (`CONFIG_WRITE`: the file is then as it was). Callers serialize.
   */
  async replaceSection(section: LiveSection, value: unknown): Promise<DaemonConfig> {
    const text = await this.fileStep('read', () => readFile(this.path, 'utf8'));
    if (digestOf(text) !== this.digest) {
      throw new LockstepError(
        'CONFIG_CHANGED',
        `${this.path} was changed on disk since lockstepd read it; lockstepd does not overwrite that edit. Restart lockstepd to run the edited file (put the host in maintenance first), or undo the edit, then set the preference again`,
        { file: this.path },
      );
    }
    const raw = JSON.parse(text) as Record<string, unknown>;
    const next: Record<string, unknown> = { ...raw, [section]: value };
    if (value === null) delete next[section];
    let config: DaemonConfig;
    try {
      config = parseDaemonConfig(next, 'preferences');
    } catch (e) {
      // The field below the section, as the API's body validation names it ('name' of the owner body).
      if (isLockstepError(e, 'INVALID_SPEC')) throw new LockstepError('INVALID_SPEC', e.message, { field: fieldInSection(section, String(e.fields['key'])) });
      throw e;
    }
    const out = `${JSON.stringify(next, null, 2)}\n`;
    // Through a symlink to the file itself, with its permissions: the file holds the pairing secret.
    const target = await this.fileStep('resolve', () => realpath(this.path));
    const mode = (await this.fileStep('stat', () => stat(target))).mode & 0o7777;
    await this.fileStep('write', () => writeFileDurably(target, out, { mode }));
    this.digest = digestOf(out);
    return config;
  }

  private async fileStep<T>(step: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      throw new LockstepError('CONFIG_WRITE', `cannot ${step} ${this.path}: ${describeError(e)}; nothing was changed`, { file: this.path, step }, { cause: e });
    }
  }
}

/** `owner.name` → `name`: a config key as a field of the section's body. */
export function fieldInSection(section: LiveSection, key: string): string {
  return key === section ? '' : key.startsWith(`${section}.`) ? key.slice(section.length + 1) : key;
}

function digestOf(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
