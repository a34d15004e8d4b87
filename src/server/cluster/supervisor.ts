// The process that was started, when a server runs several worker processes (node:cluster): it
// forks them, restarts one that dies (after a back-off, so a worker that cannot start does not
// spin), stops them all on SIGTERM (each drains its streams with done_sending), and routes a
// notification to the worker holding the client's stream. It holds no client connection itself:
// node:cluster's primary accepts connections on the shared listen ports and hands each to a
// worker in turn.
import cluster, { type Worker } from "node:cluster";
import { bytesToHex } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { ActivityCounts } from "../observe/activity.js";
import {
  isWorkerMessage,
  STREAMING_ADDRESS_ENV,
  WORKER_INDEX_ENV,
  type SupervisorToWorker,
  type WorkerAddresses,
  type WorkerToSupervisor,
} from "./messages.js";
import { StreamDirectory } from "./stream-directory.js";

export interface SupervisorOptions {
  workers: number;
  /** Recorded as last_contact_streaming_to for every stream of every worker. */
  streamingAddress: string;
  logger: Logger;
  /** A worker's activity since its last report (for the server's heartbeat). */
  onActivity?: (counts: ActivityCounts) => void;
  /** Back-off before a dead worker is started again: doubles from min to max while workers die young. */
  restartDelayMs?: { min: number; max: number };
  /** How long stop() waits for the workers to drain and exit before it kills them. Default 32 s. */
  stopTimeoutMs?: number;
  /** How long a worker may take to answer a wake request. Default 2 s. */
  wakeTimeoutMs?: number;
}

/** A worker could not start; the message is its own (the supervisor prints it once, not once per worker). */
export class WorkerStartError extends Error {}

/** One place in the pool of workers; the worker in it changes when it is restarted. */
interface Slot {
  index: number;
  worker?: Worker;
  startedMs: number;
  delayMs: number;
  timer?: NodeJS.Timeout;
  ready: boolean;
  /** Resolved when its worker says it closed its client listener. */
  notAccepting?: () => void;
  /** Why its worker could not start, as it said. */
  failure?: string;
}

/** A worker that lived longer than this before dying is restarted after the shortest delay. */
const STABLE_AFTER_MS = 10_000;

export class Supervisor {
  readonly directory = new StreamDirectory();
  readonly #opts: SupervisorOptions;
  readonly #slots: Slot[] = [];
  readonly #byId = new Map<number, Slot>();
  readonly #pending = new Map<number, { worker: number; resolve: (held: boolean) => void; timer: NodeJS.Timeout }>();
  #nextRequest = 1;
  #stopping = false;
  #starting: { resolve: () => void; reject: (e: Error) => void } | undefined;
  #addresses: WorkerAddresses = {};
  restarts = 0;

  constructor(opts: SupervisorOptions) {
    this.#opts = opts;
  }

