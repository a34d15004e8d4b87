// faults — what each fault costs on the seed topology: 2 frontends and 2 admin servers (real
// processes) behind HAProxy, ~50 simulated streaming clients that acknowledge every delivery, and
// a steady InsertMessage stream through the admin balancer. Each fault (SIGKILL a frontend,
// SIGKILL an admin server, restart the single MariaDB, kill a Galera node and bring it back,
// SIGTERM a frontend) is applied while the load runs, then undone, `--repeat` times. Per fault:
// messages acknowledged to the inserter but never delivered (goal 0), delivered again after the
// server stored their ack, client-visible errors (failed or broken streams; failed InsertMessage
// calls), the worst delivery delay around the fault and the time until delays were under 1 s.
//
//   npm run bench -- faults [--setups mariadb,galera,galera-haproxy] [--faults LIST] [--repeat N]
//                           [--clients 50] [--rate 30] [--observe 25]
//
// Setups: mariadb (a private MariaDB, restartable), galera (3 nodes; frontend-1 and admin-2 on
// node 1, frontend-2 on node 2, admin-1 on node 3), galera-haproxy (every server through HAProxy
// in front of the cluster, single writer: node 1, the others backups).
import { loadavg } from "node:os";
import mysql from "mysql2/promise";
import { parseMysqlDsn } from "../src/common/mysql-dsn.js";
import { parseArgs } from "node:util";
import { freePort } from "../test/support/haproxy.js";
import { type GaleraCluster, startGaleraCluster } from "../test/support/galera.js";
import { type MariadbInstance, startMariadbInstance } from "../test/support/mariadb-instance.js";
import { type ManagedProcess, startHaproxyProcess } from "../test/support/processes.js";
import { AckingClients } from "./faults/acking-clients.js";
import { type AppliedFault, applyFault, FAULTS, type FaultName } from "./faults/faults.js";
import { DeliveryLedger, type FaultFigures } from "./faults/ledger.js";
import { SeedTopology } from "./faults/seed-topology.js";
import { SteadyInserter } from "./faults/steady-inserter.js";
import { benchPki, clientIdentities } from "./loadgen/identities.js";
import { appendResultRow, command, gitCommit, machine, printResult, rounded, summarize, today } from "./loadgen/report.js";
import { nowMs } from "./loadgen/wire.js";

export const SETUPS = ["mariadb", "galera", "galera-haproxy"] as const;
export type SetupName = (typeof SETUPS)[number];

/** The faults that apply to each setup by default. */
const DEFAULT_FAULTS: Record<SetupName, FaultName[]> = {
  mariadb: ["frontend-kill", "admin-kill", "db-restart", "frontend-term"],
  galera: ["node-kill"],
  "galera-haproxy": ["node-kill"],
};

export interface FaultRunOptions {
  setup: SetupName;
  faults: FaultName[];
  repeat: number;
  clients: number;
  rate: number;
  /** Seconds of steady load before the first fault, measured as the baseline. */
  baselineSeconds: number;
  /** Seconds from each fault's start to the next fault (the fault's window). */
  observeSeconds: number;
  log: (s: string) => void;
}

/** One fault applied once, with what the clients and the inserter saw around it. */
export interface FaultRun extends FaultFigures {
  fault: FaultName;
  detail: string;
  /** Streams that failed or broke during the window, by error. */
  clientErrors: Record<string, number>;
}

export interface SetupResult {
  setup: SetupName;
  clients: number;
  rate: number;
  /** Delivery delay (InsertMessage start → receipt) during the baseline, ms. */
  baselineDelayMs: ReturnType<typeof summarize>;
  /** Transactions retried after conflicts, all servers, over the whole run. */
  transactionRetries: number;
  /** Messages lost before any fault (should be 0: the setup itself loses nothing). */
  baselineLost: number;
  /** Servers that exited by themselves during the run (none should). */
  crashed: string[];
  /** Failed InsertMessage calls of the whole run, by error. */
  insertErrors: Record<string, number>;
  runs: FaultRun[];
  loadAverage: string;
}

