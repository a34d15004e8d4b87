// The "Daemon" service: runs a program (GRR's agent, for one) and talks to it over the channel on
// inherited file descriptors 3 (to the daemon) and 4 (from the daemon). Restarts it whenever it
// exits, at most once per respawn delay; optionally starts it lazily, stops it after inactivity,
// kills it on missed heartbeats or over its memory limit (telling the server first), forwards its
// stdout/stderr, and reports its resource usage.
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { type ChildProcess, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { clientIdToHex } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import { AddressSchema, type Message, MessageSchema } from "../../gen/fleetspeak/common_pb.js";
import type { ClientServiceConfig } from "../../gen/fleetspeak/system_pb.js";
import { StartupDataSchema } from "../../gen/fleetspeak_channel/channel_pb.js";
import { type Config as DaemonConfig, ConfigSchema as DaemonConfigSchema } from "../../gen/fleetspeak_daemonservice/config_pb.js";
import { type StdOutputData, StdOutputDataSchema } from "../../gen/fleetspeak_daemonservice/messages_pb.js";
import {
  AggregatedResourceUsageSchema,
  KillNotification_Reason,
  KillNotificationSchema,
  ResourceUsageDataSchema,
} from "../../gen/fleetspeak_monitoring/resource_pb.js";
import { Channel } from "./channel.js";
import { ResourceMonitor, sendToSystem } from "./resource-monitor.js";
import {
  type ClientService,
  durationMs,
  type FactoryOptions,
  type ServiceContext,
  ServiceConfigError,
  unpackServiceConfig,
} from "./service.js";

const MAX_FLUSH_BYTES = 1024 * 1024;
const DEFAULT_FLUSH_SECONDS = 60;
const STARTUP_DATA_WAIT_MS = 10_000;
const TEARDOWN_STEP_MS = 1000;
const HEARTBEAT_RECHECK_MS = 2000;

/** Settings of one daemon service, resolved from its config with Fleetspeak's defaults. */
interface DaemonSettings {
  argv: string[];
  lazyStart: boolean;
  inactivityTimeoutMs: number;
  monitoring: boolean;
  sampleSize: number;
  samplePeriodMs: number;
  memoryLimit: number;
  monitorHeartbeats: boolean;
  heartbeatGraceMs: number;
  heartbeatKillMs: number;
  std: { serviceName: string; flushBytes: number; flushMs: number } | undefined;
}

function resolveSettings(name: string, cfg: DaemonConfig): DaemonSettings {
  if (cfg.argv.length === 0 || cfg.argv[0] === "") {
    throw new ServiceConfigError(`service ${name}: daemonservice argv must name the program to run`);
  }
  if (cfg.resourceMonitoringSampleSize === 1) {
    throw new ServiceConfigError(
      `service ${name}: resource_monitoring_sample_size must be 0 (default 20) or at least 2`,
    );
  }
  const inactivityTimeoutMs = durationMs(cfg.inactivityTimeout);
  const samplePeriodMs = durationMs(cfg.resourceMonitoringSamplePeriod) || cfg.resourceMonitoringSamplePeriodSeconds * 1000;
  let std: DaemonSettings["std"];
  if (cfg.stdParams) {
    if (cfg.stdParams.serviceName === "") {
      throw new ServiceConfigError(`service ${name}: std_params.service_name must name the server service for the output`);
    }
    const fb = cfg.stdParams.flushBytes;
    const ft = cfg.stdParams.flushTimeSeconds;
    std = {
      serviceName: cfg.stdParams.serviceName,
      flushBytes: fb <= 0 || fb > MAX_FLUSH_BYTES ? MAX_FLUSH_BYTES : fb,
      flushMs: (ft <= 0 ? DEFAULT_FLUSH_SECONDS : ft) * 1000,
    };
  }
  return {
    argv: [...cfg.argv],
    lazyStart: cfg.lazyStart || inactivityTimeoutMs > 0,
    inactivityTimeoutMs,
    monitoring: !cfg.disableResourceMonitoring,
    sampleSize: cfg.resourceMonitoringSampleSize || 20,
    samplePeriodMs: samplePeriodMs > 0 ? samplePeriodMs : 30_000,
    memoryLimit: Number(cfg.memoryLimit),
    monitorHeartbeats: cfg.monitorHeartbeats,
    heartbeatGraceMs:
      durationMs(cfg.heartbeatUnresponsiveGracePeriod) || cfg.heartbeatUnresponsiveGracePeriodSeconds * 1000,
    heartbeatKillMs:
      durationMs(cfg.heartbeatUnresponsiveKillPeriod) || cfg.heartbeatUnresponsiveKillPeriodSeconds * 1000,
    std,
  };
}

export function daemonFactory(config: ClientServiceConfig, opts: FactoryOptions): ClientService {
  const settings = resolveSettings(config.name, unpackServiceConfig(config, DaemonConfigSchema));
  return new DaemonService(config.name, settings, opts);
}

class DaemonService implements ClientService {
  private ctx!: ServiceContext;
  private log!: Logger;
  private current: Execution | undefined;
  private starting: Promise<Execution | undefined> | undefined;
  private lastStart = Number.NEGATIVE_INFINITY;
  private readonly stopping = new AbortController();
  private inactivityTimer: NodeJS.Timeout | undefined;
  private readonly executions = new Set<Promise<void>>();

  constructor(
    private readonly name: string,
    private readonly settings: DaemonSettings,
    private readonly opts: FactoryOptions,
  ) {}

  async start(ctx: ServiceContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log;
    if (!this.settings.lazyStart) void this.ensureExecution();
  }

  async processMessage(m: Message): Promise<void> {
    for (;;) {
      const exec = this.current ?? (await this.ensureExecution());
      if (!exec) throw new Error(`service ${this.name} is stopping`);
      if (exec.deliver(m)) return;
      // That execution is going away; the message goes to the next one.
      await exec.exited;
    }
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    clearTimeout(this.inactivityTimer);
    this.current?.shutdown("service stopping");
    await this.starting;
    await Promise.all(this.executions);
  }

  private ensureExecution(): Promise<Execution | undefined> {
    this.starting ??= this.startExecution().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /** Starts the program, no sooner than the respawn delay after the previous start; retries forever. */
  private async startExecution(): Promise<Execution | undefined> {
    const signal = this.stopping.signal;
    for (;;) {
      const wait = this.lastStart + this.opts.daemonRespawnDelayMs - Date.now();
      if (wait > 0) {
        this.log.info({ inMs: wait }, "daemon starts after the respawn delay");
        await abortableSleep(wait, signal);
      }
      if (signal.aborted) return undefined;
      this.lastStart = Date.now();
      let exec: Execution;
      try {
        exec = new Execution(this.name, this.settings, this.ctx, this.opts.stdForward, this.log);
      } catch (e) {
        this.log.error({ argv: this.settings.argv, err: (e as Error).message }, "cannot start daemon; retrying");
        continue;
      }
      this.current = exec;
      const finished = exec.exited.then(() => this.onExecutionEnded(exec));
      this.executions.add(finished);
      void finished.finally(() => this.executions.delete(finished));
      this.armInactivityTimer(exec);
      return exec;
    }
  }

  private onExecutionEnded(exec: Execution): void {
    if (this.current !== exec) return;
    this.current = undefined;
    clearTimeout(this.inactivityTimer);
    if (this.stopping.signal.aborted) return;
    if (!this.settings.lazyStart) void this.ensureExecution();
  }

  /** Inactivity is measured from the start (Fleetspeak measures from the epoch, by accident). */
  private armInactivityTimer(exec: Execution): void {
    const timeout = this.settings.inactivityTimeoutMs;
    if (timeout <= 0) return;
    clearTimeout(this.inactivityTimer);
    const due = exec.lastActive + timeout - Date.now();
    this.inactivityTimer = setTimeout(() => {
      if (this.current !== exec) return;
      if (Date.now() >= exec.lastActive + timeout) exec.shutdown("inactivity timeout");
      else this.armInactivityTimer(exec);
    }, Math.max(0, due));
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** One run of the daemon program. */
class Execution {
  readonly startTime = new Date();
  /** Resolves once the process has exited and the final reports are queued. */
  readonly exited: Promise<void>;
  /** Time of the last message from the daemon or non-empty output flush (ms since epoch). */
  lastActive = Date.now();
  private readonly child: ChildProcess;
  private readonly pid: number;
  private readonly channel: Channel;
  private readonly log: Logger;
  private closing = false;
  private dead = false;
  private deadPromise: Promise<void>;
  private endReason = "";
  private lastHeartbeat: number | undefined;
  private sending = false;
  private version = "";
  private startupSeen = false;
  private startupData: ((d: { pid: number; version: string } | undefined) => void) | undefined;
  private readonly startupPromise: Promise<{ pid: number; version: string } | undefined>;
  private monitor: ResourceMonitor | undefined;
  private out: StdOutputData = create(StdOutputDataSchema);
  private lastFlush = Date.now();
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly stopMonitoring = new AbortController();

  constructor(
    private readonly service: string,
    private readonly settings: DaemonSettings,
    private readonly ctx: ServiceContext,
    stdForward: boolean,
    parentLog: Logger,
  ) {
    const [file, ...args] = settings.argv as [string, ...string[]];
    const env = {
      ...process.env,
      FLEETSPEAK_CLIENT_ID: clientIdToHex(ctx.clientId()),
      FLEETSPEAK_COMMS_CHANNEL_INFD: "3",
      FLEETSPEAK_COMMS_CHANNEL_OUTFD: "4",
    };
    const captured = settings.std && !stdForward;
    const outMode = stdForward ? "inherit" : captured ? "pipe" : "ignore";
    this.child = spawn(file, args, {
      env,
      stdio: [stdForward ? "inherit" : "ignore", outMode, outMode, "pipe", "pipe"],
    });
    if (this.child.pid === undefined) {
      // spawn reports ENOENT and friends asynchronously; wait for that before failing.
      this.child.once("error", () => {});
      throw new Error(`cannot run ${file}: not found or not executable`);
    }
    this.pid = this.child.pid;
    this.log = parentLog.child({ daemonPid: this.pid });
    this.log.info({ argv: settings.argv }, "daemon started");
    this.startupPromise = new Promise((resolve) => {
      this.startupData = resolve;
    });

    this.deadPromise = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.dead = true;
        this.log.warn({ code, signal }, "daemon exited");
        resolve();
      });
    });
    this.child.on("error", (e) => this.log.error({ err: e.message }, "daemon process error"));

    const toDaemon = this.child.stdio[3] as Writable;
    const fromDaemon = this.child.stdio[4] as Readable;
    this.channel = new Channel(
      fromDaemon,
      toDaemon,
      {
        onMessage: (m) => this.onMessage(m),
        onClose: (error) => {
          if (error) {
            this.log.error({ err: error.message }, "daemon broke the channel protocol; restarting it");
            this.endReason = `channel error: ${error.message}`;
          }
          this.shutdown(error ? "channel error" : "daemon closed its channel");
        },
      },
      `daemon ${service} (pid ${this.pid})`,
      this.log,
    );

    if (captured) {
      (this.child.stdout as Readable).on("data", (b: Buffer) => this.writeOut(b, false));
      (this.child.stderr as Readable).on("data", (b: Buffer) => this.writeOut(b, true));
      const period = settings.std!.flushMs;
      this.flushTimer = setInterval(() => {
        if (this.lastFlush + period <= Date.now()) this.flushOut();
      }, period);
    }
    if (settings.monitoring) void this.monitorProcess();
    this.exited = this.afterExit();
  }

  /** Hands a server message to the daemon; false if this execution is going away. */
  deliver(m: Message): boolean {
    if (this.closing || this.dead) return false;
    // A message too large for the channel is dropped with a log line, as Fleetspeak does.
    this.channel.send(m);
    return true;
  }

  private async onMessage(m: Message): Promise<void> {
    const now = Date.now();
    this.lastActive = now;
    this.lastHeartbeat = now;
    if (m.destination?.serviceName === "system") {
      if (m.messageType === "StartupData") {
        if (this.startupSeen) {
          this.log.warn("ignoring a second StartupData");
          return;
        }
        this.startupSeen = true;
        const sd = m.data ? anyUnpack(m.data, StartupDataSchema) : undefined;
        if (!sd) this.log.warn("StartupData without fleetspeak.channel.StartupData payload");
        if (sd?.version) this.version = sd.version;
        this.startupData?.(sd ? { pid: Number(sd.pid), version: sd.version } : undefined);
      } else if (m.messageType !== "Heartbeat") {
        this.log.warn({ messageType: m.messageType }, "dropping a system message of unknown type from the daemon");
      }
      return;
    }
    this.sending = true;
    try {
      await this.ctx.send(m);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "cannot send the daemon's message to the server");
    } finally {
      this.sending = false;
    }
  }

  /** Teardown: close the channel, then SIGINT, then SIGKILL, a second apart. */
  shutdown(reason: string): void {
    if (this.closing) return;
    this.closing = true;
    if (!this.endReason) this.endReason = reason;
    this.log.info({ reason }, "stopping daemon");
    this.channel.closeOutput();
    void (async () => {
      const steps: Array<NodeJS.Signals | undefined> = ["SIGINT", "SIGKILL", undefined];
      for (const sig of steps) {
        if (await this.diesWithin(TEARDOWN_STEP_MS)) return;
        if (!sig) {
          this.log.error("daemon appears to have survived SIGKILL");
          return;
        }
        this.child.kill(sig);
      }
    })();
  }

  private diesWithin(ms: number): Promise<boolean> {
    if (this.dead) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(this.dead), ms);
      void this.deadPromise.then(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  private async afterExit(): Promise<void> {
    await this.deadPromise;
    this.closing = true;
    this.stopMonitoring.abort();
    this.monitor?.stop();
    this.startupData?.(undefined);
    // Let the daemon's last frames drain, unless something else (a grandchild) holds the pipe open.
    await Promise.race([this.channel.ended, new Promise((r) => setTimeout(r, TEARDOWN_STEP_MS))]);
    this.channel.destroy();
    clearInterval(this.flushTimer);
    this.flushOut();
    if (this.settings.monitoring) {
      const rud = create(ResourceUsageDataSchema, {
        scope: this.service,
        pid: BigInt(this.pid),
        version: this.version,
        processStartTime: timestampFromDate(this.startTime),
        dataTimestamp: timestampNow(),
        resourceUsage: create(AggregatedResourceUsageSchema),
        processTerminated: true,
        debugStatus: this.endReason,
      });
      await sendToSystem(this.ctx, "ResourceUsage", anyPack(ResourceUsageDataSchema, rud), this.log);
    }
  }

  private writeOut(chunk: Buffer, isErr: boolean): void {
    const limit = this.settings.std!.flushBytes;
    let rest = chunk;
    for (;;) {
      const size = this.out.stdout.length + this.out.stderr.length;
      const fits = Math.min(rest.length, limit - size);
      const part = rest.subarray(0, fits);
      if (isErr) this.out.stderr = Buffer.concat([this.out.stderr, part]);
      else this.out.stdout = Buffer.concat([this.out.stdout, part]);
      rest = rest.subarray(fits);
      if (rest.length === 0 && size + fits < limit) return;
      this.flushOut();
      if (rest.length === 0) return;
    }
  }

  private flushOut(): void {
    if (!this.settings.std) return;
    this.lastFlush = Date.now();
    const data = this.out;
    if (data.stdout.length + data.stderr.length === 0) return;
    this.lastActive = this.lastFlush;
    data.pid = BigInt(this.pid);
    this.out = create(StdOutputDataSchema, { messageIndex: data.messageIndex + 1n });
    const m = create(MessageSchema, {
      destination: create(AddressSchema, { serviceName: this.settings.std.serviceName }),
      messageType: "StdOutput",
      data: anyPack(StdOutputDataSchema, data),
    });
    this.ctx.send(m).catch((e) => this.log.error({ err: (e as Error).message }, "daemon output not sent"));
  }

  /** Resource reports, memory limit and heartbeat enforcement, for the pid the daemon reports. */
  private async monitorProcess(): Promise<void> {
    const signal = this.stopMonitoring.signal;
    const startup = await Promise.race([
      this.startupPromise,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), STARTUP_DATA_WAIT_MS).unref()),
    ]);
    if (signal.aborted) return;
    const pid = startup && startup.pid > 0 ? startup.pid : this.pid;
    const { settings } = this;
    try {
      this.monitor = new ResourceMonitor({
        scope: this.service,
        pid,
        version: this.version,
        processStartTime: this.startTime,
        samplePeriodMs: settings.samplePeriodMs,
        sampleSize: settings.sampleSize,
        memoryLimit: settings.memoryLimit,
        onMemoryExceeded: (rss) => this.kill(pid, KillNotification_Reason.MEMORY_EXCEEDED, `RSS ${rss} ≥ limit`),
        ctx: this.ctx,
        log: this.log,
      });
      this.monitor.start();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "resource monitoring not started");
    }
    if (!settings.monitorHeartbeats) return;
    await abortableSleep(settings.heartbeatGraceMs, signal);
    while (!signal.aborted) {
      if (this.sending) {
        // Blocked on a full outbox: the daemon cannot be blamed for not being heard.
        await abortableSleep(Math.max(1000, settings.heartbeatKillMs), signal);
        continue;
      }
      const overdue = () => this.lastHeartbeat === undefined || Date.now() - this.lastHeartbeat > settings.heartbeatKillMs;
      if (overdue()) {
        await abortableSleep(HEARTBEAT_RECHECK_MS, signal);
        if (signal.aborted) return;
        if (overdue() && !this.sending) {
          await this.kill(pid, KillNotification_Reason.HEARTBEAT_FAILURE, "no heartbeat");
          return;
        }
        continue;
      }
      await abortableSleep(Math.max(1000, this.lastHeartbeat! + settings.heartbeatKillMs - Date.now() + 1), signal);
    }
  }

  /** Tells the server why, then SIGKILLs `pid`; the service then starts the daemon again. */
  private async kill(pid: number, reason: KillNotification_Reason, why: string): Promise<void> {
    this.log.warn({ killPid: pid, reason: KillNotification_Reason[reason], why }, "killing daemon");
    if (!this.endReason) this.endReason = `killed: ${KillNotification_Reason[reason]} (${why})`;
    const kn = create(KillNotificationSchema, {
      service: this.service,
      pid: BigInt(pid),
      version: this.version,
      processStartTime: timestampFromDate(this.startTime),
      killedWhen: timestampNow(),
      reason,
    });
    await sendToSystem(this.ctx, "KillNotification", anyPack(KillNotificationSchema, kn), this.log);
    try {
      process.kill(pid, "SIGKILL");
    } catch (e) {
      this.log.warn({ killPid: pid, err: (e as Error).message }, "kill failed");
    }
  }
}
