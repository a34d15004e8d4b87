// Resource usage of a process (the client itself, a daemon, a socket peer), sampled from /proc on
// Fleetspeak's schedule — after 1 s, then intervals doubling up to the sample period — and sent
// to the server as `ResourceUsage` reports of `sample_size` samples. Also enforces a daemon's
// memory limit on every sample.
import { create } from "@bufbuild/protobuf";
import { type Any, anyPack, timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
// The callback API, promisified: node:fs/promises would load Node's readline and more into every
// client (the single executable's idle RSS, bench/RESULTS.md shipping).
import { readdir as readdirCb, readFile as readFileCb } from "node:fs";
import { promisify } from "node:util";
import type { Logger } from "../../common/log.js";
import { AddressSchema, Message_Priority, MessageSchema } from "../../gen/fleetspeak/common_pb.js";
import {
  type AggregatedResourceUsage,
  AggregatedResourceUsageSchema,
  ResourceUsageDataSchema,
} from "../../gen/fleetspeak_monitoring/resource_pb.js";
import type { ServiceContext } from "./service.js";

const readFile = promisify(readFileCb);
const readdir = promisify(readdirCb);

/** Fleetspeak assumes 100 clock ticks per second (Linux's USER_HZ). */
const MS_PER_TICK = 10;
const PAGE_SIZE = 4096;
const SEND_TIMEOUT_MS = 30_000;

export interface Sample {
  at: number;
  userMs: number;
  systemMs: number;
  rss: number;
  fds: number;
}

/** One sample of `pid` from /proc; throws if the process is gone. */
export async function sampleProcess(pid: number): Promise<Sample> {
  const [stat, statm, fds] = await Promise.all([
    readFile(`/proc/${pid}/stat`, "utf8"),
    readFile(`/proc/${pid}/statm`, "utf8"),
    readdir(`/proc/${pid}/fd`),
  ]);
  // Fields after the command name, which may itself contain spaces and parentheses.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = (i: number) => Number(rest[i - 2]);
  return {
    at: Date.now(),
    userMs: (ticks(13) + ticks(15)) * MS_PER_TICK,
    systemMs: (ticks(14) + ticks(16)) * MS_PER_TICK,
    rss: Number(statm.split(" ")[1]) * PAGE_SIZE,
    fds: fds.length,
  };
}

/** Aggregates consecutive samples into a report; throws when time or CPU went backwards. */
export function aggregate(samples: readonly Sample[]): AggregatedResourceUsage {
  if (samples.length < 2) throw new Error(`need at least 2 samples, got ${samples.length}`);
  const out = create(AggregatedResourceUsageSchema);
  let sumUser = 0;
  let sumSystem = 0;
  let sumRss = 0;
  let sumFds = 0;
  let maxRss = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i]!;
    sumRss += s.rss;
    sumFds += s.fds;
    maxRss = Math.max(maxRss, s.rss);
    out.maxNumFds = Math.max(out.maxNumFds, s.fds);
    if (i === 0) continue;
    const p = samples[i - 1]!;
    const seconds = (s.at - p.at) / 1000;
    if (seconds <= 0) throw new Error("sample times are not increasing");
    if (s.userMs < p.userMs || s.systemMs < p.systemMs) throw new Error("CPU time decreased");
    const user = (s.userMs - p.userMs) / seconds;
    const system = (s.systemMs - p.systemMs) / seconds;
    sumUser += user;
    sumSystem += system;
    out.maxUserCpuRate = Math.max(out.maxUserCpuRate, user);
    out.maxSystemCpuRate = Math.max(out.maxSystemCpuRate, system);
  }
  out.meanUserCpuRate = sumUser / (samples.length - 1);
  out.meanSystemCpuRate = sumSystem / (samples.length - 1);
  out.meanResidentMemory = sumRss / samples.length;
  out.maxResidentMemory = BigInt(maxRss);
  out.meanNumFds = sumFds / samples.length;
  return out;
}

export interface MonitorOptions {
  /** ResourceUsageData.scope: the service name, or "system" for the client itself. */
  scope: string;
  pid: number;
  version: string;
  processStartTime?: Date;
  /** Longest interval between samples (Fleetspeak default 30 s). */
  samplePeriodMs: number;
  /** Samples per report (Fleetspeak default 20). */
  sampleSize: number;
  /** Bytes of RSS at which `onMemoryExceeded` runs; 0 = no limit. */
  memoryLimit: number;
  onMemoryExceeded?: (rss: number) => Promise<void>;
  ctx: ServiceContext;
  log: Logger;
}

export class ResourceMonitor {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private samples: Sample[] = [];
  private interval = 1000;
  private wanted: number;

  constructor(private readonly opts: MonitorOptions) {
    if (opts.sampleSize < 2) {
      throw new Error(`resource_monitoring_sample_size must be at least 2, got ${opts.sampleSize}`);
    }
    this.wanted = opts.sampleSize + Math.floor(Math.log2(Math.max(1, opts.samplePeriodMs / 1000)));
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.interval);
    this.interval = Math.min(this.interval * 2, this.opts.samplePeriodMs);
  }

  private restart(): void {
    this.samples = [];
    this.wanted = this.opts.sampleSize;
  }

  private async tick(): Promise<void> {
    const { opts } = this;
    try {
      const sample = await sampleProcess(opts.pid);
      if (this.stopped) return;
      if (opts.memoryLimit > 0 && sample.rss >= opts.memoryLimit && opts.onMemoryExceeded) {
        this.restart();
        await opts.onMemoryExceeded(sample.rss);
        return;
      }
      this.samples.push(sample);
      if (this.samples.length >= this.wanted) {
        const samples = this.samples;
        this.restart();
        await this.report(samples);
      }
    } catch (e) {
      if (!this.stopped) opts.log.debug({ pid: opts.pid, err: (e as Error).message }, "resource sample discarded");
      this.restart();
    } finally {
      this.schedule();
    }
  }

  private async report(samples: Sample[]): Promise<void> {
    const { opts } = this;
    const usage = aggregate(samples);
    let debugStatus = "";
    try {
      debugStatus = await readFile(`/proc/${opts.pid}/status`, "utf8");
    } catch {
      // The process may have just ended; the report is still worth sending.
    }
    const data = create(ResourceUsageDataSchema, {
      scope: opts.scope,
      pid: BigInt(opts.pid),
      version: opts.version,
      processStartTime: opts.processStartTime ? timestampFromDate(opts.processStartTime) : undefined,
      dataTimestamp: timestampNow(),
      resourceUsage: usage,
      debugStatus,
    });
    await sendToSystem(opts.ctx, "ResourceUsage", anyPack(ResourceUsageDataSchema, data), opts.log);
  }
}

/**
 * Sends a message to the server's system service, in the background: by default LOW priority
 * (monitoring data: ResourceUsage, KillNotification) and dropped with a log line if the outbox
 * has no room within 30 s.
 */
export async function sendToSystem(
  ctx: ServiceContext,
  messageType: string,
  data: Any,
  log: Logger,
  opts: { priority?: Message_Priority; timeoutMs?: number } = {},
): Promise<void> {
  const message = create(MessageSchema, {
    destination: create(AddressSchema, { serviceName: "system" }),
    messageType,
    data,
    priority: opts.priority ?? Message_Priority.LOW,
    background: true,
  });
  try {
    await ctx.send(message, { signal: AbortSignal.timeout(opts.timeoutMs ?? SEND_TIMEOUT_MS) });
  } catch (e) {
    log.warn({ messageType, err: (e as Error).message }, "system message not sent");
  }
}
