/**
 * The e-Alert as an Internet message (RFC 5322 with MIME): headers, a plain-text body, and the transport
 * encodings SMTP needs (dot-stuffing, CRLF). Pure: the SMTP client (`smtp.ts`) only carries the text.
 *
 * The body is 7bit when every line is ASCII and at most 998 octets (RFC 5322's limit), else
 * quoted-printable UTF-8: always deliverable, whatever the server offers (no 8BITMIME needed). A header
 * with non-ASCII text is an RFC 2047 encoded word; every header is folded below 78 characters a line.
 */
import { isoTime, summaryLine, type LogRow, type NotifyAlert } from './alert.js';

export interface MailParts {
  from: string;
  to: readonly string[];
}

/** The event-log entries shown under the alert: the host's recent history up to it, oldest first. */
export type TimelineEntry = Pick<LogRow, 'wallMs' | 'host' | 'kind' | 'severity' | 'code' | 'what' | 'cause'>;

/** Timeline lines an e-Alert shows at most (Call Home carries more). */
export const MAIL_TIMELINE_MAX = 15;

/** The whole message, CRLF line endings, not yet dot-stuffed. */
export function alertMail(a: NotifyAlert, parts: MailParts, timeline: readonly TimelineEntry[], nowMs: number): string {
  const body = alertMailBody(a, timeline.slice(-MAIL_TIMELINE_MAX));
  const asciiSafe = isSevenBitSafe(body);
  const headers: [string, string][] = [
    ['From', parts.from],
    ['To', parts.to.join(', ')],
    ['Subject', summaryLine(a)],
    ['Date', rfc5322Date(nowMs)],
    ['Message-ID', messageId(a)],
    ['MIME-Version', '1.0'],
    ['Content-Type', 'text/plain; charset=utf-8'],
    ['Content-Transfer-Encoding', asciiSafe ? '7bit' : 'quoted-printable'],
    // RFC 3834: machine-made; vacation responders and list servers leave it alone.
    ['Auto-Submitted', 'auto-generated'],
    ['X-Lockstep-Pair', a.pair],
    ['X-Lockstep-Host', a.host],
    ['X-Lockstep-Severity', a.severity],
    ['X-Lockstep-Code', a.code],
  ];
  const head = headers.map(([name, value]) => foldHeader(name, value)).join('\r\n');
  const text = asciiSafe ? body.split('\n').join('\r\n') : quotedPrintable(body);
  return `${head}\r\n\r\n${text}\r\n`;
}

/** Stable across retries: a receiving system that sees it twice is seeing the same e-Alert twice. */
export function messageId(a: NotifyAlert): string {
  const safe = (s: string): string => s.replace(/[^A-Za-z0-9.-]/g, '-');
  return `<lockstep.${safe(a.uid)}@${safe(a.pair)}.lockstep.invalid>`;
}

function alertMailBody(a: NotifyAlert, timeline: readonly TimelineEntry[]): string {
  const lines = [
    a.test ? 'Lockstep test notification' : `Lockstep e-Alert: ${a.severity} ${a.code}`,
    '',
    a.message,
    '',
    `Severity:  ${a.severity}`,
    `Code:      ${a.code}`,
    `Pair:      ${a.pair}`,
    `Host:      ${a.location.host}`,
    `Component: ${a.location.component ?? '-'}`,
    `VM:        ${a.location.vm ?? '-'}`,
    `Time:      ${isoTime(a.wallMs)}`,
    `Cause:     ${a.cause}`,
  ];
  if (timeline.length > 0) {
    lines.push('', `Recent events on ${a.host} (oldest first):`);
    for (const t of timeline) lines.push(`  ${isoTime(t.wallMs)} ${t.host} ${t.kind === 'alert' ? `ALERT ${t.severity} ${t.code}: ` : ''}${t.what}`);
  }
  // One line per line: a message is one sentence, but nothing from the log may break the layout.
  return lines.map((l) => l.replace(/\r\n?|\n/g, '\n')).join('\n');
}

/** RFC 5322 `date-time` in UTC: `Tue, 05 Mar 2024 09:07:02 +0000`. */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${two(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}

/**
 * SMTP's transparency (RFC 5321 §4.5.2): a line that starts with a dot gets one more, so that no line of
 * the message is the lone dot that ends DATA. Input and output have CRLF line endings; the result ends with
 * the terminating `CRLF . CRLF`.
 */
export function dotStuff(message: string): string {
  const crlf = message.replace(/\r?\n/g, '\r\n');
  const stuffed = crlf.replace(/(^|\r\n)\./g, '$1..');
  return `${stuffed}${stuffed.endsWith('\r\n') ? '' : '\r\n'}.\r\n`;
}

/** True when the text can go as 7bit: ASCII without NUL or bare CR, no line over 998 octets. */
function isSevenBitSafe(text: string): boolean {
  return /^[\x01-\x0c\x0e-\x7f]*$/.test(text) && text.split('\n').every((l) => l.length <= 998);
}

/** Quoted-printable (RFC 2045 §6.7) of UTF-8 text, lines joined with CRLF, soft breaks under 76 characters. */
export function quotedPrintable(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      const bytes = Buffer.from(line, 'utf8');
      const out: string[] = [];
      let cur = '';
      for (let i = 0; i < bytes.length; i++) {
        const b = bytes[i]!;
        const last = i === bytes.length - 1;
        // Printable ASCII but '=' goes as is; a space or tab only when not at the end of the line.
        const plain = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
        const token = plain ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
        if (cur.length + token.length > 75) {
          out.push(`${cur}=`);
          cur = '';
        }
        cur += token;
      }
      out.push(cur);
      return out.join('\r\n');
    })
    .join('\r\n');
}

/** `Name: value`, as an RFC 2047 encoded word when not ASCII, folded at spaces so that no line passes 78. */
export function foldHeader(name: string, value: string): string {
  // A header value never carries a line break of its own: that would start a header (or the body) of its choosing.
  const flat = value.replace(/[\r\n]+/g, ' ');
  const words = /^[\x20-\x7e]*$/.test(flat) ? flat.split(' ') : encodedWords(flat);
  const lines: string[] = [];
  let cur = `${name}:`;
  for (const w of words) {
    if (cur.length + 1 + w.length > 78 && cur.length > name.length + 1) {
      lines.push(cur);
      cur = '';
    }
    cur += ` ${w}`;
  }
  lines.push(cur);
  return lines.join('\r\n');
}

/** RFC 2047 `=?UTF-8?B?…?=` words of at most 45 octets of text each (75 characters encoded), split between characters. */
function encodedWords(text: string): string[] {
  const words: string[] = [];
  let chunk = '';
  for (const ch of text) {
    if (Buffer.byteLength(chunk + ch, 'utf8') > 45) {
      words.push(chunk);
      chunk = '';
    }
    chunk += ch;
  }
  if (chunk !== '') words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w, 'utf8').toString('base64')}?=`);
}
