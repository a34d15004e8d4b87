// The hold measurement, the same for our frontend and for the peer broker: ramp a fleet of idle
// long-lived TLS clients up against a server process, then read what they cost it (RSS growth
// per client from /proc/<pid>/status, CPU while idle from /proc/<pid>/stat) and how fast it took
// them on (handshakes per second, from the first connection to the last stream opened).
import { Fleet, type FleetOptions, type FleetTotals } from "./fleet.js";
import { maxTreeFdCount, threadCpu, treeCpuSeconds as cpuSeconds, treePssBytes, treeRssBytes as rssBytes } from "./processes.js";
import { monotonicMicros } from "./profile.js";
import { kib, mib, rounded, type Summary, summarize } from "./report.js";

export interface HoldFigures {
  label: string;
  clients: number;
  /** Streams open after the idle period. */
  held: number;
  /** Streams open when the first error happened, or `clients` if none did. */
  heldWithoutErrors: number;
  errors: Record<string, number>;
  rampSeconds: number;
  handshakesPerSec: number;
  /** Server CPU during the ramp per stream opened (TLS handshake + first contact), ms. */
  serverCpuMsPerConnect: number;
  /** Load-generator CPU (all workers) during the ramp per stream opened, ms. */
  loadgenCpuMsPerConnect: number;
  /** Time from connect to the stream's first frame (MQTT: SUBACK), ms. */
  openMs: Summary;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  rssPerClientKiB: number;
  /** Pss of all the server's processes (shared pages counted once), before and after, MiB. */
  pssBeforeMiB: number;
  pssAfterMiB: number;
  /** Pss growth per client, KiB. */
  pssPerClientKiB: number;
  /** All the server's Pss after the ramp divided by the clients held, KiB: what each client costs, the server's own memory included. */
  pssTotalPerClientKiB: number;
  /** CPU of the server process while every client is connected and idle, % of one core. */
  idleCpuPercent: number;
  /** The same by thread name (main thread = the program's name), %. */
  idleCpuByThread: Record<string, number>;
  serverFds: number;
  loadgenRssMiB: number;
  /** When the idle CPU was measured (monotonic µs), to pick those samples out of a CPU profile. */
  idleWindow: [number, number];
  /** When the clients were connecting (monotonic µs). */
  rampWindow: [number, number];
}

export interface HoldOptions {
  pid: number;
  label: string;
  fleet: FleetOptions;
  settleMs: number;
  idleSeconds: number;
  log: (s: string) => void;
  /** Runs while the clients are still connected, after the idle measurement. */
  whileHeld?: (fleet: Fleet) => Promise<void>;
}

export async function measureHold(o: HoldOptions): Promise<HoldFigures> {
  const n = o.fleet.clients;
  const rssBefore = rssBytes(o.pid);
  const pssBefore = treePssBytes(o.pid);
  const fleet = await Fleet.start(o.fleet);
  try {
    const started = Date.now();
    const rampFrom = monotonicMicros();
    const serverCpuAtStart = cpuSeconds(o.pid);
    let lastProgress = started;
    let lastOpened = 0;
    let lastLog = 0;
    // Done when all are open, or when nothing moved for 30 s (the server refuses more). The bound
    // allows for handshakes slower than the ramp asks, down to 100/s (a 2-core machine doing the
    // load's TLS too manages ~250/s).
    const ramped = await fleet.until(
      (t) => t.open >= n || Date.now() - lastProgress > 30_000,
      Math.max(120_000, (n / o.fleet.rampPerSec) * 1000 * 4, n * 10),
      (t) => {
        if (t.streamsOpened > lastOpened) {
          lastOpened = t.streamsOpened;
          lastProgress = Date.now();
        }
        if (Date.now() - lastLog >= 5000) {
          lastLog = Date.now();
          o.log(`${o.label}: ${t.open}/${n} open, ${t.connecting} connecting, ${t.errorCount} errors, server RSS ${mib(rssBytes(o.pid))} MiB`);
        }
      },
    );
    const rampSeconds = (lastProgress - started) / 1000;
    const rampWindow: [number, number] = [rampFrom, rampFrom + rampSeconds * 1e6];
    const rampServerCpu = cpuSeconds(o.pid) - serverCpuAtStart;
    const rampLoadgenCpu = ramped.workerCpuSeconds;
    const failed = fleet.failedWorkers();
    if (failed.length > 0) throw new Error(`load generator processes died:\n${failed.join("\n")}`);
    o.log(`${o.label}: ramp done in ${rampSeconds.toFixed(1)} s: ${ramped.open}/${n} open, errors ${JSON.stringify(ramped.errors)}`);
    await new Promise((r) => setTimeout(r, o.settleMs));
    const rssAfter = rssBytes(o.pid);
    const pssAfter = treePssBytes(o.pid);
    const cpu0 = cpuSeconds(o.pid);
    const threads0 = threadCpu(o.pid);
    const t0 = Date.now();
    const idleFrom = monotonicMicros();
    await new Promise((r) => setTimeout(r, o.idleSeconds * 1000));
    const idleSeconds = (Date.now() - t0) / 1000;
    const idleCpu = (cpuSeconds(o.pid) - cpu0) / idleSeconds;
    const idleThreads: Record<string, number> = {};
    for (const [name, secs] of threadCpu(o.pid)) {
      const used = (secs - (threads0.get(name) ?? 0)) / idleSeconds;
      if (used > 0) idleThreads[name] = Number((used * 100).toFixed(1));
    }
    const idleWindow: [number, number] = [idleFrom, monotonicMicros()];
    const t: FleetTotals = await fleet.refresh();
    o.log(
      `${o.label}: held ${t.open}/${n}; RSS ${mib(rssBefore)} → ${mib(rssAfter)} MiB; Pss ${mib(pssBefore)} → ${mib(pssAfter)} MiB ` +
        `(${kib(pssAfter / Math.max(1, t.open))} KiB per client, all of it); idle CPU ${(idleCpu * 100).toFixed(1)} %`,
    );
    const figures: HoldFigures = {
      label: o.label,
      clients: n,
      held: t.open,
      heldWithoutErrors: t.openAtFirstError < 0 ? t.open : t.openAtFirstError,
      errors: t.errors,
      rampSeconds: Number(rampSeconds.toFixed(1)),
      handshakesPerSec: Math.round(ramped.streamsOpened / Math.max(rampSeconds, 0.001)),
      serverCpuMsPerConnect: Number(((rampServerCpu * 1000) / Math.max(1, ramped.streamsOpened)).toFixed(2)),
      loadgenCpuMsPerConnect: Number(((rampLoadgenCpu * 1000) / Math.max(1, ramped.streamsOpened)).toFixed(2)),
      openMs: rounded(summarize(fleet.takeOpenTimes())),
      rssBeforeMiB: mib(rssBefore),
      rssAfterMiB: mib(rssAfter),
      rssPerClientKiB: kib((rssAfter - rssBefore) / Math.max(1, t.open)),
      pssBeforeMiB: mib(pssBefore),
      pssAfterMiB: mib(pssAfter),
      pssPerClientKiB: kib((pssAfter - pssBefore) / Math.max(1, t.open)),
      pssTotalPerClientKiB: kib(pssAfter / Math.max(1, t.open)),
      idleCpuPercent: Number((idleCpu * 100).toFixed(1)),
      idleCpuByThread: idleThreads,
      serverFds: maxTreeFdCount(o.pid),
      loadgenRssMiB: mib(t.workerRssBytes),
      idleWindow,
      rampWindow,
    };
    await o.whileHeld?.(fleet);
    return figures;
  } finally {
    await fleet.stop();
  }
}
