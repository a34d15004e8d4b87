// The service manager: installs the server-side services named in the services config and hands
// them the messages clients send, as Fleetspeak's internal/services/manager.go does. New messages
// are processed at once under a 30 s budget and then stored with their outcome; what could not be
// processed yet (temporary error, overload, timeout) is stored pending and retried by the backlog
// loop, minutes later, until it succeeds or fails for good. Delivery is at-least-once.
import { setMaxListeners } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { whenAborted } from "../../common/abort-listeners.js";
import { bytesToHex } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import { type Message, type MessageResult, MessageResultSchema } from "../../gen/fleetspeak/common_pb.js";
import type { ServerConfig } from "../../gen/fleetspeak_server/server_pb.js";
import type { ServiceConfig } from "../../gen/fleetspeak_server/services_pb.js";
import { StoreUnavailableError } from "../store/errors.js";
import type { ClientData, Store } from "../store/store.js";
import { retryWhileStoreUnavailable, type StoreRetry } from "../store/store-retry.js";
import { AckApplier } from "./acks.js";
import { type Service, type ServiceContext, type ServiceFactory, TemporaryError } from "./service.js";
import { defaultServiceFactories } from "./service-factories.js";
import { SYSTEM_SERVICE_NAME, SystemService, type SystemServiceHooks } from "./system-service.js";

/** Longest failure reason stored with a message (Fleetspeak's MaxServiceFailureReasonLength). */
export const MAX_FAILURE_REASON_LENGTH = 900;
const DEFAULT_MAX_PARALLELISM = 100;
/** Messages from one contact are processed in chunks of this many, in message-ID order. */
const CHUNK_SIZE = 10;
/** "Overloaded" and "temporary error" warnings: at most one per service this often. */
const WARN_INTERVAL_MS = 10_000;

export interface ProcessingObserver {
  processed?(m: Message, seconds: number, firstTry: boolean): void;
  errored?(m: Message, seconds: number, temporary: boolean, firstTry: boolean): void;
  /** Not handed to its service: too many in flight already; retried later. */
  dropped?(m: Message, firstTry: boolean): void;
}

export interface ServiceManagerOptions {
  store: Store;
  logger: Logger;
  /** The source client's record, for is_blocklisted_source; the caller supplies a cached lookup. */
  lookupClient(id: Uint8Array): Promise<ClientData | undefined>;
  /** Forget cached data about a client (its labels changed). */
  invalidateClient?(id: Uint8Array): void;
  /** Factory name → factory. Default: GRPC, NOOP (and CPS, refused). */
  factories?: Record<string, ServiceFactory>;
  systemHooks?: SystemServiceHooks;
  /** Told how each message went (metrics). firstTry: a new message, not one from the backlog. */
  observer?: ProcessingObserver;
  /** Budget for processing one chunk or backlog batch. Fleetspeak: 30 s. */
  processTimeoutMs?: number;
  /** How often the backlog looks for due messages when there were none. Fleetspeak: 300 ms. */
  backlogPollMs?: number;
  /** Messages claimed per backlog batch. Fleetspeak: 10. */
  backlogBatchSize?: number;
  /** Backlog batches processed at once. */
  backlogMaxInFlight?: number;
  /** Base of the retry schedule: due again after base × 1.1^n × (1 + rand). Fleetspeak: 1 min. */
  retryBaseMs?: number;
  /** After the budget, how long a service may take to give its verdict before it is given up on. */
  verdictGraceMs?: number;
  /** Longest pause of the backlog loop while the database is unreachable. */
  backlogMaxBackoffMs?: number;
}

interface LiveService {
  name: string;
  service: Service;
  maxParallelism: number;
  inFlight: number;
  lastWarnMs: number;
}

export class ServiceManager {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #lookupClient: (id: Uint8Array) => Promise<ClientData | undefined>;
  readonly #invalidateClient: (id: Uint8Array) => void;
  readonly #factories: Record<string, ServiceFactory>;
  readonly #processTimeoutMs: number;
  readonly #pollMs: number;
  readonly #batchSize: number;
  readonly #maxInFlight: number;
  readonly #retryBaseMs: number;
  readonly #maxBackoffMs: number;
  readonly #verdictGraceMs: number;
  readonly #services = new Map<string, LiveService>();
  readonly #observer: ProcessingObserver | undefined;
  readonly #acks: AckApplier;
  readonly #batches = new Set<Promise<void>>();
  readonly #stopping = new AbortController();
  #loop: Promise<void> | undefined;