/** The database of a setup: the DSN of each server, and what the faults act on. */
interface Database {
  dsns: string[];
  mariadb?: MariadbInstance;
  galera?: GaleraCluster;
  stop(): Promise<void>;
}

async function startDatabase(setup: SetupName): Promise<Database> {
  if (setup === "mariadb") {
    const mariadb = await startMariadbInstance();
    await mariadb.createDatabase("fleetspeak");
    return { dsns: Array(4).fill(mariadb.dsn("fleetspeak")), mariadb, stop: () => mariadb.destroy() };
  }
  const galera = await startGaleraCluster();
  await galera.createDatabase("fleetspeak");
  if (setup === "galera") {
    const [n1, n2, n3] = galera.nodes.map((n) => n.dsn("fleetspeak"));
    return { dsns: [n1!, n2!, n3!, n1!], galera, stop: () => galera.destroy() };
  }
  const port = await freePort();
  let haproxy: ManagedProcess;
  try {
    haproxy = await startHaproxyProcess("haproxy-galera", `global\n  maxconn 2000\n${galera.haproxySingleWriter(port)}`, [port]);
  } catch (e) {
    await galera.destroy();
    throw e;
  }
  return {
    dsns: Array(4).fill(`root@tcp(127.0.0.1:${port})/fleetspeak`),
    galera,
    stop: async () => {
      await haproxy.stop();
      await galera.destroy();
    },
  };
}

function runsLostIds(ledger: DeliveryLedger, applied: AppliedFault[], stoppedAt: number): string[] {
  return applied.flatMap((f, i) => ledger.figures(f.at - 3000, applied[i + 1] ? applied[i + 1]!.at - 3000 : stoppedAt, f.at).lostIds.map((x) => x.split("@")[0]!));
}

/** The pending rows of messages (hex IDs), for the log: how often they were leased, and until when. */
async function pendingRows(dsn: string, ids: string[]): Promise<unknown[]> {
  const o = parseMysqlDsn(dsn);
  const c = await mysql.createConnection({ host: o.host!, port: o.port!, user: o.user, password: o.password, database: o.database });
  try {
    const [rows] = await c.query(
      `SELECT HEX(p.message_id) AS id, p.retry_count, (p.scheduled_time DIV 1000) - (UNIX_TIMESTAMP(NOW(3)) * 1000) AS due_in_ms,
         (SELECT COUNT(*) FROM client_contact_messages l WHERE l.message_id = p.message_id) AS contacts
       FROM pending_messages p WHERE p.message_id IN (?)`,
      [ids.map((h) => Buffer.from(h, "hex"))],
    );
    return rows as unknown[];
  } finally {
    await c.end();
  }
}

/** Sum of a counter over all its label sets, from a server's /metrics. */
async function counterTotal(address: string, name: string): Promise<number> {
  try {
    const text = await (await fetch(`http://${address}/metrics`)).text();
    let sum = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "gm"))) sum += Number(m[1]);
    return sum;
  } catch {
    return 0;
  }
}

