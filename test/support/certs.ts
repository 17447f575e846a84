/**
 * Test certificates, made with the `openssl` command (OpenSSL 3): a CA, a server certificate for
 * 127.0.0.1 and localhost, and a client certificate with a SPIFFE URI SAN, all signed by the CA;
 * and a second, unrelated CA. Valid for two days.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';

/** PEM texts, and the files they are in. */
export interface TestCerts {
  dir: string;
  ca: string;
  otherCa: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  file: (name: 'ca.crt' | 'other-ca.crt' | 'server.crt' | 'server.key' | 'client.crt' | 'client.key') => string;
}

/**
 * Makes the certificates in `dir`.
 * @throws Error when `openssl` is missing or fails (its output in the message).
 */
export async function makeCerts(dir: string): Promise<TestCerts> {
  await fsp.mkdir(dir, { recursive: true });
  const run = (args: string[]): void => {
    try {
      execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    } catch (err) {
      throw new Error(`openssl ${args.join(' ')}: ${(err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message}`);
    }
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=svrkit-test-ca']);
  run(['req', '-x509', ...ec, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-subj', '/CN=another-ca']);
  const leaf = (name: string, subj: string, san: string): void =>
    run(['req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-subj', subj, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-addext', `subjectAltName=${san}`, '-addext', 'basicConstraints=CA:FALSE']);
  leaf('server', '/CN=server', 'IP:127.0.0.1,DNS:localhost');
  leaf('client', '/CN=frontend/O=shop', 'URI:spiffe://svrkit.test/shop/frontend');
  const read = (f: string): string => readFileSync(path.join(dir, f), 'utf8');
  return {
    dir,
    ca: read('ca.crt'),
    otherCa: read('other-ca.crt'),
    serverCert: read('server.crt'),
    serverKey: read('server.key'),
    clientCert: read('client.crt'),
    clientKey: read('client.key'),
    file: (name) => path.join(dir, name),
  };
}
