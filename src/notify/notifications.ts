/**
 * lockstepd's notifications as one running thing: none configured, configured but not running (the outbox
 * could not be opened: that costs the notifications only, never the VMs), or a running notifier; and the
 * way from one to another while lockstepd runs, when a preference setter gives a new `notifications`
 * section (src/daemon/live-preferences.ts). A running notifier is reconfigured in place, so that its outbox,
 * its waiting deliveries and its "send test" outcomes carry on; one is started or stopped when the section
 * appears or goes.
 */
import { describeError, isLockstepError } from '../util/errors.js';
import { Notifier, type NotifierOptions } from './notifier.js';
import type { NotificationsState } from './receiver-view.js';
import type { NotificationsConfig } from './receivers.js';

/** A notifier's options but its config, which is the section's. */
export type NotificationsOptions = Omit<NotifierOptions, 'config'>;

export class Notifications {
  private current: NotificationsState<Notifier>;

  constructor(
    private readonly opts: NotificationsOptions,
    config: NotificationsConfig | null,
  ) {
    this.current = this.started(config);
  }

  state(): NotificationsState<Notifier> {
    return this.current;
  }

  /** The running notifier; null when notifications are off or did not start. */
  notifier(): Notifier | null {
    return this.current.state === 'on' ? this.current.notifier : null;
  }

  /** Deliveries waiting to go out (the metrics); null when no notifier runs. */
  pending(): number | null {
    return this.notifier()?.pending() ?? null;
  }

  /** New alerts may be in the log. */
  nudge(): void {
    this.notifier()?.nudge();
  }

  /** The section as it is now, applied: the notifier reconfigured, started (also after a failed start) or stopped. */
  async reconfigure(config: NotificationsConfig | null): Promise<void> {
    const running = this.notifier();
    if (running !== null && config !== null) {
      running.reconfigure(config);
      this.current = { state: 'on', config, notifier: running };
      return;
    }
    if (running !== null) {
      // Its waiting deliveries stay in the outbox, for a notifier started again later (or at the next start).
      await running.stop();
      this.opts.log('notifications off: the config has no notifications section any more');
    }
    this.current = this.started(config);
  }

  async stop(): Promise<void> {
    await this.notifier()?.stop();
  }

  private started(config: NotificationsConfig | null): NotificationsState<Notifier> {
    if (config === null) return { state: 'off' };
    try {
      const notifier = new Notifier({ ...this.opts, config });
      notifier.start();
      this.opts.log(`notifications to ${notifier.receivers().map((r) => r.name).join(', ')}`);
      return { state: 'on', config, notifier };
    } catch (e) {
      const error = `${isLockstepError(e) ? `${e.code}: ` : ''}${describeError(e)}`;
      this.opts.log(`notifications disabled: ${error}`);
      return { state: 'failed', config, error };
    }
  }
}
