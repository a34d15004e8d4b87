// ingest: client messages per second one frontend process takes in, stores and forwards to the
// integrator (a Processor gRPC server standing in for GRR).
//   npm run bench -- ingest [--clients 100] [--batch 10] [--window 1] [--backends sqlite,mariadb]
//                           [--schema ours|fleetspeak]
// C streaming clients each keep --window frames of --batch messages (--size bytes of payload) in
// flight and send the next frame as soon as the server acknowledges one (closed loop: the highest
// rate the server sustains). After --warmup seconds, counts for --seconds: messages acknowledged
// to clients (= stored: the server acks a frame once its messages are processed and stored) and
// messages the Processor received, then how long the forwarding backlog takes to drain.
// On MariaDB a fresh database on 127.0.0.1:3306 (root) is used and dropped. --schema fleetspeak:
// the database (or SQLite file) is first made by the real Fleetspeak (Go) server and adopted.
// --processor go (default): a gRPC-Go Processor in its own process that counts calls
// (bench/loadgen/go-processor, built with the Go that scripts/test-deps.sh installs); --processor
// node (formerly "raw"): the same with node:http2 (~40 µs of CPU per call here, 2–3× Go's, taken
// from the server on a 2-core machine); --processor connect: test/support/processor-server.ts in
// this process (connect-node, records every message; it costs about a core at ~2,600 calls/s
// here, so it caps the figure). --max-parallelism sets the GRPC service's max_parallelism: Fleetspeak's
// default (0 = 100 messages in flight) sends what exceeds it to the backlog, retried 1–2 minutes
// later, so the default here (1000) keeps the in-flight messages (clients × window × batch) under it.
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { createTestDatabase, type TestDatabase } from "../test/support/mariadb.js";
import { startProcessor, type TestProcessor } from "../test/support/processor-server.js";
import { Fleet } from "./loadgen/fleet.js";
import { parseSchemaOrigin, prepareDatabase, type SchemaOrigin } from "./loadgen/schema.js";
import { startCountingProcessor, startGoProcessor } from "./loadgen/processor.js";
import { benchPki } from "./loadgen/identities.js";
import { mainThreadProfile, selfTimeByModule, topFunctions } from "./loadgen/profile.js";
import { allProcessCpu, busyPercent, cpuSeconds, machineCpu, treeCpuSeconds, topCpuUsers } from "./loadgen/processes.js";
import { appendResultRow, command, gitCommit, machine, printResult, today } from "./loadgen/report.js";
import { type BenchServer, grpcServices, startBenchServer, warnings } from "./loadgen/servers.js";

const BACKENDS = ["sqlite", "mariadb"] as const;
const PROCESSORS = ["go", "node", "connect"] as const;
type ProcessorKind = (typeof PROCESSORS)[number];
type Backend = (typeof BACKENDS)[number];
/** Issue 8's goal on MariaDB; Fleetspeak (Go) ≈ 1,600/s on MariaDB, ≈ 5,800/s on SQLite. */
const GOAL_PER_SEC = 5000;
const FLEETSPEAK_PER_SEC: Record<Backend, number> = { sqlite: 5800, mariadb: 1600 };

interface Options {
  clients: number;
  batch: number;
  window: number;
  size: number;
  seconds: number;
  warmup: number;
  maxParallelism: number;
  processor: ProcessorKind;
  /** Who made the database: a new one (ours) or one Fleetspeak (Go) made and ours adopted. */
  schema: SchemaOrigin;
  cpuProf: boolean;
  /** --server-workers: the server's worker processes (default: the binary's). */
  serverWorkers?: number;
  log: (s: string) => void;
}

interface IngestFigures {
  backend: Backend;
  storedPerSec: number;
  forwardedPerSec: number;
  /** Messages acknowledged but not yet forwarded when sending stopped. */
  backlogAtStop: number;
  /** Seconds until the Processor had every acknowledged message (-1: not within 60 s). */
  drainSeconds: number;
  ratioToGoal: number;
  ratioToFleetspeakGo: number;
  serverCpuCores: number;
  databaseCpuCores?: number;
  machineBusyPercent: number;
  loadAverage: number;
  errors: Record<string, number>;
  cpuProfile?: { modules: ReturnType<typeof selfTimeByModule>; top: ReturnType<typeof topFunctions>["top"] };
}

function databasePid(): number | undefined {
  try {
    return Number(readFileSync("/run/mysqld/mysqld.pid", "utf8").trim());
  } catch {
    return undefined;
  }
}

