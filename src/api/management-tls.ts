/**
 * The management API's TLS certificate: the operator's (`managementApi.certFile`/`keyFile`), or else one this
 * host makes for itself once, self-signed, and keeps in `<dataDir>/state/management-tls/`. It is made again
 * only when one of its two files is missing (delete them to get a new one, e.g. after the address changed).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { createSelfSignedCert } from '../pki/pki.js';

export interface ManagementTls {
  cert: Buffer;
  key: Buffer;
  certFile: string;
  keyFile: string;
  selfSigned: boolean;
}

export function managementTlsDir(dataDir: string): string {
  return path.join(dataDir, 'state', 'management-tls');
}

export async function loadManagementTls(opts: { dataDir: string; host: string; address: string; certFile: string | null; keyFile: string | null }): Promise<ManagementTls> {
  let files: { cert: string; key: string };
  let selfSigned = false;
  if (opts.certFile !== null && opts.keyFile !== null) {
    files = { cert: opts.certFile, key: opts.keyFile };
  } else {
    const dir = managementTlsDir(opts.dataDir);
    files = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
    selfSigned = true;
    if (!existsSync(files.cert) || !existsSync(files.key)) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // An unspecified address (0.0.0.0, ::) names no interface: the certificate then carries the host's name only.
      const unspecified = opts.address === '0.0.0.0' || opts.address === '::';
      try {
        await createSelfSignedCert(dir, {
          commonName: `lockstepd ${opts.host}`,
          dnsNames: [opts.host, 'localhost'],
          ips: [...(isIP(opts.address) !== 0 && !unspecified ? [opts.address] : []), '127.0.0.1'].filter((ip, i, all) => all.indexOf(ip) === i),
        });
      } catch (e) {
        throw new LockstepError('MANAGEMENT_TLS', `cannot make the management API's self-signed certificate in ${dir}: ${(e as Error).message}`, { dir }, { cause: e });
      }
    }
  }
  let cert: Buffer;
  let key: Buffer;
  try {
    [cert, key] = await Promise.all([readFile(files.cert), readFile(files.key)]);
  } catch (e) {
    throw new LockstepError('MANAGEMENT_TLS', `cannot read the management API's certificate or key: ${(e as Error).message}`, { cert: files.cert, key: files.key }, { cause: e });
  }
  try {
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) throw new Error('the key is not the certificate\'s');
  } catch (e) {
    throw new LockstepError('MANAGEMENT_TLS', `the management API's certificate ${files.cert} and key ${files.key} do not fit together: ${(e as Error).message}`, { cert: files.cert, key: files.key }, { cause: e });
  }
  return { cert, key, certFile: files.cert, keyFile: files.key, selfSigned };
}
