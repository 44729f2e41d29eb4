/**
 * The quorum client: one question to one quorum server over mutual TLS 1.3, answered as the decision core's
 * `QuorumReply` (`granted`, `denied`, `unreachable`).
 *
 * Network trouble of any kind (refused, reset, TLS failure, timeout, a reply that is not valid) is the value
 * `unreachable`, never an exception: to the core a quorum server that cannot answer is simply not there.
 * An `error` reply from the server (e.g. the pair is not enrolled, or the certificate is not the pair's) is
 * `unreachable` too, with the server's code and message in `reason`, since it grants nothing either.
 * Only unreadable local TLS material throws (`INVALID_CERTIFICATE`): that is configuration, not the network.
 *
 * One connection per question: a question comes every few hundred milliseconds at most, and a fresh
 * connection cannot carry a stale reply from an earlier one.
 */
import { randomInt, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import type { QuorumReply } from '../core/types.js';
import { fingerprintOf, readCertificate } from '../pki/pki.js';
import {
  QUORUM_LINE_BYTES_MAX,
  formatQuorumLine,
  parseQuorumReply,
  type QuorumReplyMessage,
  type QuorumRequestMessage,
} from '../protocol/quorum.js';
import { LineSplitter } from '../util/line-splitter.js';
import { describeError, LockstepError } from '../util/errors.js';

/** A PEM text, or the path of a file holding one (read at each call, so renewed files are picked up). */
export type PemSource = string | Buffer;

export interface QuorumEndpoint {
  /** The server's IP address (checked against its certificate's SANs) or DNS name. */
  address: string;
  port: number;
  /**
   * What the server's certificate must be: its CA certificate (the server's own CA from `lockstep-quorum
   * init`, the usual case), or the server's certificate itself, pinned (compared by SHA-256).
   */
  ca: PemSource;
  /** This host's certificate and key (signed by the pair's CA, CN = host id). */
  cert: PemSource;
  key: PemSource;
  /** The whole exchange (connect, handshake, question, reply) must finish within this. */
  timeoutMs: number;
}

export interface AskQuorumOptions extends QuorumEndpoint {
  pair: string;
  host: string;
  knownEpoch: number;
}

/** A `QuorumReply`, with why when unreachable (for logs and alerts; the core ignores it). */
export type QuorumAnswer =
  | { kind: 'granted'; epoch: number }
  | { kind: 'denied'; epoch: number; holder: string }
  | { kind: 'unreachable'; reason: string; code?: string };

// Compile-time check: every answer is a reply the core understands.
const _answerIsReply = (a: QuorumAnswer): QuorumReply => a;
void _answerIsReply;

let nextId = randomInt(1, 2 ** 30);

/** Asks the server to grant (or renew) the pair's epoch for `host`. Never throws for network trouble. */
export async function askQuorum(opts: AskQuorumOptions): Promise<QuorumAnswer> {
  const id = nextId++;
  const result = await exchange(opts, { v: 1, type: 'acquire', pair: opts.pair, host: opts.host, knownEpoch: opts.knownEpoch, id });
  if ('unreachable' in result) return { kind: 'unreachable', reason: result.unreachable };
  const r = result.reply;
  switch (r.type) {
    case 'granted':
      return { kind: 'granted', epoch: r.epoch };
    case 'denied':
      return { kind: 'denied', epoch: r.epoch, holder: r.holder };
    case 'error':
      return { kind: 'unreachable', reason: `the quorum server refused: ${r.code}: ${r.message}`, code: r.code };
    case 'pong':
      return { kind: 'unreachable', reason: 'the quorum server answered an acquire with a pong' };
  }
}

/** Whether the server answers a ping within the timeout (reachability only: nothing is granted). */
export async function probeQuorum(opts: QuorumEndpoint): Promise<boolean> {
  const id = nextId++;
  const result = await exchange(opts, { v: 1, type: 'ping', id });
  return 'reply' in result && result.reply.type === 'pong';
}

type Exchange = { reply: QuorumReplyMessage } | { unreachable: string };

async function exchange(opts: QuorumEndpoint, request: QuorumRequestMessage): Promise<Exchange> {
  const [ca, cert, key] = await Promise.all([
    loadPem(opts.ca, 'the quorum server CA'),
    loadPem(opts.cert, 'this host certificate'),
    loadPem(opts.key, 'this host key'),
  ]);
  const caCert = readCertificate(ca, 'the quorum server CA');
  // A CA certificate: TLS checks the chain and the address. A leaf: pinned, compared after the handshake.
  const pinned = caCert.ca ? null : fingerprintOf(caCert);

  return new Promise<Exchange>((resolve) => {
    let settled = false;
    let socket: tls.TLSSocket | null = null;
    const finish = (result: Exchange): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ unreachable: `no reply within ${opts.timeoutMs} ms` }), opts.timeoutMs);
    try {
      socket = tls.connect({
        host: opts.address,
        port: opts.port,
        ca: [ca],
        cert,
        key,
        minVersion: 'TLSv1.3',
        maxVersion: 'TLSv1.3',
        rejectUnauthorized: pinned === null,
        ...(pinned === null ? {} : { checkServerIdentity: () => undefined }),
      });
    } catch (e) {
      finish({ unreachable: `cannot connect: ${describeError(e)}` });
      return;
    }
    const s = socket;
    s.setNoDelay(true);
    s.on('error', (e) => finish({ unreachable: describeError(e) }));
    s.on('close', () => finish({ unreachable: 'the connection closed before a reply' }));
    s.on('secureConnect', () => {
      if (pinned !== null) {
        const peer = s.getPeerX509Certificate();
        if (!peer || fingerprintOf(peer) !== pinned) {
          finish({ unreachable: 'the quorum server certificate is not the pinned one' });
          return;
        }
      }
      s.write(formatQuorumLine(request));
    });
    const splitter = new LineSplitter(QUORUM_LINE_BYTES_MAX - 1);
    s.on('data', (chunk: Buffer) => {
      const { lines, overflow } = splitter.push(chunk);
      const line = lines[0];
      if (line === undefined) {
        if (overflow) finish({ unreachable: 'the quorum server sent a line that is too long' });
        return;
      }
      let reply: QuorumReplyMessage;
      try {
        reply = parseQuorumReply(line);
      } catch (e) {
        finish({ unreachable: `the quorum server sent an invalid reply: ${describeError(e)}` });
        return;
      }
      // An error about the connection as a whole (no id) answers us too; anything else must carry our id.
      const replyId = 'id' in reply ? reply.id : undefined;
      if (replyId !== request.id && !(reply.type === 'error' && replyId === undefined)) {
        finish({ unreachable: `the quorum server answered request ${String(replyId)}, not ${request.id}` });
        return;
      }
      finish({ reply });
    });
  });
}

async function loadPem(source: PemSource, what: string): Promise<string | Buffer> {
  if (Buffer.isBuffer(source) || source.includes('-----BEGIN ')) return source;
  try {
    return await readFile(source);
  } catch (e) {
    throw new LockstepError('INVALID_CERTIFICATE', `cannot read ${what} ${source}: ${describeError(e)}`, { file: source }, { cause: e });
  }
}

/** Parses a certificate the same way the client will (for configuration checks at start). */
export async function describeQuorumTrust(ca: PemSource): Promise<{ kind: 'ca' | 'pinned'; fingerprint: string; subject: string }> {
  const cert: X509Certificate = readCertificate(await loadPem(ca, 'the quorum server CA'), 'the quorum server CA');
  return { kind: cert.ca ? 'ca' : 'pinned', fingerprint: fingerprintOf(cert), subject: cert.subject };
}