async function measure(backend: Backend, o: Options): Promise<IngestFigures> {
  let db: TestDatabase | undefined;
  let processor: { address: string; count(): Promise<number>; stop(): Promise<void> } | undefined;
  let server: BenchServer | undefined;
  let fleet: Fleet | undefined;
  const profDir = `/tmp/fs-bench-ingest-prof-${backend}-${process.pid}`;
  try {
    if (o.processor === "go") processor = await startGoProcessor();
    else if (o.processor === "node") processor = await startCountingProcessor();
    else {
      const p: TestProcessor = await startProcessor();
      processor = { address: p.address, count: async () => p.processed.length, stop: () => p.close() };
    }
    if (backend === "mariadb") db = await createTestDatabase();
    const dir = mkdtempSync(join(tmpdir(), `fs-bench-ingest-${backend}-`));
    await prepareDatabase(o.schema, db ? { mysqlDsn: db.dsn } : { dir });
    server = await startBenchServer({
      dir,
      name: `frontend-${backend}`,
      frontend: {},
      services: grpcServices("GRR", processor.address, o.maxParallelism),
      ...(db ? { mysqlDsn: db.dsn } : {}),
      ...(o.cpuProf ? { nodeFlags: ["--cpu-prof", `--cpu-prof-dir=${profDir}`] } : {}),
      ...(o.serverWorkers ? { workers: o.serverWorkers } : {}),
    });
    const pki = benchPki();
    fleet = await Fleet.start({
      clients: o.clients,
      target: { host: "127.0.0.1", port: server.frontendPort!, servername: "localhost", caPem: pki.caCertPem, services: [] },
      mode: "stream",
      rampPerSec: 1000,
      maxSeconds: o.warmup + o.seconds + 600,
    });
    const up = await fleet.until((t) => t.open >= o.clients, 120_000);
    if (up.open < o.clients) throw new Error(`only ${up.open}/${o.clients} clients connected: ${JSON.stringify(up.errors)}`);
    fleet.send({ type: "ingest", service: "GRR", size: o.size, batch: o.batch, window: o.window, perSecond: 0 });
    await new Promise((r) => setTimeout(r, o.warmup * 1000));

    const dbPid = backend === "mariadb" ? databasePid() : undefined;
    const a = await fleet.refresh();
    const p0 = await processor.count();
    const cpu0 = treeCpuSeconds(server.pid);
    const db0 = dbPid ? cpuSeconds(dbPid) : 0;
    const m0 = machineCpu();
    const procs0 = allProcessCpu();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, o.seconds * 1000));
    const b = await fleet.refresh();
    const p1 = await processor.count();
    const elapsed = (Date.now() - t0) / 1000;
    const serverCpu = (treeCpuSeconds(server.pid) - cpu0) / elapsed;
    const dbCpu = dbPid ? (cpuSeconds(dbPid) - db0) / elapsed : undefined;
    const busy = busyPercent(m0, machineCpu());
    for (const line of topCpuUsers(procs0, allProcessCpu(), elapsed)) o.log(`${backend}: cpu ${line}`);

    fleet.send({ type: "ingest-stop" });
    // Frames in flight still arrive; wait for their acks, then for the Processor to catch up.
    await new Promise((r) => setTimeout(r, 2000));
    const stopped = await fleet.refresh();
    const backlog = stopped.ingestAcked - (await processor.count());
    const drainStart = Date.now();
    let drain = -1;
    while (Date.now() - drainStart < 60_000) {
      if ((await processor.count()) >= stopped.ingestAcked) {
        drain = (Date.now() - drainStart) / 1000;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const w of warnings(server, 3)) o.log(`${backend}: server warned: ${w}`);
    const stored = (b.ingestAcked - a.ingestAcked) / elapsed;
    const forwarded = (p1 - p0) / elapsed;
    o.log(`${backend}: ${Math.round(stored)} msgs/s stored, ${Math.round(forwarded)} msgs/s forwarded; backlog ${backlog}`);
    return {
      backend,
      storedPerSec: Math.round(stored),
      forwardedPerSec: Math.round(forwarded),
      backlogAtStop: backlog,
      drainSeconds: Number(drain.toFixed(1)),
      ratioToGoal: Number((forwarded / GOAL_PER_SEC).toFixed(2)),
      ratioToFleetspeakGo: Number((forwarded / FLEETSPEAK_PER_SEC[backend]).toFixed(2)),
      serverCpuCores: Number(serverCpu.toFixed(2)),
      ...(dbCpu !== undefined ? { databaseCpuCores: Number(dbCpu.toFixed(2)) } : {}),
      machineBusyPercent: busy,
      loadAverage: Number(loadavg()[0]!.toFixed(1)),
      errors: b.errors,
    };
  } finally {
    await fleet?.stop();
    await server?.stop();
    await processor?.stop();
    await db?.drop();
  }
}

