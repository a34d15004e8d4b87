// poll: polling clients (POST /message) at a fixed interval against one frontend process.
//   npm run bench -- poll [--clients 2000] [--interval 5] [--seconds 30] [--backend sqlite|mariadb]
// Each client polls every --interval seconds (first poll at a random moment within the interval,
// or within clients / --ramp seconds when that is longer, so that handshakes come at most --ramp
// per second)
// on a kept-alive TLS connection, reconnecting when the server has closed it (idle timeout 30 s).
// Reports polls per second sustained against the offered rate (clients / interval), the poll
// latency (request written → whole response read, handshake excluded), how many polls needed a
// new connection, and the server's CPU per poll.
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { createTestDatabase, type TestDatabase } from "../test/support/mariadb.js";
import { Fleet } from "./loadgen/fleet.js";
import { benchPki } from "./loadgen/identities.js";
import { busyPercent, cpuSeconds, machineCpu, treeCpuSeconds } from "./loadgen/processes.js";
import { appendResultRow, command, gitCommit, machine, printResult, rounded, summarize, today } from "./loadgen/report.js";
import { type BenchServer, noopServices, startBenchServer, warnings } from "./loadgen/servers.js";

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      clients: { type: "string", default: "2000" },
      interval: { type: "string", default: "5" },
      seconds: { type: "string", default: "30" },
      warmup: { type: "string", default: "10" },
      ramp: { type: "string", default: "300" },
      workers: { type: "string" },
      backend: { type: "string", default: "sqlite" },
    },
    strict: true,
  });
  const clients = Number(values.clients);
  const intervalMs = Number(values.interval) * 1000;
  const seconds = Number(values.seconds);
  const backend = values.backend!;
  if (backend !== "sqlite" && backend !== "mariadb") throw new Error("--backend is sqlite or mariadb");
  const log = (s: string) => console.error(`poll: ${s}`);

  let db: TestDatabase | undefined;
  let server: BenchServer | undefined;
  let fleet: Fleet | undefined;
  let result: Record<string, unknown>;
  try {
    if (backend === "mariadb") db = await createTestDatabase();
    server = await startBenchServer({ name: "frontend", frontend: {}, services: noopServices(), ...(db ? { mysqlDsn: db.dsn } : {}) });
    const pki = benchPki();
    fleet = await Fleet.start({
      clients,
      ...(values.workers ? { workers: Number(values.workers) } : {}),
      target: { host: "127.0.0.1", port: server.frontendPort!, servername: "localhost", caPem: pki.caCertPem, services: ["TestService"] },
      mode: "poll",
      rampPerSec: Number(values.ramp),
      pollIntervalMs: intervalMs,
      maxSeconds: Number(values.warmup) + clients / Number(values.ramp) + seconds + 300,
    });
    // The first polls make the clients (and their TLS connections), at most --ramp per second;
    // measure after that.
    const rampSeconds = Math.max(intervalMs / 1000, clients / Number(values.ramp));
    await new Promise((r) => setTimeout(r, Math.max(Number(values.warmup), rampSeconds + intervalMs / 1000) * 1000));
    const a = await fleet.refresh();
    fleet.takePollTimes();
    const dbPid = backend === "mariadb" ? Number(readFileSync("/run/mysqld/mysqld.pid", "utf8").trim()) : undefined;
    const cpu0 = treeCpuSeconds(server.pid);
    const db0 = dbPid ? cpuSeconds(dbPid) : 0;
    const m0 = machineCpu();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const b = await fleet.refresh();
    const elapsed = (Date.now() - t0) / 1000;
    const polls = b.polls - a.polls;
    const serverCpu = treeCpuSeconds(server.pid) - cpu0;
    const times = summarize(fleet.takePollTimes());
    for (const w of warnings(server, 3)) log(`server warned: ${w}`);
    result = {
      scenario: "poll",
      backend,
      clients,
      intervalSeconds: intervalMs / 1000,
      offeredPerSec: Math.round(clients / (intervalMs / 1000)),
      pollsPerSec: Math.round(polls / elapsed),
      pollsOnNewConnection: b.pollsOnNewConnection - a.pollsOnNewConnection,
      pollsSkipped: b.pollsSkipped - a.pollsSkipped,
      errors: b.errors,
      latencyMs: rounded(times),
      serverCpuMsPerPoll: Number(((serverCpu * 1000) / Math.max(1, polls)).toFixed(2)),
      serverCpuCores: Number((serverCpu / elapsed).toFixed(2)),
      ...(dbPid ? { databaseCpuCores: Number(((cpuSeconds(dbPid) - db0) / elapsed).toFixed(2)) } : {}),
      machineBusyPercent: busyPercent(m0, machineCpu()),
      loadAverage: Number(loadavg()[0]!.toFixed(1)),
    };
    log(`${result.pollsPerSec}/${result.offeredPerSec} polls/s, p50 ${times.p50.toFixed(1)} ms, p99 ${times.p99.toFixed(1)} ms`);
  } finally {
    await fleet?.stop();
    await server?.stop();
    await db?.drop();
  }
  printResult(result);
  const lat = result.latencyMs as ReturnType<typeof rounded>;
  appendResultRow(
    "poll (issue 8): polling clients on one frontend",
    "One fleetspeak-server process (frontend); C clients each POST /message every I seconds on a kept-alive TLS connection. Latency = request written → response read (no handshake).",
    ["Date", "Commit", "Machine", "Command", "Backend", "Clients", "Offered polls/s", "Polls/s", "p50 ms", "p99 ms", "Server CPU ms/poll", "Errors", "Machine busy %"],
    [
      today(),
      gitCommit(),
      machine(),
      `\`${command("poll", args)}\``,
      backend,
      String(clients),
      String(result.offeredPerSec),
      String(result.pollsPerSec),
      String(lat.p50),
      String(lat.p99),
      String(result.serverCpuMsPerPoll),
      String(Object.values(result.errors as Record<string, number>).reduce((x, y) => x + y, 0)),
      String(result.machineBusyPercent),
    ],
  );
}
