/**
 * The inbox client: logs in, syncs by sequence number, waits on Notify, and pulls when told.
 * Messages reach the app exactly once and in inbox order: the client keeps the last sequence
 * number it delivered and only ever asks for what follows it, so a retried sync, a duplicate
 * notification, a Notify stream that breaks (the Sync server restarting) or a PaxosKV replica
 * dying changes nothing but timing. Sends carry a client message id and are retried with it, so a
 * send that failed halfway is delivered once.
 *
 * As a program (`node --import tsx examples/inbox/client.ts --user ada --login host:port
 * --message host:port --sync host:port [--send-to bob --text hi]`) it prints each message received.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { RpcError, Status } from 'svrkit';
import { LoginClient, MessageClient, SyncClient, type Group, type InboxMessage } from './gen/inbox.js';

/** Where the services are, and who logs in. */
export interface InboxClientOptions {
  login: string | LoginClient;
  message: string | MessageClient;
  sync: string | SyncClient;
  user: string;
  /** Default: the demo password (`<user>-pw`). */
  password?: string;
  /** How long one send keeps retrying (ms). Default 30,000. */
  sendRetryMs?: number;
  /** Called with the time each Sync call took (ms), for measurements. */
  onSyncCall?: (ms: number) => void;
}

/** Statuses worth retrying a send or sync on: the call may not have run, or may run again safely. */
const RETRYABLE = new Set([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED, Status.ABORTED, Status.UNKNOWN, Status.INTERNAL, Status.CANCELLED]);

/** One user's inbox client (see the module comment). */
export class InboxClient {
  /** The last sequence number delivered to the app. */
  lastSeq = 0;
  /** Syncs run (each one or more calls), for tests and the bench. */
  syncs = 0;
  private ticket = '';
  private readonly login: LoginClient;
  private readonly message: MessageClient;
  private readonly syncClient: SyncClient;
  private readonly owned: Array<{ close(): void }> = [];
  private syncing: Promise<void> | undefined;
  private again = false;

  constructor(private readonly options: InboxClientOptions) {
    const own = <T extends { close(): void }>(c: T): T => (this.owned.push(c), c);
    this.login = typeof options.login === 'string' ? own(new LoginClient(options.login)) : options.login;
    this.message = typeof options.message === 'string' ? own(new MessageClient(options.message)) : options.message;
    this.syncClient = typeof options.sync === 'string' ? own(new SyncClient(options.sync)) : options.sync;
  }

  /** The user. */
  get user(): string {
    return this.options.user;
  }

  /** Logs in (a ticket with the scope "inbox"). */
  async logIn(): Promise<void> {
    const r = await this.login.login({ user: this.options.user, password: this.options.password ?? `${this.options.user}-pw` });
    this.ticket = r.ticket;
  }

  /** Sends `text` to one user. @returns the client message id it used. */
  sendToUser(to: string, text: string, clientMsgId: string = randomUUID()): Promise<string> {
    return this.retrying(() => this.message.sendToUser({ to, text, clientMsgId }, { ticket: this.ticket })).then(() => clientMsgId);
  }

  /** Sends `text` to a group. @returns the client message id it used. */
  sendToGroup(group: string, text: string, clientMsgId: string = randomUUID()): Promise<string> {
    return this.retrying(() => this.message.sendToGroup({ group, text, clientMsgId }, { ticket: this.ticket })).then(() => clientMsgId);
  }

  /** Creates a group of the caller and `members`. */
  createGroup(group: string, members: string[]): Promise<Group> {
    return this.message.createGroup({ group, members }, { ticket: this.ticket });
  }

  /** Adds `user` to a group. */
  addMember(group: string, user: string): Promise<Group> {
    return this.message.addMember({ group, user }, { ticket: this.ticket });
  }

