/**
 * A guest's serial console as text a person can read: the bytes QEMU wrote to the VM's serial log (what the
 * guest sent on ttyS0), decoded and cleaned. Pure: the reader (`console-log.ts`) gives it the bytes it read.
 *
 * A console is written for a terminal: colours, cursor moves and titles are escape sequences, lines end in
 * `\r\n`. None of that means anything in a `<pre>` or a pipe, and a guest can write anything, so only text,
 * newlines and tabs are kept.
 */

/**
 * Escape sequences (ECMA-48), then any other control character but `\n` and `\t`, in one pass:
 * - a control string (OSC, DCS, SOS, PM, APC) up to its terminator (BEL or ST). Its body excludes ESC, so a
 *   failed match stops at the next ESC and the scan stays linear however a guest nests them; one never
 *   terminated loses its introducer only, the rest shows as text;
 * - a CSI sequence: parameters, intermediates, a final byte (colours, cursor moves, erasing);
 * - any other escape: intermediates and a final byte (charset selection, keypad modes, `ESC c`);
 * - a control character alone, C0 and C1 (`\r`, backspace, bell, a stray ESC).
 * The C1 forms (U+0080–U+009F) come only from a guest that encoded them in UTF-8; a raw 8-bit C1 byte is
 * not UTF-8 and was replaced when decoded.
 */
const NOT_TEXT =
  /(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b[ -/]*[0-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/** `text` without escape sequences and control characters, but for `\n` and `\t`. */
export function stripControls(text: string): string {
  return text.replace(NOT_TEXT, '');
}

/** The longest a UTF-8 character runs past its first byte. */
const UTF8_CONTINUATION_MAX = 3;

export interface TailText {
  text: string;
  /** Bytes at the start of the tail left out: the end of a line that began before it. */
  droppedBytes: number;
}

/**
 * The text of a log's last bytes. `atLineStart`: whether `tail` begins a line (the log's start, or just
 * after a newline); if not, the partial first line is left out, so the text begins where a line does. A
 * tail that is all one line keeps it, from its first whole character. A character the end cuts (the guest
 * is writing it now) is left out; any other invalid UTF-8 becomes U+FFFD.
 */
export function tailText(tail: Uint8Array, atLineStart: boolean): TailText {
  let from = 0;
  if (!atLineStart) {
    const newline = tail.indexOf(0x0a);
    if (newline >= 0) from = newline + 1;
    else while (from < UTF8_CONTINUATION_MAX && from < tail.length && (tail[from]! & 0xc0) === 0x80) from++;
  }
  // `stream`: a sequence cut by the end is held back (and dropped with the decoder), not replaced.
  const decoded = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(tail.subarray(from), { stream: true });
  return { text: stripControls(decoded), droppedBytes: from };
}
