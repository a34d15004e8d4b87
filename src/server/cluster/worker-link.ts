// A worker process's side of the cluster channel: it tells the supervisor which streams it holds
// (in batches), answers the supervisor's requests to wake one of them, asks the supervisor to
// wake a stream it does not hold, and reports its activity for the server's heartbeat.
import { bytesToHex } from "../../common/ids.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import { type Activity, type ActivityCounts, countsOf, countsSince } from "../observe/activity.js";
import { isSupervisorMessage, type SupervisorToWorker, type WorkerAddresses, type WorkerToSupervisor } from "./messages.js";

/** In a worker that cannot start: tells the supervisor why (resolves once the message is sent). */
export function reportStartFailure(message: string): Promise<void> {
  const m: WorkerToSupervisor = { type: "fs:failed", message };
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(m, undefined, {}, () => resolve());
  });
}

export interface WorkerLinkOptions {
  /** Streams this process holds now. */
  held: () => number;
  activity: Activity;
  /** Wakes a stream held here; says whether it was. `counted`: count it as a received notification. */
  wake: (clientId: Uint8Array, message: Message | undefined, counted: boolean) => boolean;
  /** A notification from another server named a client no worker holds. */
  unknownNotification: () => void;
  /** Closes the client listener (the stop's first step). */
  stopAccepting: () => void;
  /** How long stream reports are gathered before they are sent. Default 10 ms. */
  batchMs?: number;
  /** How often activity is reported. Default 2 s. */
  activityIntervalMs?: number;
  /** How long route() waits for the supervisor. Default 3 s. */
  routeTimeoutMs?: number;
}

export class WorkerLink {
  readonly #opts: WorkerLinkOptions;
  #opened: string[] = [];
  #closed: string[] = [];
  #flushTimer: NodeJS.Timeout | undefined;
  readonly #activityTimer: NodeJS.Timeout;
  #reported: ActivityCounts;
  readonly #routes = new Map<number, { resolve: (held: boolean) => void; timer: NodeJS.Timeout }>();
  #nextRequest = 1;
  readonly #onMessage = (m: unknown) => {
    if (isSupervisorMessage(m)) this.#handle(m);
  };

  constructor(opts: WorkerLinkOptions) {
    this.#opts = opts;
    this.#reported = countsOf(opts.activity);
    process.on("message", this.#onMessage);
    this.#activityTimer = setInterval(() => this.#reportActivity(), opts.activityIntervalMs ?? 2_000);
    this.#activityTimer.unref();
  }

  /** This process started (held) or stopped holding a client's stream. */
  presence(clientId: Uint8Array, held: boolean): void {
    (held ? this.#opened : this.#closed).push(bytesToHex(clientId));
    this.#flushTimer ??= setTimeout(() => this.#flush(), this.#opts.batchMs ?? 10);
  }

  /** Asks the supervisor to wake the client's stream in another worker; resolves whether one held it. */
  route(clientId: Uint8Array, message?: Message): Promise<boolean> {
    const request = this.#nextRequest++;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => this.#settle(request, false), this.#opts.routeTimeoutMs ?? 3_000);
      this.#routes.set(request, { resolve, timer });
      if (!this.#send({ type: "fs:route", request, clientId, ...(message ? { message } : {}) })) this.#settle(request, false);
    });
  }

  /** Tells the supervisor this worker serves, and at which addresses. */
  ready(addresses: WorkerAddresses): void {
    this.#send({ type: "fs:ready", addresses });
  }

  close(): void {
    this.#flush();
    this.#reportActivity();
    clearInterval(this.#activityTimer);
    process.off("message", this.#onMessage);
    for (const request of [...this.#routes.keys()]) this.#settle(request, false);
  }

  #handle(m: SupervisorToWorker): void {
    switch (m.type) {
      case "fs:wake":
        this.#send({ type: "fs:woken", request: m.request, held: this.#opts.wake(m.clientId, m.message, m.counted === true) });
        return;
      case "fs:routed":
        this.#settle(m.request, m.held);
        return;
      case "fs:unknown-notification":
        this.#opts.unknownNotification();
        return;
      case "fs:stop-accepting":
        this.#opts.stopAccepting();
        this.#send({ type: "fs:not-accepting" });
        return;
    }
  }

  #flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#opened.length === 0 && this.#closed.length === 0) return;
    this.#send({ type: "fs:streams", opened: this.#opened, closed: this.#closed, held: this.#opts.held() });
    this.#opened = [];
    this.#closed = [];
  }

  #reportActivity(): void {
    const now = countsOf(this.#opts.activity);
    const counts = countsSince(now, this.#reported);
    this.#reported = now;
    this.#send({ type: "fs:activity", counts });
  }

  #settle(request: number, held: boolean): void {
    const r = this.#routes.get(request);
    if (!r) return;
    this.#routes.delete(request);
    clearTimeout(r.timer);
    r.resolve(held);
  }

  #send(m: WorkerToSupervisor): boolean {
    if (!process.connected || !process.send) return false;
    try {
      // With a callback, a channel that fails later (the supervisor gone) is not an unhandled
      // 'error' event; node:cluster ends a worker whose supervisor is gone.
      process.send(m, undefined, {}, () => {});
      return true;
    } catch {
      return false;
    }
  }
}