  /**
   * Syncs from `lastSeq` until nothing more follows, handing each message to `deliver` in order.
   * Calls made while one runs join it (and make it go round once more).
   * @throws Error when the inbox skipped a sequence number (never expected: the inbox is dense).
   */
  sync(deliver: (m: InboxMessage) => void): Promise<void> {
    if (this.syncing !== undefined) {
      this.again = true;
      return this.syncing;
    }
    const run = async () => {
      do {
        this.again = false;
        for (;;) {
          this.syncs++;
          const began = performance.now();
          const r = await this.syncClient.sync({ userId: this.options.user, lastSeq: BigInt(this.lastSeq) }, { ticket: this.ticket, timeoutMs: 5000 });
          this.options.onSyncCall?.(performance.now() - began);
          for (const m of r.messages) {
            const seq = Number(m.seq);
            if (seq <= this.lastSeq) continue;
            if (seq !== this.lastSeq + 1 && seq !== Number(r.trimmedUpto) + 1) throw new Error(`${this.options.user}: inbox jumped from ${this.lastSeq} to ${seq}`);
            this.lastSeq = seq;
            deliver(m);
          }
          if (!r.more) break;
        }
      } while (this.again);
    };
    this.syncing = run().finally(() => (this.syncing = undefined));
    return this.syncing;
  }

  /**
   * Receives until `signal` aborts: syncs, then waits on Notify and syncs each time it says the
   * inbox moved past `lastSeq`. A failed stream or sync is retried after a pause (100 ms, doubling
   * to 2 s), with a full sync first, so nothing sent meanwhile is missed; an expired ticket
   * (UNAUTHENTICATED) makes it log in again.
   * @throws RpcError for a failure not worth retrying (e.g. PERMISSION_DENIED, or a login refused);
   *   Error when the inbox skipped a sequence number.
   */
  async run(deliver: (m: InboxMessage) => void, signal: AbortSignal): Promise<void> {
    let pause = 100;
    while (!signal.aborted) {
      try {
        await this.sync(deliver);
        for await (const e of this.syncClient.notify({ userId: this.options.user, lastSeq: BigInt(this.lastSeq) }, { ticket: this.ticket, signal, deadline: Infinity })) {
          pause = 100;
          if (Number(e.seq) > this.lastSeq) await this.sync(deliver);
        }
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof RpcError && err.code === Status.UNAUTHENTICATED) await this.logIn();
        else if (!(err instanceof RpcError) || !RETRYABLE.has(err.code)) throw err;
      }
      await sleep(pause, undefined, { signal }).catch(() => undefined);
      pause = Math.min(pause * 2, 2000);
    }
  }

  /** Closes the clients it made. */
  close(): void {
    for (const c of this.owned) c.close();
  }

  private async retrying<T>(call: () => Promise<T>): Promise<T> {
    const until = Date.now() + (this.options.sendRetryMs ?? 30_000);
    for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
      try {
        return await call();
      } catch (err) {
        if (!(err instanceof RpcError) || Date.now() + pause > until) throw err;
        // An expired ticket: log in again and retry (the request carries the same client message id).
        if (err.code === Status.UNAUTHENTICATED) await this.logIn();
        else if (!RETRYABLE.has(err.code)) throw err;
      }
      await sleep(pause);
    }
  }
}

// As a program: log in, optionally send one message, then print what arrives until Ctrl-C.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const usage = 'usage: client.ts --user U --login host:port --message host:port --sync host:port [--send-to U2 | --send-to-group G] [--text T]\n';
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        user: { type: 'string' },
        login: { type: 'string' },
        message: { type: 'string' },
        sync: { type: 'string' },
        'send-to': { type: 'string' },
        'send-to-group': { type: 'string' },
        text: { type: 'string' },
      },
      strict: true,
    });
  } catch (err) {
    process.stderr.write(`client.ts: ${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
  const { values } = parsed;
  const { user, login, message, sync } = values;
  if (user === undefined || login === undefined || message === undefined || sync === undefined) {
    process.stderr.write(usage);
    process.exit(2);
  }
  const client = new InboxClient({ user, login, message, sync });
  await client.logIn();
  if (values['send-to'] !== undefined) await client.sendToUser(values['send-to'], values.text ?? 'hello');
  if (values['send-to-group'] !== undefined) await client.sendToGroup(values['send-to-group'], values.text ?? 'hello');
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  try {
    await client.run((m) => process.stdout.write(`${user} #${m.seq} from ${m.from}${m.group === '' ? '' : ` in ${m.group}`}: ${m.text}\n`), stop.signal);
  } catch (err) {
    process.stderr.write(`client.ts: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
  client.close();
}
