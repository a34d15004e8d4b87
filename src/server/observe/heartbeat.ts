// Every server process, frontend or admin, writes one row about itself to the datastore every few
// seconds (server_heartbeats): who it is, where it listens, and what it measured over the last
// minutes. The operator console of any admin server reads these rows to show every server of the
// deployment, and which one is unhealthy, without reaching the servers themselves. A row is one
// small REPLACE per interval, so its cost does not grow with the fleet.
import { hostname } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "../../common/log.js";
import type { Store } from "../store/store.js";
import type { Activity } from "./activity.js";

/** One interval of a server's life. Rates are per second over the interval. */
export interface HeartbeatSample {
  /** End of the interval, ms. */
  t: number;
  /** Client streams open at that moment. */
  streams: number;
  /** Messages received from clients per second. */
  inPerS: number;
  /** Messages written to clients per second. */
  outPerS: number;
  /** Notifications to frontends during the interval, by outcome. */
  notifyOk: number;
  notifyFailed: number;
  /** Event-loop delay over the interval, 99th percentile and maximum, ms. */
  lagP99Ms: number;
  lagMaxMs: number;
}

export interface ServiceRates {
  name: string;
  inPerS: number;
  outPerS: number;
  errorsPerS: number;
  /** Totals since the process started. */
  received: number;
  sent: number;
  errors: number;
}

/** What a server writes into its heartbeat row (JSON). */
export interface HeartbeatReport {
  host: string;
  pid: number;
  startedMs: number;
  /** Set in the last heartbeat of a process that stopped cleanly. */
  stoppedMs?: number;
  intervalMs: number;
  /** Bound addresses of what this process runs. */
  frontend?: string;
  admin?: string;
  console?: string;
  /**
   * What clients streaming to this process have in last_contact_streaming_to: its notification
   * address, or "local" when no other server can notify it.
   */
  streamingTo?: string;
  /** With worker_notification_port: what the streams of each worker process record instead. */
  workersStreamingTo?: string[];
  /** Oldest first. */
  samples: HeartbeatSample[];
  services: ServiceRates[];
}

export interface HeartbeatIdentity {
  frontend?: string;
  admin?: string;
  console?: string;
  streamingTo?: string;
  workersStreamingTo?: string[];
}

export interface HeartbeatOptions {
  store: Store;
  activity: Activity;
  connectedStreams: () => number;
  identity: HeartbeatIdentity;
  logger: Logger;
  /** Default 10 s. */
  intervalMs?: number;
  /** Samples kept in the row. Default 60 (ten minutes at the default interval). */
  keep?: number;
}

/** Heartbeats older than this are deleted when a server starts. */
const FORGET_AFTER_MS = 7 * 24 * 3600 * 1000;
/** Event-loop delay sampling; each sample includes this interval, which is taken off. */
const LAG_RESOLUTION_MS = 10;
/** How long stop() waits for the last heartbeat to be written. */
const LAST_WRITE_TIMEOUT_MS = 2000;

/**
 * This process's server ID: the host name and the port of its first listener, stable across
 * restarts with the same config (so a restart updates its row instead of leaving a dead one).
 */
export function serverIdOf(identity: HeartbeatIdentity, host = hostname()): string {
  const address = identity.frontend ?? identity.admin ?? identity.console ?? "";
  const port = address.slice(address.lastIndexOf(":") + 1);
  return port === "" ? host : `${host}:${port}`;
}

/** Parses a row's report; undefined when it is not one of ours. */
export function parseHeartbeatReport(text: string): HeartbeatReport | undefined {
  try {
    const r = JSON.parse(text) as HeartbeatReport;
    return typeof r === "object" && r !== null && Array.isArray(r.samples) && Array.isArray(r.services) ? r : undefined;
  } catch {
    return undefined;
  }
}

/** Every address a server's streams record as last_contact_streaming_to (its own, its workers'). */
export function streamingAddressesOf(report: HeartbeatReport | undefined): string[] {
  if (!report) return [];
  const workers = Array.isArray(report.workersStreamingTo) ? report.workersStreamingTo.filter((a) => typeof a === "string") : [];
  return report.streamingTo ? [report.streamingTo, ...workers] : workers;
}

export class HeartbeatWriter {
  readonly serverId: string;
  readonly #opts: HeartbeatOptions;
  readonly #intervalMs: number;
  readonly #keep: number;
  readonly #startedMs = Date.now();
  readonly #lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  readonly #samples: HeartbeatSample[] = [];
  #last = { t: Date.now(), received: 0, sent: 0, ok: 0, failed: 0, services: new Map<string, [number, number, number]>() };
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  #failing = false;