  /** Forks every worker; resolves with what they serve once all have started. */
  async start(): Promise<WorkerAddresses> {
    cluster.setupPrimary({ serialization: "advanced" });
    const started = new Promise<void>((resolve, reject) => {
      this.#starting = { resolve, reject };
    });
    for (let i = 0; i < this.#opts.workers; i++) {
      const slot: Slot = { index: i + 1, startedMs: 0, delayMs: this.#opts.restartDelayMs?.min ?? 500, ready: false };
      this.#slots.push(slot);
      this.#fork(slot);
    }
    try {
      await started;
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.#starting = undefined;
    return this.#addresses;
  }

  /** Workers running now. */
  get liveWorkers(): number {
    return this.#byId.size;
  }

  /** Streams held by all workers. */
  get streams(): number {
    return this.directory.total;
  }

  /**
   * Wakes the client's stream in whichever worker holds it (the one the directory names first,
   * then every other); resolves whether one did. `from` is a worker that already looked.
   */
  async route(clientId: Uint8Array, message: Message | undefined, from?: number, counted = false): Promise<boolean> {
    const first = this.directory.lookup(bytesToHex(clientId));
    if (first !== undefined && first !== from && this.#byId.has(first)) {
      if (await this.#wake(first, clientId, message, counted)) return true;
    }
    const others = [...this.#byId.keys()].filter((w) => w !== first && w !== from);
    const answers = await Promise.all(others.map((w) => this.#wake(w, clientId, message, counted)));
    return answers.includes(true);
  }

  /** Tells one worker to count a notification for a client no worker holds (metrics). */
  countUnknownNotification(): void {
    const [worker] = this.#byId.values();
    this.#send(worker?.worker, { type: "fs:unknown-notification" });
  }

  /**
   * Every worker closes its client listener (so the shared port closes and clients told
   * done_sending go to another server), then gets SIGTERM (each drains its streams); SIGKILL to
   * those still running after the timeout.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#stopAccepting();
    const exits: Array<Promise<void>> = [];
    for (const slot of this.#slots) {
      clearTimeout(slot.timer);
      const w = slot.worker;
      if (!w || w.isDead()) continue;
      exits.push(new Promise<void>((resolve) => w.once("exit", () => resolve())));
      w.process.kill("SIGTERM");
    }
    const timeoutMs = this.#opts.stopTimeoutMs ?? 32_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    });
    if (await Promise.race([Promise.all(exits).then(() => false), timedOut])) {
      this.#opts.logger.warn(`worker processes still running ${timeoutMs} ms after SIGTERM; killing them`);
      for (const slot of this.#slots) if (slot.worker && !slot.worker.isDead()) slot.worker.process.kill("SIGKILL");
      await Promise.all(exits);
    }
    clearTimeout(timer);
  }

  /** Asks every worker to close its client listener; waits for their answers (at most 5 s). */
  async #stopAccepting(): Promise<void> {
    const answers = this.#slots.map(
      (slot) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 5_000);
          slot.notAccepting = () => {
            clearTimeout(timer);
            resolve();
          };
          if (!slot.worker || !this.#send(slot.worker, { type: "fs:stop-accepting" }, () => slot.notAccepting?.())) slot.notAccepting();
        }),
    );
    await Promise.all(answers);
  }

  #fork(slot: Slot): void {
    slot.timer = undefined;
    slot.ready = false;
    slot.startedMs = Date.now();
    const worker = cluster.fork({ [STREAMING_ADDRESS_ENV]: this.#opts.streamingAddress, [WORKER_INDEX_ENV]: String(slot.index) });
    slot.worker = worker;
    this.#byId.set(worker.id, slot);
    worker.on("message", (m: unknown) => {
      if (isWorkerMessage(m)) this.#onMessage(slot, worker, m);
    });
    worker.on("exit", (code, signal) => this.#onExit(slot, worker, code, signal));
    // The channel to a worker that died fails (EPIPE, ERR_IPC_CHANNEL_CLOSED); its exit is what counts.
    worker.on("error", (e: Error) => this.#opts.logger.debug({ worker: slot.index, err: e.message }, "channel to a worker process failed"));
  }

  #onMessage(slot: Slot, worker: Worker, m: WorkerToSupervisor): void {
    switch (m.type) {
      case "fs:ready":
        slot.ready = true;
        this.#addresses = m.addresses;
        if (this.#starting) {
          if (this.#slots.every((s) => s.ready)) this.#starting.resolve();
        } else {
          this.#opts.logger.info({ worker: slot.index, pid: worker.process.pid }, "worker process restarted");
        }
        return;
      case "fs:streams":
        this.directory.report(worker.id, m.opened, m.closed, m.held);
        return;
      case "fs:route":
        void this.route(m.clientId, m.message, worker.id).then((held) =>
          this.#send(worker, { type: "fs:routed", request: m.request, held }),
        );
        return;
      case "fs:woken": {
        const p = this.#pending.get(m.request);
        if (p) this.#settle(m.request, m.held);
        return;
      }
      case "fs:activity":
        this.#opts.onActivity?.(m.counts);
        return;
      case "fs:failed":
        slot.failure = m.message;
        return;
      case "fs:not-accepting":
        slot.notAccepting?.();
        return;
    }
  }

  #onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    this.#byId.delete(worker.id);
    this.directory.forget(worker.id);
    for (const [request, p] of this.#pending) if (p.worker === worker.id) this.#settle(request, false);
    if (this.#stopping || slot.worker !== worker) return;
    slot.worker = undefined;
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (this.#starting) {
      this.#starting.reject(new WorkerStartError(slot.failure ?? `worker process ${slot.index} exited with ${how} before it started`));
      return;
    }
    const { min, max } = this.#opts.restartDelayMs ?? { min: 500, max: 30_000 };
    slot.delayMs = Date.now() - slot.startedMs > STABLE_AFTER_MS ? min : Math.min(max, slot.delayMs * 2);
    this.restarts++;
    this.#opts.logger.warn(
      { worker: slot.index, pid: worker.process.pid, exit: how, restartInMs: slot.delayMs },
      `worker process ${slot.index} exited with ${how}; its clients reconnect to the other workers; restarting it in ${slot.delayMs} ms`,
    );
    slot.timer = setTimeout(() => this.#fork(slot), slot.delayMs);
  }

  #wake(workerId: number, clientId: Uint8Array, message: Message | undefined, counted: boolean): Promise<boolean> {
    const worker = this.#byId.get(workerId)?.worker;
    if (!worker) return Promise.resolve(false);
    const request = this.#nextRequest++;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => this.#settle(request, false), this.#opts.wakeTimeoutMs ?? 2_000);
      this.#pending.set(request, { worker: workerId, resolve, timer });
      const sent = this.#send(
        worker,
        { type: "fs:wake", request, clientId, ...(message ? { message } : {}), ...(counted ? { counted } : {}) },
        () => this.#settle(request, false),
      );
      if (!sent) this.#settle(request, false);
    });
  }

  #settle(request: number, held: boolean): void {
    const p = this.#pending.get(request);
    if (!p) return;
    this.#pending.delete(request);
    clearTimeout(p.timer);
    p.resolve(held);
  }

  /**
   * Sends a message to a worker; false when it cannot be sent now. A worker that dies as it is
   * sent fails later (EPIPE): `onLost` is called then. Without the callback Node would emit that
   * failure as an 'error' event on the worker and, unhandled, end the supervisor.
   */
  #send(worker: Worker | undefined, m: SupervisorToWorker, onLost?: () => void): boolean {
    if (!worker?.isConnected()) return false;
    try {
      worker.send(m, (err: Error | null) => {
        if (err) onLost?.();
      });
      return true;
    } catch {
      return false;
    }
  }
}
