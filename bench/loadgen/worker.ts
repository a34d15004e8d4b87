// A load-generator process: runs the simulated clients [from, to) of the identity cache against
// one target, as the parent tells it over IPC, and reports what they see once per
// reportIntervalMs. It exits when told to stop, when the parent goes away, and in any case after
// maxSeconds.
import { clientIdentities } from "./identities.js";
import {
  type IngestCommand,
  type ParentCommand,
  type WorkerConfig,
  type WorkerMessage,
  type WorkerReport,
  zeroCounters,
} from "./protocol.js";
import { type ClientHost, type ClientTarget, MqttClient, PollClient, type SimClient, StreamClient } from "./sim-clients.js";
import { MessageBatchEncoder, nowMs } from "./wire.js";

type Connecting = StreamClient | MqttClient;

/** How long a client waits before trying again after a failed connection. */
const RETRY_MIN_MS = 1000;

class Worker implements ClientHost {
  readonly target: ClientTarget;
  stopping = false;
  private readonly clients: SimClient[];
  private readonly toConnect: Connecting[] = [];
  private readonly dirty = new Set<SimClient>();
  private readonly seen = new Set<string>();
  private ingest: IngestCommand | undefined;
  /** Encodes the current ingest command's frames. */
  private ingestFrames: MessageBatchEncoder | undefined;
  private ingestBudget = 0;
  private ingestCursor = 0;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly pollTimers = new Map<PollClient, NodeJS.Timeout>();
  private readonly cpuStart = process.cpuUsage();
  private readonly r: WorkerReport;

  constructor(private readonly cfg: WorkerConfig) {
    this.target = cfg.target;
    const ids = clientIdentities(cfg.from, cfg.to);
    this.clients = ids.map((id) => {
      if (cfg.mode === "mqtt") return new MqttClient(id.index, { id: id.id, keyPem: id.keyPem, certPem: id.caSignedCertPem }, this);
      const identity = { id: id.id, keyPem: id.keyPem, certPem: id.certPem };
      return cfg.mode === "stream" ? new StreamClient(id.index, identity, this) : new PollClient(id.index, identity, this);
    });
    this.r = {
      type: "report",
      worker: cfg.worker,
      clients: this.clients.length,
      ...zeroCounters(),
      errors: {},
      openAtFirstError: -1,
      latencies: [],
      openTimes: [],
      pollTimes: [],
      rssBytes: 0,
      cpuMicros: 0,
    };
  }

  start(): void {
    this.every(this.cfg.reportIntervalMs, () => this.report());
    this.every(this.cfg.ackIntervalMs, () => this.flushAcks());
    if (this.cfg.mode !== "poll") {
      this.toConnect.push(...(this.clients as Connecting[]));
      this.ramp();
    } else {
      // First polls (and so TLS handshakes) spread over the interval, or longer at rampPerSec.
      const spreadMs = Math.max(this.cfg.pollIntervalMs, this.cfg.rampPerSec > 0 ? (this.clients.length / this.cfg.rampPerSec) * 1000 : 0);
      for (const c of this.clients as PollClient[]) {
        this.pollTimers.set(c, setTimeout(() => this.pollLoop(c), Math.random() * spreadMs));
      }
    }
  }

  private every(ms: number, fn: () => void): void {
    this.timers.push(setInterval(fn, ms));
  }

  /** Opens queued connections at rampPerSec, with at most maxConnecting under way. */
  private ramp(): void {
    const started = nowMs();
    let opened = 0;
    const tick = setInterval(() => {
      if (this.stopping) return clearInterval(tick);
      const due = Math.floor(((nowMs() - started) / 1000) * this.cfg.rampPerSec) - opened;
      let n = Math.min(due, this.cfg.maxConnecting - this.r.connecting);
      while (n-- > 0 && this.toConnect.length > 0) {
        const c = this.toConnect.shift()!;
        this.r.connecting++;
        opened++;
        c.connect();
      }
    }, 10);
    this.timers.push(tick);
  }

  /** A poll every pollIntervalMs; one still running when the next is due is not doubled. */
  private pollLoop(c: PollClient): void {
    if (this.stopping) return;
    if (!c.poll()) this.r.pollsSkipped++;
    this.pollTimers.set(c, setTimeout(() => this.pollLoop(c), this.cfg.pollIntervalMs));
  }

  handshakeDone(): void {
    this.r.handshakes++;
  }

  streamOpened(_c: SimClient, ms: number): void {
    this.r.connecting--;
    this.r.open++;
    this.r.streamsOpened++;
    this.r.openTimes.push(ms);
    if (this.ingest) this.pumpIngest();
  }

  ended(c: SimClient, wasOpen: boolean, error?: string): void {
    const reconnecting = c instanceof StreamClient || c instanceof MqttClient;
    if (reconnecting) {
      if (wasOpen) {
        this.r.open--;
        this.r.ended++;
      } else this.r.connecting--;
    }
    if (error !== undefined) {
      if (this.r.openAtFirstError < 0) this.r.openAtFirstError = this.r.open;
      this.r.errors[error] = (this.r.errors[error] ?? 0) + 1;
    }
    if (this.stopping || !reconnecting || c.closedByUs) return;
    // Reconnect as the Go client does: at once after a normal end, later after a failure.
    if (error === undefined) this.toConnect.push(c);
    else {
      const retryAfter = c instanceof StreamClient ? c.retryAfterMs : 0;
      const t = setTimeout(() => this.toConnect.push(c), Math.max(retryAfter, RETRY_MIN_MS * (1 + Math.random())));
      this.timers.push(t);
    }
  }

