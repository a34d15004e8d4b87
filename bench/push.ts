// push: the delay from InsertMessage to the client, with C connected streaming clients and R
// messages per second inserted through the admin API.
//   npm run bench -- push [--clients 2000] [--rate 500] [--seconds 30] [--setups sqlite,split,split-nonotify]
//                         [--schema ours|fleetspeak]
// --schema fleetspeak: the database is first made by the real Fleetspeak (Go) server and adopted
// (MySQL in place at start, the SQLite file converted by migrate), as after an in-place upgrade.
// Setups:
//   sqlite          one process, frontend + admin, SQLite (notifications stay in-process);
//   split           MariaDB, 2 frontend-only servers (notification listeners, proxy_protocol) and
//                   2 admin-only servers (notification_use_http_notifier) behind HAProxy (clients
//                   through send-proxy-v2, admin calls through the admin tier);
//   split-nonotify  the same with admin servers that do not notify: messages reach clients only
//                   through the frontends' periodic due-message sweep (the delay notifications remove).
// Each message carries the time its InsertMessage call started; the client notes when it arrived.
// A warm-up of --warmup seconds at the same rate comes first and is not counted. Mosquitto with
// the same clients and rate (one publisher, QoS 1) is measured in the same run.
import { mkdtempSync, readFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../test/support/haproxy.js";
import { startGaleraCluster } from "../test/support/galera.js";
import { createTestDatabase, type TestDatabase } from "../test/support/mariadb.js";
import { type ManagedProcess, startHaproxyProcess } from "../test/support/processes.js";
import { Fleet } from "./loadgen/fleet.js";
import { benchPki, clientIdentities } from "./loadgen/identities.js";
import { insertAtRate, type LeanAdmin, leanAdmin } from "./loadgen/inserter.js";
import { parseSchemaOrigin, prepareDatabase, type SchemaOrigin } from "./loadgen/schema.js";
import { mainThreadProfile, topFunctions } from "./loadgen/profile.js";
import { allProcessCpu, busyPercent, machineCpu, topCpuUsers, treeCpuSeconds } from "./loadgen/processes.js";
import { appendResultRow, command, gitCommit, machine, printResult, rounded, type Summary, summarize, today } from "./loadgen/report.js";
import { type BenchServer, noopServices, startBenchServer, warnings } from "./loadgen/servers.js";
import { mosquittoPush, startMosquitto } from "./mosquitto.js";
import { nowMs } from "./loadgen/wire.js";

const SETUPS = ["sqlite", "mariadb", "galera", "split", "split-nonotify"] as const;
type SetupName = (typeof SETUPS)[number];
/** Issue 8's goal for p99 at 500 msgs/s with 2,000 clients; Fleetspeak (Go) ≈ 1 s p50. */
const GOAL_P99_MS = 50;

interface Options {
  clients: number;
  rate: number;
  seconds: number;
  warmup: number;
  workers?: number;
  /** Who made the database: a new one (ours) or one Fleetspeak (Go) made and ours adopted. */
  schema: SchemaOrigin;
  cpuProf: boolean;
  /** --server-workers: every server's worker processes (default: the binary's). */
  serverWorkers?: number;
  /** --worker-ports: the split setup's frontends give each worker its own notification port. */
  workerPorts?: boolean;
  log: (s: string) => void;
}

export interface PushFigures {
  setup: SetupName;
  clients: number;
  rate: number;
  inserted: number;
  insertFailed: number;
  insertErrors: Record<string, number>;
  slipped: number;
  received: number;
  lost: number;
  duplicates: number;
  latencyMs: Summary;
  insertCallMs: Summary;
  /** CPU seconds per second of each server process during the measured window. */
  serverCpu: Record<string, number>;
  /** The whole machine's CPU busy during the window (other work on the machine included), %. */
  machineBusyPercent: number;
  loadAverage: number;
  cpuProfiles?: Record<string, { totalMs: number; top: ReturnType<typeof topFunctions>["top"] }>;
}

interface Topology {
  clientPort: number;
  admins: LeanAdmin[];
  servers: BenchServer[];
  stop(): Promise<void>;
}

const admin = (address: string) => leanAdmin(address);

function profileFlags(o: Options, name: string, dirs: Map<string, string>): string[] {
  if (!o.cpuProf) return [];
  const dir = `/tmp/fs-bench-push-prof-${name}-${process.pid}`;
  dirs.set(name, dir);
  return ["--cpu-prof", `--cpu-prof-dir=${dir}`];
}

/** One process with both components: on SQLite in its directory, or on a new MariaDB database. */
async function oneProcessTopology(backend: "sqlite" | "mariadb" | "galera", o: Options, profDirs: Map<string, string>): Promise<Topology> {
  const dir = mkdtempSync(join(tmpdir(), `fs-bench-push-${backend}-`));
  const db = backend === "mariadb" ? await createTestDatabase() : backend === "galera" ? await galeraDatabase() : undefined;
  await prepareDatabase(o.schema, db ? { mysqlDsn: db.dsn } : { dir });
  const server = await startBenchServer({
    dir,
    name: "server",
    frontend: {},
    admin: true,
    services: noopServices(),
    nodeFlags: profileFlags(o, `server-${backend}`, profDirs),
    ...(db ? { mysqlDsn: db.dsn } : {}),
    ...(o.serverWorkers ? { workers: o.serverWorkers } : {}),
  });
  const admins = [0, 1, 2, 3].map(() => admin(server.adminAddress!));
  return {
    clientPort: server.frontendPort!,
    admins,
    servers: [server],
    stop: async () => {
      for (const a of admins) a.close();
      await server.stop();
      await db?.drop();
    },
  };
}

/** A database on node 1 of a new 3-node Galera cluster (every commit certified by all three). */
async function galeraDatabase(): Promise<{ dsn: string; drop(): Promise<void> }> {
  const cluster = await startGaleraCluster();
  await cluster.createDatabase("fleetspeak");
  return { dsn: cluster.nodes[0]!.dsn("fleetspeak"), drop: () => cluster.destroy() };
}

/** 2 frontends + 2 admin servers on MariaDB behind HAProxy; the admins restartable without notifier. */
class SplitTopology implements Topology {
  clientPort = 0;
  admins: LeanAdmin[] = [];
  servers: BenchServer[] = [];
  private frontends: BenchServer[] = [];
  private adminServers: BenchServer[] = [];
  private haproxy: ManagedProcess | undefined;
  private db: TestDatabase | undefined;
  private adminPort = 0;

  constructor(
    private readonly o: Options,
    private readonly profDirs: Map<string, string>,
  ) {}

  async start(notify: boolean): Promise<void> {
    this.db = await createTestDatabase();
    await prepareDatabase(this.o.schema, { mysqlDsn: this.db.dsn });
    for (const i of [1, 2]) {
      this.frontends.push(
        await startBenchServer({
          name: `frontend-${i}`,
          frontend: { proxyProtocol: true },
          notifications: true,
          ...(this.o.workerPorts ? { workerNotificationPorts: true } : {}),
          mysqlDsn: this.db.dsn,
          services: noopServices(),
          nodeFlags: profileFlags(this.o, `frontend-${i}`, this.profDirs),
          ...(this.o.serverWorkers ? { workers: this.o.serverWorkers } : {}),
        }),
      );
    }
    await this.startAdmins(notify);
    this.clientPort = await freePort();
    this.adminPort = await freePort();
    const cfg = [
      "global",
      "  maxconn 8000",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 20m",
      "  timeout server 20m",
      "frontend fleetspeak_clients",
      `  bind 127.0.0.1:${this.clientPort}`,
      "  default_backend fleetspeak_frontends",
      "backend fleetspeak_frontends",
      "  balance leastconn",
      ...this.frontends.map((f, i) => `  server frontend-${i + 1} 127.0.0.1:${f.frontendPort} send-proxy-v2`),
      "frontend fleetspeak_admin",
      `  bind 127.0.0.1:${this.adminPort}`,
      "  default_backend fleetspeak_admins",
      "backend fleetspeak_admins",
      "  balance roundrobin",
      ...this.adminServers.map((a, i) => `  server admin-${i + 1} ${a.adminAddress}`),
      "",
    ].join("\n");
    this.haproxy = await startHaproxyProcess("haproxy", cfg, [this.clientPort, this.adminPort]);
    this.admins = [0, 1, 2, 3].map(() => admin(`127.0.0.1:${this.adminPort}`));
  }

  private async startAdmins(notify: boolean, addresses?: string[]): Promise<void> {
    this.adminServers = [];
    for (const i of [1, 2]) {
      const s = await startBenchServer({
        name: `admin-${i}`,
        admin: true,
        httpNotifier: notify,
        mysqlDsn: this.db!.dsn,
        services: noopServices(),
        nodeFlags: profileFlags(this.o, `admin-${i}${notify ? "" : "-nonotify"}`, this.profDirs),
        ...(this.o.serverWorkers ? { workers: this.o.serverWorkers } : {}),
        ...(addresses ? { adminAddress: addresses[i - 1]! } : {}),
      });
      this.adminServers.push(s);
    }
    this.servers = [...this.frontends, ...this.adminServers];
  }

  /** New admin servers on the same addresses (HAProxy keeps pointing at them). */
  async restartAdmins(notify: boolean): Promise<void> {
    const addresses = this.adminServers.map((a) => a.adminAddress!);
    for (const a of this.admins) a.close();
    for (const a of this.adminServers) await a.stop();
    await this.startAdmins(notify, addresses);
    // Fresh gRPC connections, so that the calls spread over both new admin servers.
    for (const a of this.admins) a.close();
    this.admins = [0, 1, 2, 3].map(() => admin(`127.0.0.1:${this.adminPort}`));
  }

  async stop(): Promise<void> {
    for (const a of this.admins) a.close();
    await this.haproxy?.stop();
    for (const s of [...this.adminServers, ...this.frontends]) await s.stop();
    await this.db?.drop();
  }
}

async function measure(setup: SetupName, topo: Topology, fleet: Fleet, clientIds: Uint8Array[], o: Options): Promise<PushFigures> {
  const warm = Math.round(o.rate * o.warmup);
  if (warm > 0) {
    const start = (await fleet.refresh()).received;
    const w = await insertAtRate({ admins: topo.admins, clientIds, service: "TestService", rate: o.rate, count: warm });
    await fleet.until((t) => t.received - start >= w.ok, 20_000);
    o.log(`${setup}: warm-up ${w.ok}/${warm} inserted`);
  }
  const before = await fleet.refresh();
  fleet.takeLatencies();
  const since = nowMs();
  const watched = [...topo.servers.map((s) => ({ name: s.name, pid: s.pid })), ...databasePid()];
  const cpu0 = watched.map((s) => treeCpuSeconds(s.pid));
  const machine0 = machineCpu();
  const procs0 = allProcessCpu();
  const t0 = Date.now();
  const count = Math.round(o.rate * o.seconds);
  const ins = await insertAtRate({ admins: topo.admins, clientIds, service: "TestService", rate: o.rate, count });
  const elapsed = (Date.now() - t0) / 1000;
  const machineBusy = busyPercent(machine0, machineCpu());
  for (const line of topCpuUsers(procs0, allProcessCpu(), elapsed)) o.log(`${setup}: cpu ${line}`);
  const serverCpu = Object.fromEntries(watched.map((s, i) => [s.name, Number(((treeCpuSeconds(s.pid) - cpu0[i]!) / elapsed).toFixed(2))]));
  // Delivery after the last insert: the sweep runs every 5 s, so give it time. Messages of the
  // warm-up that arrive in this window are not counted.
  const latencies: number[] = [];
  const after = await fleet.until(
    () => {
      for (const v of fleet.takeLatencies(since)) latencies.push(v);
      return latencies.length >= ins.ok;
    },
    30_000,
  );
  for (const v of fleet.takeLatencies(since)) latencies.push(v);
  const received = latencies.length;
  o.log(`${setup}: ${ins.ok}/${count} inserted in ${ins.seconds.toFixed(1)} s, ${received} received`);
  for (const s of topo.servers) for (const w of warnings(s, 3)) o.log(`${s.name} warned: ${w}`);
  const notes: Record<string, string> = {};
  for (const s of topo.servers) {
    const text = await (await fetch(`http://${s.metricsAddress}/metrics`)).text();
    notes[s.name] = text
      .split("\n")
      .filter((l) => l.startsWith("fleetspeak_notifications_"))
      .join("; ");
  }
  o.log(`${setup}: notifications ${JSON.stringify(notes)}`);
  return {
    setup,
    clients: o.clients,
    rate: o.rate,
    inserted: ins.ok,
    insertFailed: ins.failed,
    insertErrors: ins.errors,
    slipped: ins.slipped,
    received,
    lost: ins.ok - received,
    duplicates: after.duplicates - before.duplicates,
    latencyMs: rounded(summarize(latencies)),
    insertCallMs: rounded(summarize(ins.callMs)),
    serverCpu,
    machineBusyPercent: machineBusy,
    loadAverage: Number(loadavg()[0]!.toFixed(1)),
  };
}

/** The shared MariaDB server (system instance) when the setup uses it, for its CPU. */
function databasePid(): { name: string; pid: number }[] {
  try {
    return [{ name: "mariadbd", pid: Number(readFileSync("/run/mysqld/mysqld.pid", "utf8").trim()) }];
  } catch {
    return [];
  }
}

async function connectFleet(port: number, o: Options): Promise<Fleet> {
  const pki = benchPki();
  const fleet = await Fleet.start({
    clients: o.clients,
    ...(o.workers ? { workers: o.workers } : {}),
    target: { host: "127.0.0.1", port, servername: "localhost", caPem: pki.caCertPem, services: ["TestService"] },
    mode: "stream",
    rampPerSec: 1000,
    maxSeconds: 1800,
  });
  const up = await fleet.until((t) => t.open >= o.clients, 180_000);
  if (up.open < o.clients) {
    await fleet.stop();
    throw new Error(`only ${up.open}/${o.clients} clients connected: ${JSON.stringify(up.errors)}`);
  }
  return fleet;
}

function profiles(dirs: Map<string, string>): PushFigures["cpuProfiles"] {
  const out: NonNullable<PushFigures["cpuProfiles"]> = {};
  for (const [name, dir] of dirs) {
    const f = mainThreadProfile(dir);
    if (!f) continue;
    const p = topFunctions(f, 15);
    out[name] = { totalMs: p.totalMs, top: p.top };
    console.error(`push: CPU profile of ${name}: ${f}`);
    for (const t of p.top) console.error(`  ${t.percent}% ${t.selfMs} ms ${t.fn} ${t.where}`);
  }
  dirs.clear();
  return out;
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      clients: { type: "string", default: "2000" },
      rate: { type: "string", default: "500" },
      seconds: { type: "string", default: "30" },
      warmup: { type: "string", default: "5" },
      setups: { type: "string", default: "sqlite,split,split-nonotify" },
      workers: { type: "string" },
      "server-workers": { type: "string" },
      "worker-ports": { type: "boolean", default: false },
      peer: { type: "string", default: "mosquitto" },
      schema: { type: "string", default: "ours" },
      "cpu-prof": { type: "boolean", default: false },
    },
    strict: true,
  });
  const o: Options = {
    clients: Number(values.clients),
    rate: Number(values.rate),
    seconds: Number(values.seconds),
    warmup: Number(values.warmup),
    ...(values.workers ? { workers: Number(values.workers) } : {}),
    ...(values["server-workers"] ? { serverWorkers: Number(values["server-workers"]) } : {}),
    ...(values["worker-ports"] ? { workerPorts: true } : {}),
    schema: parseSchemaOrigin(values.schema!),
    cpuProf: values["cpu-prof"] ?? false,
    log: (s) => console.error(`push: ${s}`),
  };
  const setups = values.setups!.split(",").map((s) => s.trim()) as SetupName[];
  for (const s of setups) if (!SETUPS.includes(s)) throw new Error(`unknown setup ${s}; choose from ${SETUPS.join(", ")}`);
  const ids = clientIdentities(0, o.clients).map((c) => Buffer.from(c.id, "hex"));
  const results: PushFigures[] = [];

  const profDirs = new Map<string, string>();
  for (const backend of ["sqlite", "mariadb", "galera"] as const) {
    if (!setups.includes(backend)) continue;
    const topo = await oneProcessTopology(backend, o, profDirs);
    let fleet: Fleet | undefined;
    try {
      fleet = await connectFleet(topo.clientPort, o);
      results.push(await measure(backend, topo, fleet, ids, o));
    } finally {
      await fleet?.stop();
      await topo.stop();
    }
    if (o.cpuProf) results[results.length - 1]!.cpuProfiles = profiles(profDirs);
  }
  const split = setups.filter((s) => s === "split" || s === "split-nonotify");
  if (split.length > 0) {
    const topo = new SplitTopology(o, profDirs);
    let fleet: Fleet | undefined;
    try {
      await topo.start(split[0] === "split");
      fleet = await connectFleet(topo.clientPort, o);
      for (const [i, s] of split.entries()) {
        if (i > 0) await topo.restartAdmins(s === "split");
        results.push(await measure(s, topo, fleet, ids, o));
      }
    } finally {
      await fleet?.stop();
      await topo.stop();
    }
    if (o.cpuProf) results[results.length - 1]!.cpuProfiles = profiles(profDirs);
  }

  let peer: Awaited<ReturnType<typeof mosquittoPush>> | undefined;
  if (values.peer === "mosquitto") {
    const broker = await startMosquitto();
    try {
      peer = await mosquittoPush({ broker, clients: o.clients, rate: o.rate, seconds: o.seconds, log: o.log });
    } finally {
      await broker.stop();
    }
  }

  printResult({ scenario: "push", clients: o.clients, rate: o.rate, seconds: o.seconds, goalP99Ms: GOAL_P99_MS, results, peer });
  for (const r of results) {
    appendResultRow(
      "push (issue 7/8): InsertMessage → client receipt",
      `C streaming clients, R InsertMessage calls per second for D seconds (after a warm-up), each message for the next client in turn; delay from the start of the InsertMessage call to the client's receipt. sqlite = one process (frontend + admin); mariadb = the same on MariaDB; galera = the same on node 1 of a 3-node Galera cluster; split = MariaDB, 2 frontends + 2 admin servers behind HAProxy with HTTP notifications; split-nonotify = the same without notifications (delivery by the frontends' due-message sweep). Goal: p99 ≤ ${GOAL_P99_MS} ms at 500 msgs/s with 2,000 clients (issue 7: p50 ≤ 10 ms, p99 ≤ 100 ms on split); Fleetspeak (Go) ≈ 1,000 ms p50. Peer: Mosquitto, one publisher at the same rate, QoS 1.`,
      ["Date", "Commit", "Machine", "Command", "Setup", "Clients", "Msgs/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "Lost", "Mosquitto p50/p99 ms", "p99 ours/Mosquitto"],
      [
        today(),
        gitCommit(),
        machine(),
        `\`${command("push", args)}\``,
        o.schema === "fleetspeak" ? `${r.setup} (adopted from Fleetspeak)` : r.setup,
        String(r.clients),
        String(r.rate),
        String(r.latencyMs.p50),
        String(r.latencyMs.p95),
        String(r.latencyMs.p99),
        String(r.latencyMs.max),
        String(r.lost),
        peer ? `${peer.latencyMs.p50}/${peer.latencyMs.p99}` : "-",
        peer ? `${(r.latencyMs.p99 / peer.latencyMs.p99).toFixed(1)}×` : "-",
      ],
    );
  }
}
