/** Keeps the last `maxBytes` of a stream (QEMU's stderr): enough to say why it died, bounded however much
 * it writes. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    // Drop whole chunks from the front while what is left still covers the limit; trim the rest on read.
    while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= this.maxBytes) {
      this.bytes -= this.chunks.shift()!.length;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks, this.bytes);
    const tail = all.length > this.maxBytes ? all.subarray(all.length - this.maxBytes) : all;
    // Cutting may split a UTF-8 sequence; the replacement character at the start is acceptable in a log tail.
    return tail.toString('utf8');
  }
}
