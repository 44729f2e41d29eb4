/** Undo actions for tests, run last-first: every test cleans up what it starts, even when it fails. */
export class Cleanup {
  private actions: (() => Promise<unknown> | unknown)[] = [];
  add(action: () => Promise<unknown> | unknown): void {
    this.actions.push(action);
  }
  async run(): Promise<void> {
    const actions = this.actions.reverse();
    this.actions = [];
    for (const a of actions) {
      try {
        await a();
      } catch {
        /* best effort: the next action must still run */
      }
    }
  }
}