export async function runFaults(o: FaultRunOptions): Promise<SetupResult> {
  const loads: number[] = [loadavg()[0]!];
  o.log(`${o.setup}: starting the database`);
  const db = await startDatabase(o.setup);
  let topo: SeedTopology | undefined;
  let clients: AckingClients | undefined;
  let inserter: SteadyInserter | undefined;
  try {
    topo = await SeedTopology.start({ dsns: db.dsns });
    const ledger = new DeliveryLedger();
    const identities = clientIdentities(0, o.clients);
    clients = new AckingClients({
      target: { host: "127.0.0.1", port: topo.clientPort, servername: "localhost", caPem: benchPki().caCertPem, services: ["TestService"] },
      identities,
      ledger,
      sendEveryMs: 1000,
    });
    await clients.start();
    o.log(`${o.setup}: ${o.clients} clients streaming; InsertMessage at ${o.rate}/s`);
    inserter = new SteadyInserter(`127.0.0.1:${topo.adminPort}`, identities.map((i) => Buffer.from(i.id, "hex")), ledger);
    const started = nowMs();
    inserter.start(o.rate);
    await new Promise((r) => setTimeout(r, o.baselineSeconds * 1000));
    const baselineEnd = nowMs();

    const applied: AppliedFault[] = [];
    for (const fault of o.faults) {
      for (let i = 0; i < o.repeat; i++) {
        const windowEnd = nowMs() + o.observeSeconds * 1000;
        const f = await applyFault(fault, {
          topo,
          ...(db.mariadb ? { mariadb: db.mariadb } : {}),
          ...(db.galera ? { galera: db.galera } : {}),
          log: o.log,
        });
        applied.push(f);
        loads.push(loadavg()[0]!);
        o.log(`${o.setup}: ${fault} #${i + 1}: ${f.detail}; undone after ${Math.round(f.undoneAt - f.at)} ms`);
        const rest = windowEnd - nowMs();
        if (rest > 0) await new Promise((r) => setTimeout(r, rest));
        await clients.untilAllOpen(60_000);
      }
    }
    await inserter.stop();
    const stoppedAt = nowMs();
    const crashed = topo.crashed();
    // What is due goes out at once or at the next due-message sweep (every 5 s).
    for (let waited = 0; ledger.outstanding > 0 && waited < 30_000; waited += 250) await new Promise((r) => setTimeout(r, 250));

    const lost = runsLostIds(ledger, applied, stoppedAt);
    if (lost.length > 0) o.log(`${o.setup}: lost messages as the database has them: ${JSON.stringify(await pendingRows(db.dsns[0]!, lost))}`);
    let retries = 0;
    for (const s of topo.servers) retries += await counterTotal(s.metricsAddress, "fleetspeak_datastore_transaction_retries_total");
    const baseline = ledger.figures(started, baselineEnd, baselineEnd);
    const runs = applied.map((f, i): FaultRun => {
      const from = f.at - 3000;
      const to = applied[i + 1] ? applied[i + 1]!.at - 3000 : stoppedAt;
      return { fault: f.name, detail: f.detail, ...ledger.figures(from, to, f.at), clientErrors: clients!.errorsSince(from, to) };
    });
    return {
      setup: o.setup,
      clients: o.clients,
      rate: o.rate,
      baselineDelayMs: rounded(summarize(ledger.delays(started, baselineEnd))),
      transactionRetries: retries,
      runs,
      loadAverage: `${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`,
      baselineLost: baseline.lost,
      crashed,
      insertErrors: inserter.errors,
    };
  } finally {
    await inserter?.stop();
    inserter?.close();
    clients?.stop();
    await topo?.stop();
    await db.stop();
  }
}

/** Per fault: the runs added up (lost, duplicates, errors) and the worst of each. */
export function faultRows(r: SetupResult): Array<{ fault: FaultName; runs: number; row: Record<string, number | string> }> {
  const out = [];
  for (const fault of FAULTS) {
    const runs = r.runs.filter((x) => x.fault === fault);
    if (runs.length === 0) continue;
    const sum = (f: (x: FaultRun) => number) => runs.reduce((a, x) => a + f(x), 0);
    const errs = (x: FaultRun) => Object.values(x.clientErrors).reduce((a, b) => a + b, 0);
    const recoveries = runs.map((x) => x.recoveryMs).sort((a, b) => a - b);
    out.push({
      fault,
      runs: runs.length,
      row: {
        inserted: sum((x) => x.inserted),
        lost: sum((x) => x.lost),
        deliveredAfterAck: sum((x) => x.deliveredAfterAck),
        duplicates: sum((x) => x.duplicates),
        streamErrors: sum(errs),
        insertFailed: sum((x) => x.insertFailed),
        worstDelayMs: Math.max(...runs.map((x) => x.worstDelayMs)),
        recoveryMedianMs: recoveries[Math.floor((recoveries.length - 1) / 2)]!,
        recoveryMaxMs: recoveries[recoveries.length - 1]!,
      },
    });
  }
  return out;
}

