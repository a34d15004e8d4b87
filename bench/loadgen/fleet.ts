// The parent's side of the load generator: forks worker processes (bench/loadgen/worker.ts), gives
// each a slice of the client identities and its own loopback source address (127.0.0.2, .3, …,
// each with its own ~28,000 ephemeral ports), and sums up what they report.
import { fork } from "node:child_process";
import { join } from "node:path";
import { clientIdentities } from "./identities.js";
import { type BenchProcess, track } from "./processes.js";
import {
  COUNTER_NAMES,
  type Counters,
  type ParentCommand,
  type WorkerConfig,
  type WorkerMessage,
  type WorkerReport,
  zeroCounters,
} from "./protocol.js";
import type { ClientTarget } from "./sim-clients.js";

const WORKER = join(import.meta.dirname, "worker.ts");

export interface FleetOptions {
  clients: number;
  /** Load processes; default: one per 4,000 clients. */
  workers?: number;
  target: Omit<ClientTarget, "localAddress">;
  mode: WorkerConfig["mode"];
  /** New connections per second, all workers together. */
  rampPerSec: number;
  /** Handshakes under way at most, all workers together. */
  maxConnecting?: number;
  ackIntervalMs?: number;
  pollIntervalMs?: number;
  /** Every worker exits by itself after this. */
  maxSeconds: number;
  /** First identity index (so that two fleets in one run are different clients). */
  firstIndex?: number;
  /** V8 heap limit of each worker. */
  maxOldSpaceMb?: number;
  /** Source addresses start at 127.0.0.<firstSourceHost>. */
  firstSourceHost?: number;
}

/** The workers' counters added up, and what only the fleet knows. */
export interface FleetTotals extends Counters {
  clients: number;
  errors: Record<string, number>;
  errorCount: number;
  /** Open streams (all workers) when the first worker saw its first error; -1 if none. */
  openAtFirstError: number;
  workerRssBytes: number;
  workerCpuSeconds: number;
}

export class Fleet {
  private readonly reports = new Map<number, WorkerReport>();
  /** Flat pairs: insert time, latency. */
  private latencies: number[] = [];
  private openTimes: number[] = [];
  private pollTimes: number[] = [];
  private firstErrorOpen = -1;
  private waiters: Array<() => void> = [];
  private readonly seq = new Map<number, number>();
  private stopping = false;

  private constructor(
    readonly processes: BenchProcess[],
    readonly size: number,
  ) {}

  static async start(opts: FleetOptions): Promise<Fleet> {
    const first = opts.firstIndex ?? 0;
    // Make (or load) every identity here, once, before the workers read the cache.
    clientIdentities(first, first + opts.clients);
    // One load process per 4,000 connections, and when polling one per 300 polls/s offered (a
    // poll costs the load generator about as much CPU as the server).
    const polls = opts.mode === "poll" ? opts.clients / ((opts.pollIntervalMs ?? 10_000) / 1000) : 0;
    const byDefault = Math.min(8, Math.max(Math.ceil(opts.clients / 4000), Math.ceil(polls / 300)));
    const workers = Math.max(1, Math.min(opts.clients, opts.workers ?? byDefault));
    const procs: BenchProcess[] = [];
    const configs: WorkerConfig[] = [];
    for (let w = 0; w < workers; w++) {
      const from = first + Math.floor((w * opts.clients) / workers);
      const to = first + Math.floor(((w + 1) * opts.clients) / workers);
      configs.push({
        worker: w,
        target: { ...opts.target, localAddress: `127.0.0.${(opts.firstSourceHost ?? 2) + w}` },
        from,
        to,
        mode: opts.mode,
        rampPerSec: opts.rampPerSec / workers,
        maxConnecting: Math.max(1, Math.floor((opts.maxConnecting ?? 400) / workers)),
        ackIntervalMs: opts.ackIntervalMs ?? 100,
        pollIntervalMs: opts.pollIntervalMs ?? 10_000,
        reportIntervalMs: 1000,
        maxSeconds: opts.maxSeconds,
      });
      const child = fork(WORKER, [], {
        execArgv: ["--import", "tsx", `--max-old-space-size=${opts.maxOldSpaceMb ?? 1024}`],
        stdio: ["ignore", "pipe", "pipe", "ipc"],
      });
      procs.push(track(`loadgen-${w}`, child));
    }
    const fleet = new Fleet(procs, opts.clients);
    await Promise.all(
      procs.map(
        (p, w) =>
          new Promise<void>((resolve, reject) => {
            p.proc.on("message", (m: WorkerMessage) => {
              if (m.type === "ready") resolve();
              else if (m.type === "fatal") reject(new Error(`load generator ${w} failed: ${m.error}`));
              else fleet.onReport(m);
            });
            void p.exited.then((code) => reject(new Error(`load generator ${w} exited (${code}):\n${p.output()}`)));
            p.proc.send({ type: "config", config: configs[w] });
          }),
      ),
    );
    return fleet;
  }