  received(key: string, insertedAt: number | undefined, at: number): void {
    this.r.received++;
    if (this.seen.has(key)) this.r.duplicates++;
    else this.seen.add(key);
    if (insertedAt !== undefined) this.r.latencies.push(insertedAt, at - insertedAt);
  }

  frameAcked(c: StreamClient, ingestMessages: number): void {
    this.r.framesAcked++;
    this.r.ingestAcked += ingestMessages;
    if (this.ingest && this.ingest.perSecond === 0) this.fillWindow(c);
  }

  pollDone(_c: PollClient, ms: number, newConnection: boolean): void {
    this.r.polls++;
    if (newConnection) this.r.pollsOnNewConnection++;
    this.r.pollTimes.push(ms);
  }

  ackPending(c: SimClient): void {
    this.dirty.add(c);
  }

  private flushAcks(): void {
    for (const c of this.dirty) {
      const before = c instanceof StreamClient ? c.outstandingFrames : 0;
      c.flushAcks();
      if (c instanceof StreamClient && c.outstandingFrames > before) this.r.framesSent++;
    }
    this.dirty.clear();
  }

  startIngest(cmd: IngestCommand): void {
    this.ingest = cmd;
    this.ingestFrames = new MessageBatchEncoder(cmd.service, cmd.batch, cmd.size);
    this.ingestBudget = 0;
    if (cmd.perSecond === 0) {
      for (const c of this.clients as StreamClient[]) this.fillWindow(c);
      return;
    }
    let last = nowMs();
    const tick = setInterval(() => {
      if (this.ingest !== cmd) return clearInterval(tick);
      const now = nowMs();
      this.ingestBudget = Math.min(this.ingestBudget + ((now - last) / 1000) * cmd.perSecond, cmd.perSecond);
      last = now;
      this.pumpIngest();
    }, 10);
    this.timers.push(tick);
  }

  /** Rate-capped ingest: hands the budget out round-robin to clients with room in their window. */
  private pumpIngest(): void {
    const cmd = this.ingest;
    if (!cmd) return;
    if (cmd.perSecond === 0) return;
    const streams = this.clients as StreamClient[];
    let skipped = 0;
    while (this.ingestBudget >= cmd.batch && skipped < streams.length) {
      const c = streams[this.ingestCursor++ % streams.length]!;
      if (!c.isOpen || c.outstandingFrames >= cmd.window || !this.sendIngest(c, cmd)) {
        skipped++;
        continue;
      }
      skipped = 0;
      this.ingestBudget -= cmd.batch;
    }
  }

  private fillWindow(c: StreamClient): void {
    const cmd = this.ingest;
    if (!cmd || this.stopping) return;
    while (c.isOpen && c.outstandingFrames < cmd.window) if (!this.sendIngest(c, cmd)) break;
  }

  private sendIngest(c: StreamClient, cmd: IngestCommand): boolean {
    if (!c.sendMessages(this.ingestFrames!)) return false;
    this.r.framesSent++;
    this.r.ingestSent += cmd.batch;
    return true;
  }

  report(): void {
    this.r.rssBytes = process.memoryUsage.rss();
    const cpu = process.cpuUsage(this.cpuStart);
    this.r.cpuMicros = cpu.user + cpu.system;
    send(this.r);
    this.r.latencies = [];
    this.r.openTimes = [];
    this.r.pollTimes = [];
  }

  stop(): void {
    this.stopping = true;
    this.ingest = undefined;
    for (const t of this.timers) clearTimeout(t);
    for (const t of this.pollTimers.values()) clearTimeout(t);
    for (const c of this.clients) c.close();
  }

  onCommand(cmd: ParentCommand): void {
    if (cmd.type === "ingest") this.startIngest(cmd);
    else if (cmd.type === "ingest-stop") this.ingest = undefined;
    else if (cmd.type === "report") this.report();
    else if (cmd.type === "stop") {
      this.report();
      this.stop();
      setTimeout(() => process.exit(0), 200).unref();
    }
  }
}

function send(m: WorkerMessage): void {
  if (process.connected) process.send!(m);
}

if (!process.send) {
  console.error("bench/loadgen/worker.ts is started by the benchmark scenarios (child_process.fork), not by hand");
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));
let worker: Worker | undefined;
process.on("message", (m: { type: "config"; config: WorkerConfig } | ParentCommand) => {
  if (m.type === "config") {
    try {
      worker = new Worker(m.config);
      setTimeout(() => process.exit(3), m.config.maxSeconds * 1000).unref();
      send({ type: "ready", worker: m.config.worker });
      worker.start();
    } catch (e) {
      send({ type: "fatal", worker: m.config.worker, error: (e as Error).stack ?? String(e) });
      process.exit(1);
    }
  } else worker?.onCommand(m);
});