const INTRO = `The seed topology as processes (2 frontends with notification listeners and PROXY protocol, 2
admin servers with the HTTP notifier, HAProxy in front of both tiers with health checks every 1 s
and \`option redispatch\`), simulated streaming clients that acknowledge every message (MessageAck
frames every 100 ms) and send one message of their own per second, and a steady InsertMessage
stream through the admin balancer, round-robin over the clients. Each fault is applied while the
load runs and undone 5 s later (the process or node started again; a MariaDB restart is a
SIGTERM stop and a start), then the next one ~25 s after the previous. A fault's window: from 3 s
before it to 3 s before the next. lost: InsertMessage answered OK, never received (30 s after
the last insert; the goal is 0); after ack: received again after the server stored the client's
MessageAck for it; stream errors: streams refused or broken as the clients saw them; insert
errors: failed InsertMessage calls (the caller retries those); worst delay: the longest
InsertMessage → receipt time in the window; recovery: from the fault to the insert after which
every message arrived within 1 s (median and worst over the runs). Setups: mariadb (one private
MariaDB), galera (3 nodes, servers spread: frontend-1 and admin-2 on node 1, frontend-2 on node 2,
admin-1 on node 3; node 1 is killed), galera-haproxy (every server through HAProxy in front of the
cluster in single-writer mode, node 1 the writer and the one killed). Figures from a shared 2-core
machine (load average in the last column): delays are noisy, lost and after-ack counts are not.`;

const COLUMNS = [
  "date",
  "commit",
  "machine",
  "command",
  "setup",
  "fault",
  "runs",
  "inserted (acked)",
  "lost",
  "after ack",
  "stream errors",
  "insert errors",
  "worst delay ms",
  "recovery ms (median / worst)",
  "baseline delay p50 / p99 ms",
  "conflict retries",
  "load avg",
];

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      setups: { type: "string", default: "mariadb,galera,galera-haproxy" },
      faults: { type: "string" },
      repeat: { type: "string", default: "1" },
      clients: { type: "string", default: "50" },
      rate: { type: "string", default: "30" },
      baseline: { type: "string", default: "10" },
      observe: { type: "string", default: "25" },
    },
    strict: true,
  });
  const setups = values.setups.split(",") as SetupName[];
  for (const s of setups) if (!SETUPS.includes(s)) throw new Error(`--setups: unknown setup ${s}; known: ${SETUPS.join(", ")}`);
  const only = values.faults?.split(",") as FaultName[] | undefined;
  for (const f of only ?? []) if (!FAULTS.includes(f)) throw new Error(`--faults: unknown fault ${f}; known: ${FAULTS.join(", ")}`);
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const results: SetupResult[] = [];
  for (const setup of setups) {
    const faults = DEFAULT_FAULTS[setup].filter((f) => !only || only.includes(f));
    if (faults.length === 0) continue;
    const r = await runFaults({
      setup,
      faults,
      repeat: Number(values.repeat),
      clients: Number(values.clients),
      rate: Number(values.rate),
      baselineSeconds: Number(values.baseline),
      observeSeconds: Number(values.observe),
      log,
    });
    results.push(r);
    for (const { fault, runs, row } of faultRows(r)) {
      log(`${setup} ${fault} ×${runs}: ${JSON.stringify(row)}`);
      appendResultRow("faults (issue 18): what each fault costs on the seed topology (`npm run bench -- faults`)", INTRO, COLUMNS, [
        today(),
        gitCommit(),
        machine(),
        `\`${command("faults", args)}\``,
        setup,
        fault,
        String(runs),
        String(row.inserted),
        String(row.lost),
        String(row.deliveredAfterAck),
        String(row.streamErrors),
        String(row.insertFailed),
        String(row.worstDelayMs),
        `${row.recoveryMedianMs} / ${row.recoveryMaxMs}`,
        `${r.baselineDelayMs.p50} / ${r.baselineDelayMs.p99}`,
        String(r.transactionRetries),
        r.loadAverage,
      ]);
    }
  }
  printResult({ scenario: "faults", results });
}