  constructor(opts: ServiceManagerOptions) {
    this.#store = opts.store;
    this.#log = opts.logger;
    this.#lookupClient = opts.lookupClient;
    this.#observer = opts.observer;
    this.#invalidateClient = opts.invalidateClient ?? (() => {});
    this.#factories = opts.factories ?? defaultServiceFactories();
    this.#processTimeoutMs = opts.processTimeoutMs ?? 30_000;
    this.#pollMs = opts.backlogPollMs ?? 300;
    this.#batchSize = opts.backlogBatchSize ?? 10;
    this.#maxInFlight = opts.backlogMaxInFlight ?? 4;
    this.#retryBaseMs = opts.retryBaseMs ?? 60_000;
    this.#maxBackoffMs = opts.backlogMaxBackoffMs ?? 10_000;
    this.#verdictGraceMs = opts.verdictGraceMs ?? 1000;
    this.#acks = new AckApplier({
      store: opts.store,
      ...(opts.systemHooks?.onMessagesAcked ? { onMessagesAcked: opts.systemHooks.onMessagesAcked } : {}),
    });
    this.#services.set(SYSTEM_SERVICE_NAME, {
      name: SYSTEM_SERVICE_NAME,
      service: new SystemService(this.#context(SYSTEM_SERVICE_NAME), opts.systemHooks),
      maxParallelism: DEFAULT_MAX_PARALLELISM,
      inFlight: 0,
      lastWarnMs: Number.NEGATIVE_INFINITY,
    });
  }

  /** Installs every service of a services config, in order. Any failure aborts startup. */
  async install(config: ServerConfig): Promise<void> {
    for (const cfg of config.services) await this.installService(cfg);
  }

  /** Installs one service; a service of the same name installed earlier is replaced. */
  async installService(cfg: ServiceConfig): Promise<void> {
    const factory = Object.hasOwn(this.#factories, cfg.factory) ? this.#factories[cfg.factory] : undefined;
    if (!factory) {
      throw new Error(
        `unable to find factory [${cfg.factory}] for service [${cfg.name}]; known factories: ${Object.keys(this.#factories).join(", ")}`,
      );
    }
    if (cfg.name === "" || cfg.name === SYSTEM_SERVICE_NAME || cfg.name === "client") {
      throw new Error(`illegal service name [${cfg.name}]: "", "system" and "client" are reserved`);
    }
    const service = await factory(cfg, this.#context(cfg.name));
    const previous = this.#services.get(cfg.name);
    this.#services.set(cfg.name, {
      name: cfg.name,
      service,
      maxParallelism: cfg.maxParallelism === 0 ? DEFAULT_MAX_PARALLELISM : cfg.maxParallelism,
      inFlight: 0,
      lastWarnMs: Number.NEGATIVE_INFINITY,
    });
    if (previous) {
      this.#log.warn({ service: cfg.name }, "service configured twice; the later entry replaces the earlier one");
      await this.#stopService(previous);
    }
    this.#log.info({ service: cfg.name, factory: cfg.factory }, `installed ${cfg.name} service`);
  }

  /** Names of the installed services, "system" included. */
  serviceNames(): string[] {
    return [...this.#services.keys()];
  }

  /**
   * Processes messages that a client just sent (destination: a server service) and stores them
   * with their outcome, linked to the contact; MessageAcks applied in full are the exception, they
   * are applied and not stored (acks.ts). Messages are modified in place: creation_time set,
   * result recorded, payload dropped once processed. Throws when they could not be stored; then
   * the client must send them again (storing them twice is harmless: same IDs, merge rules).
   */
  async handleClientMessages(msgs: Message[], contactId?: string, retry?: StoreRetry): Promise<void> {
    for (const m of msgs) {
      if (m.destination?.clientId.length !== 0) {
        throw new Error(`message ${bytesToHex(m.messageId)} is not addressed to a server service`);
      }
    }
    // MessageAcks first, in bulk with other streams' acks (see acks.ts); what they leave over
    // goes the usual way.
    const started = performance.now();
    // With `retry`, only the database steps are repeated while the database is away: a message
    // handed to its service once is not handed over again for every attempt to store it.
    const stored = <T>(step: () => Promise<T>): Promise<T> => (retry ? retryWhileStoreUnavailable(step, retry) : step());
    const rest = await stored(() => this.#acks.applyFrom(msgs));
    if (rest.length < msgs.length) {
      const seconds = (performance.now() - started) / 1000;
      const kept = new Set(rest);
      for (const m of msgs) {
        if (kept.has(m)) continue;
        m.result = create(MessageResultSchema, { processedTime: timestampNow() });
        this.#observer?.processed?.(m, seconds, true);
      }
    }
    const sorted = rest.sort((a, b) => Buffer.compare(a.messageId, b.messageId));
    for (let i = 0; i < sorted.length; i += CHUNK_SIZE) {
      const chunk = sorted.slice(i, i + CHUNK_SIZE);
      const now = timestampNow();
      for (const m of chunk) m.creationTime = now;
      await this.#processAll(chunk, true, true);
      await stored(() => this.#store.storeMessages(chunk, { contactId, serverDueMs: this.#retryTime(0) }));
    }
  }

  /** Starts the backlog loop, which retries stored server messages when they fall due. */
  start(): void {
    if (this.#loop || this.#stopping.signal.aborted) return;
    this.#loop = this.#backlogLoop();
  }

  /**
   * Stops the backlog loop (waiting for running batches) and every service. Messages still being
   * processed are given up on for now (stored pending); the manager cannot be started again.
   */
  async stop(): Promise<void> {
    this.#stopping.abort();
    await this.#loop;
    this.#loop = undefined;
    await Promise.all(this.#batches);
    for (const live of this.#services.values()) await this.#stopService(live);
  }

  #context(name: string): ServiceContext {
    return {
      store: this.#store,
      logger: this.#log.child({ service: name }),
      invalidateClient: (id) => this.#invalidateClient(id),
    };
  }

  async #stopService(live: LiveService): Promise<void> {
    try {
      await live.service.stop();
    } catch (err) {
      this.#log.error({ service: live.name, err: (err as Error).message }, "error shutting down service");
    }
  }

  /** Fleetspeak's ServerRetryTime(n): now + base × 1.1^n × (1 + U[0,1)). */
  #retryTime(n: number): number {
    return Date.now() + this.#retryBaseMs * 1.1 ** n * (1 + Math.random());
  }

  /**
   * Runs every message through its service in parallel under one budget, setting `result` on
   * those that got one (processed, or failed for good). `dropData` drops the payload of those.
   */
  async #processAll(msgs: Message[], dropData: boolean, firstTry: boolean): Promise<void> {
    // Not AbortSignal.any([AbortSignal.timeout(…), …]): in Node 20 the timeout signal inside it
    // can be garbage-collected before it fires, and then the budget never ends (seen under load:
    // a GRPC service retrying a down Processor forever). A timer and a controller we hold do.
    const controller = new AbortController();
    const budget = controller.signal;
    // Every message of the batch, and each service's calls, listen on this one signal.
    setMaxListeners(0, budget);
    const timer = setTimeout(
      () => controller.abort(new DOMException("processing budget exhausted", "TimeoutError")),
      this.#processTimeoutMs,
    );
    const stop = this.#stopping.signal;
    const onStop = () => controller.abort(stop.reason);
    if (stop.aborted) onStop();
    else stop.addEventListener("abort", onStop, { once: true });
    try {
      await this.#processEach(msgs, dropData, budget, firstTry);
    } finally {
      clearTimeout(timer);
      stop.removeEventListener("abort", onStop);
    }
  }

  async #processEach(msgs: Message[], dropData: boolean, budget: AbortSignal, firstTry: boolean): Promise<void> {
    await Promise.all(
      msgs.map(async (m) => {
        const name = m.destination?.serviceName ?? "";
        const live = this.#services.get(name);
        if (!live) this.#log.warn({ message: bytesToHex(m.messageId), service: name }, "message for unknown service");
        const result = live
          ? await this.#processOne(live, m, budget, firstTry)
          : failedResult(`unknown service "${name}"`);
        if (result) {
          m.result = result;
          if (dropData) m.data = undefined;
        }
      }),
    );
  }

  /** Undefined: no result yet, retry later. */
  async #processOne(
    live: LiveService,
    m: Message,
    budget: AbortSignal,
    firstTry: boolean,
  ): Promise<MessageResult | undefined> {
    const observer = this.#observer;
    if (live.inFlight >= live.maxParallelism) {
      observer?.dropped?.(m, firstTry);
      this.#warnLimited(live, { max: live.maxParallelism }, "overloaded with concurrent messages, dropping excess, will retry");
      return undefined;
    }
    live.inFlight++;
    const started = performance.now();
    let call: Promise<void> | undefined;
    try {
      const source = m.source?.clientId;
      if (source && source.length > 0) {
        try {
          m.isBlocklistedSource = (await this.#lookupClient(source))?.blacklisted ?? false;
        } catch (err) {
          throw new TemporaryError(`cannot look up the source client: ${errorText(err)}`, { cause: err });
        }
      }
      call = live.service.processMessage(m, budget);
      await settleWithinBudget(call, budget, this.#verdictGraceMs);
      observer?.processed?.(m, (performance.now() - started) / 1000, firstTry);
      return create(MessageResultSchema, { processedTime: timestampNow() });
    } catch (err) {
      const temporary = isTemporary(err, budget);
      observer?.errored?.(m, (performance.now() - started) / 1000, temporary, firstTry);
      if (temporary) {
        this.#warnLimited(
          live,
          { message: bytesToHex(m.messageId), err: errorText(err) },
          "temporary error processing message, will retry",
        );
        return undefined;
      }
      const reason = errorText(err);
      this.#log.warn(
        { service: live.name, message: bytesToHex(m.messageId), err: reason },
        "permanent error processing message, giving up",
      );
      return failedResult(reason);
    } finally {
      // The service keeps its parallelism slot until it really finishes, even when the budget ran
      // out and this message was given up on for now.
      const release = () => {
        live.inFlight--;
      };
      if (call) call.then(release, release);
      else release();
    }
  }

  #warnLimited(live: LiveService, fields: object, text: string): void {
    const now = Date.now();
    if (now - live.lastWarnMs < WARN_INTERVAL_MS) return;
    live.lastWarnMs = now;
    this.#log.warn({ service: live.name, ...fields }, `${live.name}: ${text} (similar warnings suppressed for 10 s)`);
  }

  async #backlogLoop(): Promise<void> {
    const stop = this.#stopping.signal;
    let failures = 0;
    while (!stop.aborted) {
      if (this.#batches.size >= this.#maxInFlight) {
        await Promise.race([...this.#batches]);
        continue;
      }
      let batch: Message[];
      try {
        batch = await this.#store.claimServerMessages(this.#batchSize, (n) => this.#retryTime(n));
        if (failures > 0) {
          this.#log.info({ failedAttempts: failures }, "service backlog: database reachable again");
          failures = 0;
        }
      } catch (err) {
        failures++;
        if (failures === 1) {
          this.#log.warn(
            { err: errorText(err), unavailable: err instanceof StoreUnavailableError },
            "service backlog: cannot claim due messages; retrying with back-off until the database answers",
          );
        }
        await pause(Math.min(this.#pollMs * 2 ** failures, this.#maxBackoffMs), stop);
        continue;
      }
      if (batch.length > 0) {
        const running: Promise<void> = this.#processBacklog(batch).finally(() => this.#batches.delete(running));
        this.#batches.add(running);
      }
      if (batch.length < this.#batchSize) await pause(this.#pollMs, stop);
    }
  }

  /** A claimed batch: process, then store the outcome of those that got one. Never throws. */
  async #processBacklog(batch: Message[]): Promise<void> {
    try {
      await this.#processAll(batch, false, false);
      const done = batch.filter((m) => m.result);
      if (done.length > 0) await this.#store.storeMessages(done);
    } catch (err) {
      // The claim already moved these messages' schedule on; they come back then.
      this.#log.error({ count: batch.length, err: errorText(err) }, "service backlog: error saving results, will retry");
    }
  }
}

function failedResult(reason: string): MessageResult {
  const failedReason =
    reason.length > MAX_FAILURE_REASON_LENGTH ? `${reason.slice(0, MAX_FAILURE_REASON_LENGTH - 3)}...` : reason;
  return create(MessageResultSchema, { processedTime: timestampNow(), failed: true, failedReason });
}

/** The budget ran out and the service had not answered even after the grace period. */
class BudgetExpiredError extends Error {
  override readonly name = "BudgetExpiredError";
}

/** Like Go's timeout errors, an abort caused by the budget itself counts as temporary. */
function isTemporary(err: unknown, budget: AbortSignal): boolean {
  return (
    err instanceof TemporaryError ||
    err instanceof StoreUnavailableError ||
    err instanceof BudgetExpiredError ||
    (budget.aborted && err === budget.reason) ||
    (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError"))
  );
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Waits for the service's answer. When the budget runs out the service is told (the signal) and
 * gets `graceMs` to give its verdict (the GRPC service then classifies its last error, as
 * Fleetspeak's does); a service that still has not answered is given up on for now.
 */
function settleWithinBudget(call: Promise<void>, budget: AbortSignal, graceMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      timer = setTimeout(() => reject(new BudgetExpiredError("processing budget exhausted")), graceMs);
    };
    let stopListening = () => {};
    if (budget.aborted) onAbort();
    else stopListening = whenAborted(budget, onAbort);
    call.then(
      () => {
        clearTimeout(timer);
        stopListening();
        resolve();
      },
      (e: unknown) => {
        clearTimeout(timer);
        stopListening();
        reject(e);
      },
    );
  });
}

/** Sleeps, returning early (without error) when the signal aborts. */
async function pause(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch {
    // Stopping.
  }
}