function processorKind(name: string): ProcessorKind {
  if (name === "raw") return "node"; // its name before the Go one
  if ((PROCESSORS as readonly string[]).includes(name)) return name as ProcessorKind;
  throw new Error(`unknown --processor ${name}; choose from ${PROCESSORS.join(", ")}`);
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      clients: { type: "string", default: "100" },
      batch: { type: "string", default: "10" },
      window: { type: "string", default: "1" },
      size: { type: "string", default: "256" },
      seconds: { type: "string", default: "20" },
      warmup: { type: "string", default: "5" },
      "max-parallelism": { type: "string", default: "1000" },
      processor: { type: "string", default: "go" },
      backends: { type: "string", default: BACKENDS.join(",") },
      schema: { type: "string", default: "ours" },
      "cpu-prof": { type: "boolean", default: false },
      "server-workers": { type: "string" },
    },
    strict: true,
  });
  const o: Options = {
    ...(values["server-workers"] ? { serverWorkers: Number(values["server-workers"]) } : {}),
    clients: Number(values.clients),
    batch: Number(values.batch),
    window: Number(values.window),
    size: Number(values.size),
    seconds: Number(values.seconds),
    warmup: Number(values.warmup),
    maxParallelism: Number(values["max-parallelism"]),
    processor: processorKind(values.processor!),
    schema: parseSchemaOrigin(values.schema!),
    cpuProf: values["cpu-prof"] ?? false,
    log: (s) => console.error(`ingest: ${s}`),
  };
  const backends = values.backends!.split(",").map((s) => s.trim()) as Backend[];
  for (const b of backends) if (!BACKENDS.includes(b)) throw new Error(`unknown backend ${b}; choose from ${BACKENDS.join(", ")}`);
  const results: IngestFigures[] = [];
  for (const b of backends) {
    const r = await measure(b, o);
    if (o.cpuProf) {
      const f = mainThreadProfile(`/tmp/fs-bench-ingest-prof-${b}-${process.pid}`);
      if (f) {
        r.cpuProfile = { modules: selfTimeByModule(f, 15), top: topFunctions(f, 20).top };
        o.log(`${b}: CPU profile ${f}`);
        for (const m of r.cpuProfile.modules) o.log(`  ${m.percent}% ${m.module}`);
        for (const t of r.cpuProfile.top) o.log(`  ${t.percent}% ${t.fn} ${t.where}`);
      }
    }
    results.push(r);
  }
  printResult({ scenario: "ingest", ...o, log: undefined, goalPerSec: GOAL_PER_SEC, results });
  for (const r of results) {
    appendResultRow(
      "ingest (issue 8): client messages stored and forwarded per second, one frontend",
      `One fleetspeak-server process (frontend) with a GRPC service forwarding to a Processor (a counting one in its own process: gRPC-Go, or node:http2 with --processor node, or connect-node in the benchmark with --processor connect); C streaming clients keep W frames of B messages in flight (closed loop). Stored = acknowledged to the clients; forwarded = received by the Processor. Goal: ≥ ${GOAL_PER_SEC} msgs/s per frontend on MariaDB; Fleetspeak (Go) ≈ 1,600/s on MariaDB, ≈ 5,800/s on SQLite.`,
      ["Date", "Commit", "Machine", "Command", "Backend", "Stored msgs/s", "Forwarded msgs/s", "vs goal", "vs Go", "Server CPU cores", "DB CPU cores", "Machine busy %"],
      [
        today(),
        gitCommit(),
        machine(),
        `\`${command("ingest", args)}\``,
        o.schema === "fleetspeak" ? `${r.backend} (adopted from Fleetspeak)` : r.backend,
        String(r.storedPerSec),
        String(r.forwardedPerSec),
        `${r.ratioToGoal}×`,
        `${r.ratioToFleetspeakGo}×`,
        String(r.serverCpuCores),
        r.databaseCpuCores !== undefined ? String(r.databaseCpuCores) : "-",
        String(r.machineBusyPercent),
      ],
    );
  }
}
