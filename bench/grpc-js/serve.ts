/**
 * What the grpc-js benchmark servers share: reading the port argument, and serving on 127.0.0.1
 * until SIGTERM or SIGINT with a graceful shutdown (forced after 2 s).
 */
import * as grpc from '@grpc/grpc-js';

/**
 * The port from the command line.
 * @param text - the argument, or undefined for 0 (a free port).
 * @returns 0..65535; exits the process with code 2 and a message for anything else.
 */
export function parsePort(text: string | undefined): number {
  if (text === undefined) return 0;
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) {
    console.error(`invalid port '${text}': expected 0-65535 (0 picks a free port)`);
    process.exit(2);
  }
  return port;
}

/**
 * Binds `server` to 127.0.0.1:`port`, prints `listening 127.0.0.1:<port>`, and shuts it down on
 * SIGTERM or SIGINT (tryShutdown, forceShutdown after 2 s), then exits 0.
 * @param credentials - the server's credentials: insecure (the default), or TLS (`grpc.ServerCredentials.createSsl`).
 * @throws Error (rejection) when the port cannot be bound.
 */
export async function serveUntilSignalled(server: grpc.Server, port: number, credentials = grpc.ServerCredentials.createInsecure()): Promise<void> {
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  console.log(`listening 127.0.0.1:${bound}`);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, 2000);
    force.unref();
    server.tryShutdown((err) => {
      clearTimeout(force);
      if (err) console.error(`shutdown after ${signal}: ${err.message}`);
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