  private onReport(r: WorkerReport): void {
    const before = this.reports.get(r.worker);
    if (r.openAtFirstError >= 0 && (!before || before.openAtFirstError < 0) && this.firstErrorOpen < 0) {
      // Streams open elsewhere at that moment are counted from the others' latest reports.
      let open = r.openAtFirstError;
      for (const [w, other] of this.reports) if (w !== r.worker) open += other.open;
      this.firstErrorOpen = open;
    }
    this.reports.set(r.worker, r);
    this.seq.set(r.worker, (this.seq.get(r.worker) ?? 0) + 1);
    for (const v of r.latencies) this.latencies.push(v);
    for (const v of r.openTimes) this.openTimes.push(v);
    for (const v of r.pollTimes) this.pollTimes.push(v);
    for (const w of this.waiters.splice(0)) w();
  }

  totals(): FleetTotals {
    const t: FleetTotals = {
      clients: this.size,
      ...zeroCounters(),
      errors: {},
      errorCount: 0,
      openAtFirstError: this.firstErrorOpen,
      workerRssBytes: 0,
      workerCpuSeconds: 0,
    };
    for (const r of this.reports.values()) {
      for (const k of COUNTER_NAMES) t[k] += r[k];
      for (const [k, v] of Object.entries(r.errors)) {
        t.errors[k] = (t.errors[k] ?? 0) + v;
        t.errorCount += v;
      }
      t.workerRssBytes += r.rssBytes;
      t.workerCpuSeconds += r.cpuMicros / 1e6;
    }
    return t;
  }

  /**
   * Push latencies (ms) received since the last call, of messages inserted at or after
   * `insertedSince` (epoch ms; a warm-up's late arrivals are left out that way).
   */
  takeLatencies(insertedSince = Number.NEGATIVE_INFINITY): number[] {
    const pairs = this.latencies;
    this.latencies = [];
    const out: number[] = [];
    for (let i = 0; i < pairs.length; i += 2) if (pairs[i]! >= insertedSince) out.push(pairs[i + 1]!);
    return out;
  }

  takeOpenTimes(): number[] {
    const out = this.openTimes;
    this.openTimes = [];
    return out;
  }

  takePollTimes(): number[] {
    const out = this.pollTimes;
    this.pollTimes = [];
    return out;
  }

  send(cmd: ParentCommand): void {
    for (const p of this.processes) if (p.proc.connected) p.proc.send(cmd);
  }

  /** Asks every worker for a report now and waits for them (at most 10 s). */
  async refresh(): Promise<FleetTotals> {
    const before = new Map(this.seq);
    this.send({ type: "report" });
    const deadline = Date.now() + 10_000;
    const fresh = () => this.processes.every((_, w) => (this.seq.get(w) ?? 0) > (before.get(w) ?? 0));
    while (!fresh() && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.totals();
  }

  /** Load processes that exited before stop(), with their output. */
  failedWorkers(): string[] {
    return this.processes.filter((p) => p.proc.exitCode !== null && !this.stopping).map((p) => `${p.name}: ${p.output().slice(-2000)}`);
  }

  /** Polls the totals until `done` says so or the time is up; returns the last totals. */
  async until(done: (t: FleetTotals) => boolean, timeoutMs: number, onTick?: (t: FleetTotals) => void): Promise<FleetTotals> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = this.totals();
      onTick?.(t);
      if (done(t) || Date.now() >= deadline) return t;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.send({ type: "stop" });
    await Promise.all(
      this.processes.map(async (p) => {
        const t = setTimeout(() => p.proc.kill("SIGKILL"), 5000);
        await p.exited;
        clearTimeout(t);
      }),
    );
  }
}
