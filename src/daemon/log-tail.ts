/**
 * The daemon's most recent log lines, kept in memory for the support bundle. lockstepd writes its log to
 * stdout (the service manager or the lab keeps it where it keeps it), so the daemon itself cannot read its
 * log back; this tail is what a bundle can always include. Bounded in bytes: the oldest lines go first.
 */
export class LogTail {
  private readonly lines: string[] = [];
  private head = 0;
  private bytes = 0;

  constructor(private readonly bytesMax: number) {}

  add(line: string): void {
    this.lines.push(line);
    this.bytes += Buffer.byteLength(line) + 1;
    while (this.bytes > this.bytesMax && this.head < this.lines.length) {
      this.bytes -= Buffer.byteLength(this.lines[this.head]!) + 1;
      this.head++;
    }
    // Drop the consumed front now and then, not on every line: the array stays about twice the tail.
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines.splice(0, this.head);
      this.head = 0;
    }
  }

  /** The kept lines, oldest first, each ending in a newline. */
  text(): string {
    const kept = this.lines.slice(this.head);
    return kept.length === 0 ? '' : `${kept.join('\n')}\n`;
  }
}
