/**
 * Reading a password for `lockstep user`: never from the command line, where `ps` and the shell's history
 * would keep it. Either the first line of stdin (`--password-stdin`, for scripts), or typed at a terminal
 * without echo, twice for a new one.
 */
import { LockstepError } from '../util/errors.js';
import { PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN } from '../users/user-store.js';

/** Bytes of stdin read at most: a password is at most 256 characters, and a pipe must not fill memory. */
const STDIN_BYTES_MAX = 64 * 1024;

export interface PasswordSource {
  /** `--password-stdin`. */
  fromStdin: boolean;
  /** Shown at the terminal prompt. */
  prompt: string;
}

export async function readPassword(src: PasswordSource, input: NodeJS.ReadStream = process.stdin, output: NodeJS.WritableStream = process.stderr): Promise<string> {
  let password: string;
  if (src.fromStdin) password = firstLine(await readAll(input));
  else if (input.isTTY) {
    password = await promptHidden(`${src.prompt}: `, input, output);
    if ((await promptHidden('again: ', input, output)) !== password) throw new LockstepError('INVALID_ARGUMENT', 'the two passwords differ: nothing changed');
  } else {
    throw new LockstepError('INVALID_ARGUMENT', 'stdin is not a terminal: give --password-stdin and the password as the first line of stdin (never on the command line)');
  }
  return checkPassword(password);
}

/** The API's own length rule, checked before the daemon is asked (its message names the rule). */
export function checkPassword(password: string): string {
  if (password.length < PASSWORD_LENGTH_MIN || password.length > PASSWORD_LENGTH_MAX) {
    throw new LockstepError('INVALID_ARGUMENT', `a password has ${PASSWORD_LENGTH_MIN} to ${PASSWORD_LENGTH_MAX} characters (this one has ${password.length})`);
  }
  return password;
}

/** The first line of what was piped in, without its line ending: `echo PASS |` and a file both work. */
export function firstLine(text: string): string {
  const end = text.search(/\r?\n/);
  return end === -1 ? text : text.slice(0, end);
}

async function readAll(input: NodeJS.ReadStream): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of input as AsyncIterable<Buffer | string>) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += b.length;
    if (size > STDIN_BYTES_MAX) throw new LockstepError('INVALID_ARGUMENT', `stdin holds more than ${STDIN_BYTES_MAX} bytes: give the password as its first line`);
    chunks.push(b);
    // Only the first line counts: a terminal-less writer that keeps stdin open must not hang the command.
    if (b.includes(0x0a)) break;
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** One line typed at the terminal, not echoed; Ctrl-C and Ctrl-D give up. */
function promptHidden(prompt: string, input: NodeJS.ReadStream, output: NodeJS.WritableStream): Promise<string> {
  output.write(prompt);
  input.setRawMode(true);
  input.resume();
  return new Promise((resolve, reject) => {
    let typed = '';
    const done = (f: () => void): void => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      output.write('\n');
      f();
    };
    const onData = (data: Buffer): void => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done(() => resolve(typed));
        if (ch === '\u0003' || ch === '\u0004') return done(() => reject(new LockstepError('INVALID_ARGUMENT', 'no password given: nothing changed')));
        if (ch === '\u007f' || ch === '\b') typed = typed.slice(0, -1);
        else typed += ch;
      }
    };
    input.on('data', onData);
  });
}
