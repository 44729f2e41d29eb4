/**
 * The preferences an operator may change while lockstepd runs — the owner, the notifications, the resync
 * rate (`LIVE_SECTIONS`) — and the one way each is changed: written to this host's config file first, then
 * given to the component that holds it, with no restart of the daemon or of a VM.
 *
 * Persist first, then apply: lockstepd.json is the source of truth, so a change the file did not take (a
 * hand edit in the way, a full disk) must change nothing, and applying cannot fail in a way the file would
 * contradict — the owner is a value, the resync rate is set on the mirrors (a refused limit is set again at
 * the next progress look), and the notifications go the way a start with that file goes (an outbox that
 * cannot be opened leaves them `failed`, saying why, as a start would). Apply-then-rollback would have to
 * undo a started notifier and the mirrors' speeds, and could itself fail.
 *
 * Settings of the pair (quorum servers, SplitSite, timing) and addresses are not here: both hosts must
 * agree on them, and listeners and streams are bound to them (docs/api.md, "Preferences").
 */
import type { Notifications } from '../notify/notifications.js';
import { withKeptSecrets } from '../notify/kept-secrets.js';
import type { ResyncRate } from '../storage/resync-rate.js';
import type { DaemonConfig, LiveSection } from './config.js';
import type { ConfigFile } from './config-file.js';

export interface LivePreferencesOptions {
  /** The config as read at start. */
  config: DaemonConfig;
  file: ConfigFile;
  notifications: Notifications;
  /** Gives the VM runner a new resync rate (its running mirrors and the next ones). */
  setResyncRate(rate: ResyncRate): void;
  log(line: string): void;
}

export class LivePreferences {
  private current: DaemonConfig;
  /** Changes one after another: each reads the file the one before wrote. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: LivePreferencesOptions) {
    this.current = opts.config;
  }

  /** The config as lockstepd runs it now. */
  config(): DaemonConfig {
    return this.current;
  }

  get configFile(): string {
    return this.opts.file.path;
  }

  get notifications(): Notifications {
    return this.opts.notifications;
  }

  /** The `owner` section, as the file's (null: none). */
  setOwner(raw: unknown): Promise<DaemonConfig> {
    return this.change('owner', () => raw, () => {});
  }

  /** The `resync` section, as the file's (`{maxMiBps, busyMiBps}`, MiB/s or null; absent: the default). */
  setResync(raw: unknown): Promise<DaemonConfig> {
    return this.change('resync', () => raw, (next) => this.opts.setResyncRate(next.resync));
  }

  /** The `notifications` section, as the file's, secrets kept by `{"keep": RECEIVER}` (kept-secrets.ts); null: none. */
  setNotifications(raw: unknown): Promise<DaemonConfig> {
    return this.change(
      'notifications',
      // Kept from the config in force when this change's turn comes, not when it was asked.
      () => {
        const state = this.opts.notifications.state();
        return withKeptSecrets(raw, state.state === 'off' ? null : state.config);
      },
      (next) => this.opts.notifications.reconfigure(next.notifications),
    );
  }

  private change(section: LiveSection, valueOf: () => unknown, apply: (next: DaemonConfig) => void | Promise<void>): Promise<DaemonConfig> {
    const run = this.queue.then(async () => {
      const parsed = await this.opts.file.replaceSection(section, valueOf());
      // Only this section: the rest of the file is what lockstepd read at start and runs.
      this.current = { ...this.current, [section]: parsed[section] };
      await apply(this.current);
      this.opts.log(`preferences: ${section} written to ${this.opts.file.path} and applied`);
      return this.current;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}
