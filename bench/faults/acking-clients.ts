// Simulated streaming clients for fault runs, in this process (a few dozen need no load processes):
// each holds a /streaming-message stream as the Go client does, acknowledges every message it
// receives (MessageAck frames every 100 ms), optionally sends a message of its own now and then
// (so that the server must store client frames), and reconnects: at once after a normal end
// (done_sending), after the server's Retry-After or 1–2 s after a failure. Everything it sees goes
// to the DeliveryLedger and to its own counters of client-visible errors.
import { type ClientHost, type ClientTarget, StreamClient } from "../loadgen/sim-clients.js";
import type { ClientIdentity } from "../loadgen/identities.js";
import { MessageBatchEncoder, nowMs } from "../loadgen/wire.js";
import type { DeliveryLedger } from "./ledger.js";

const RETRY_MIN_MS = 1000;

export interface AckingClientsOptions {
  target: ClientTarget;
  identities: ClientIdentity[];
  ledger: DeliveryLedger;
  ackEveryMs?: number;
  /** Each open stream sends one message of its own this often (0: never). */
  sendEveryMs?: number;
}

/** A stream's end as the client saw it. */
export interface StreamEnd {
  at: number;
  client: number;
  /** done_sending, a normal close, or the error (HTTP status, connection failure). */
  how: "done_sending" | "closed" | "error";
  error?: string;
}

export class AckingClients implements ClientHost {
  readonly target: ClientTarget;
  stopping = false;
  readonly clients: StreamClient[];
  /** Client-visible errors: failed connections and streams that ended abnormally, by kind. */
  readonly errors: Record<string, number> = {};
  readonly ends: StreamEnd[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly everyTimers: NodeJS.Timeout[] = [];
  /** What sendEveryMs sends: one 64-byte message to TestService. */
  private readonly oneMessage = new MessageBatchEncoder("TestService", 1, 64);
  private opens = 0;
  private openWaiters: Array<() => void> = [];

  constructor(private readonly opts: AckingClientsOptions) {
    this.target = opts.target;
    this.clients = opts.identities.map(
      (id, i) => new StreamClient(i, { id: id.id, keyPem: id.keyPem, certPem: id.certPem }, this),
    );
  }

  /** Connects every client; resolves once all have an open stream. */
  async start(timeoutMs = 30_000): Promise<void> {
    this.everyTimers.push(setInterval(() => this.flushAcks(), this.opts.ackEveryMs ?? 100));
    if (this.opts.sendEveryMs) {
      this.everyTimers.push(
        setInterval(() => {
          for (const c of this.clients) if (c.isOpen) c.sendMessages(this.oneMessage);
        }, this.opts.sendEveryMs),
      );
    }
    for (const c of this.clients) c.connect();
    await this.untilAllOpen(timeoutMs);
  }

  get openCount(): number {
    return this.clients.filter((c) => c.isOpen).length;
  }

  /** Resolves once every client has an open stream. */
  untilAllOpen(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.openCount < this.clients.length) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== waiter);
        reject(new Error(`only ${this.openCount} of ${this.clients.length} streams open after ${timeoutMs} ms; errors ${JSON.stringify(this.errors)}`));
      }, timeoutMs);
      const waiter = () => {
        if (check()) this.openWaiters = this.openWaiters.filter((w) => w !== waiter);
      };
      if (!check()) this.openWaiters.push(waiter);
    });
  }

  get streamsOpened(): number {
    return this.opens;
  }

  handshakeDone(): void {}

  streamOpened(): void {
    this.opens++;
    for (const w of [...this.openWaiters]) w();
  }

  ended(c: StreamClient, wasOpen: boolean, error?: string): void {
    const at = nowMs();
    const how = error !== undefined ? "error" : c.toldDoneSending ? "done_sending" : "closed";
    if (wasOpen || error !== undefined) this.ends.push({ at, client: c.index, how, ...(error !== undefined ? { error } : {}) });
    if (error !== undefined) this.errors[error] = (this.errors[error] ?? 0) + 1;
    if (this.stopping || c.closedByUs) return;
    const delay = error === undefined ? 0 : Math.max(c.retryAfterMs, RETRY_MIN_MS * (1 + Math.random()));
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopping) c.connect();
    }, delay);
    this.timers.add(t);
  }

  received(key: string, _insertedAt: number | undefined, at: number): void {
    this.opts.ledger.received(key, at);
  }

  acksStored(ids: string[]): void {
    const at = nowMs();
    for (const id of ids) this.opts.ledger.ackStored(id, at);
  }

  /** Client messages the server acknowledged (stored). */
  ingestedAcked = 0;

  frameAcked(_c: StreamClient, ingestMessages: number): void {
    this.ingestedAcked += ingestMessages;
  }

  pollDone(): void {}

  ackPending(): void {}

  /** Every client, not only those that received something since: acks held while a stream was down go out on the next one. */
  private flushAcks(): void {
    for (const c of this.clients) c.flushAcks();
  }

  /** Client-visible errors since `from` (wall-clock ms), by kind. */
  errorsSince(from: number, to = Number.POSITIVE_INFINITY): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.ends) {
      if (e.how !== "error" || e.at < from || e.at >= to) continue;
      out[e.error!] = (out[e.error!] ?? 0) + 1;
    }
    return out;
  }

  stop(): void {
    this.stopping = true;
    for (const t of [...this.timers, ...this.everyTimers]) clearTimeout(t);
    for (const c of this.clients) c.close();
  }
}