  constructor(opts: HeartbeatOptions) {
    this.#opts = opts;
    this.#intervalMs = opts.intervalMs ?? 10_000;
    this.#keep = opts.keep ?? 60;
    this.serverId = serverIdOf(opts.identity);
  }

  /** Writes the first heartbeat at once (the server shows up immediately), then one per interval. */
  async start(): Promise<void> {
    this.#lag.enable();
    try {
      await this.#opts.store.pruneServerHeartbeats(Date.now() - FORGET_AFTER_MS);
    } catch (e) {
      this.#opts.logger.warn({ err: (e as Error).message }, "cannot delete old server heartbeats");
    }
    await this.#beat();
    this.#timer = setInterval(() => void this.#beat(), this.#intervalMs);
    this.#timer.unref();
  }

  /** Writes a last heartbeat saying the process stopped (waiting a bounded time for it). */
  async stop(): Promise<void> {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    const last = this.#beat(Date.now());
    await Promise.race([last, new Promise((r) => setTimeout(r, LAST_WRITE_TIMEOUT_MS).unref())]);
    this.#lag.disable();
  }

  /** One sample, and the row rewritten; writes never overlap, and a failed one is logged once. */
  #beat(stoppedMs?: number): Promise<void> {
    const report = this.#report(stoppedMs);
    this.#writing = this.#writing.then(async () => {
      try {
        await this.#opts.store.recordServerHeartbeat({
          serverId: this.serverId,
          timeMs: Date.now(),
          report: JSON.stringify(report),
        });
        if (this.#failing) this.#opts.logger.info("server heartbeat written again");
        this.#failing = false;
      } catch (e) {
        if (!this.#failing) this.#opts.logger.warn({ err: (e as Error).message }, "cannot write the server heartbeat");
        this.#failing = true;
      }
    });
    return this.#writing;
  }

  #report(stoppedMs: number | undefined): HeartbeatReport {
    const a = this.#opts.activity;
    const now = Date.now();
    const seconds = Math.max(0.001, (now - this.#last.t) / 1000);
    const rate = (n: number) => Math.round((n / seconds) * 100) / 100;
    this.#samples.push({
      t: now,
      streams: this.#opts.connectedStreams(),
      inPerS: rate(a.received - this.#last.received),
      outPerS: rate(a.sent - this.#last.sent),
      notifyOk: a.notificationsOk - this.#last.ok,
      notifyFailed: a.notificationsFailed - this.#last.failed,
      lagP99Ms: lagMs(this.#lag.percentile(99)),
      lagMaxMs: lagMs(this.#lag.max),
    });
    this.#lag.reset();
    if (this.#samples.length > this.#keep) this.#samples.splice(0, this.#samples.length - this.#keep);
    const services: ServiceRates[] = [];
    const totals = new Map<string, [number, number, number]>();
    for (const [name, s] of a.services()) {
      const [r0, s0, e0] = this.#last.services.get(name) ?? [0, 0, 0];
      services.push({
        name,
        inPerS: rate(s.received - r0),
        outPerS: rate(s.sent - s0),
        errorsPerS: rate(s.errors - e0),
        received: s.received,
        sent: s.sent,
        errors: s.errors,
      });
      totals.set(name, [s.received, s.sent, s.errors]);
    }
    this.#last = { t: now, received: a.received, sent: a.sent, ok: a.notificationsOk, failed: a.notificationsFailed, services: totals };
    const id = this.#opts.identity;
    return {
      host: hostname(),
      pid: process.pid,
      startedMs: this.#startedMs,
      ...(stoppedMs !== undefined ? { stoppedMs } : {}),
      intervalMs: this.#intervalMs,
      ...(id.frontend ? { frontend: id.frontend } : {}),
      ...(id.admin ? { admin: id.admin } : {}),
      ...(id.console ? { console: id.console } : {}),
      ...(id.streamingTo ? { streamingTo: id.streamingTo } : {}),
      ...(id.workersStreamingTo?.length ? { workersStreamingTo: id.workersStreamingTo } : {}),
      samples: [...this.#samples],
      services,
    };
  }
}

/** A sample of the delay histogram (ns, sampling interval included) as the delay beyond it, ms. */
function lagMs(ns: number): number {
  return Number.isFinite(ns) ? Math.max(0, Math.round(ns / 1e4) / 100 - LAG_RESOLUTION_MS) : 0;
}
