// A fleetspeak-server of two worker processes with worker_notification_port (real binary, real
// TLS, SQLite shared with an admin-only server that notifies over HTTP): each worker listens on a
// port of its own and records its streams there, so another server's notification goes straight
// to the worker holding the stream, not through the supervisor; a SIGKILLed worker comes back on
// the same port and nothing acknowledged is lost.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { AckingClients } from "../../bench/faults/acking-clients.js";
import { DeliveryLedger } from "../../bench/faults/ledger.js";
import { SteadyInserter } from "../../bench/faults/steady-inserter.js";
import { benchPki, clientIdentities } from "../../bench/loadgen/identities.js";
import { processTree } from "../../bench/loadgen/processes.js";
import { type BenchServer, noopServices, startBenchServer } from "../../bench/loadgen/servers.js";
import { nowMs } from "../../bench/loadgen/wire.js";
import { ConsoleData } from "../../src/server/console/console-data.js";
import { openStore } from "../../src/server/store/open-store.js";
import { metric, until } from "../support/bench-server-checks.js";

const CLIENTS = 20;
const WORKERS = 2;

/** `ss` lines (what an operator would run), the process id of each socket, keyed by `key`. */
function ssPids(args: string[], key: (line: string) => string | undefined): Map<string, number[]> {
  const out = execFileSync("ss", ["-Htnp", ...args], { encoding: "utf8" });
  const by = new Map<string, number[]>();
  for (const line of out.split("\n")) {
    const k = key(line);
    const pid = /pid=(\d+)/.exec(line)?.[1];
    if (k === undefined || pid === undefined) continue;
    by.set(k, [...(by.get(k) ?? []), Number(pid)]);
  }
  return by;
}

/** The process listening on each 127.0.0.1 port. */
function listeners(): Map<number, number> {
  const by = ssPids(["-l"], (line) => /127\.0\.0\.1:(\d+)/.exec(line)?.[1]);
  return new Map([...by].map(([port, pids]) => [Number(port), pids[0]!]));
}

describe("worker processes notified at their own ports (worker_notification_port)", { timeout: 180_000 }, () => {
  let server: BenchServer;
  let adminOnly: BenchServer;
  let clients: AckingClients;
  let remote: SteadyInserter;
  let ports: number[];
  const ledger = new DeliveryLedger();
  const started = nowMs();

  /** last_contact_streaming_to of every client, as the database has it. */
  function recordedAddresses(): Map<string, number> {
    const db = new Database(join(server.dir, "fleetspeak.sqlite"), { readonly: true });
    try {
      const rows = db.prepare("SELECT last_contact_streaming_to AS a, COUNT(*) AS n FROM clients GROUP BY a").all() as Array<{ a: string; n: number }>;
      return new Map(rows.map((r) => [r.a, r.n]));
    } finally {
      db.close();
    }
  }

  before(async () => {
    server = await startBenchServer({
      name: "worker-ports",
      frontend: {},
      admin: true,
      notifications: true,
      workerNotificationPorts: true,
      services: noopServices(),
      workers: WORKERS,
      logLevel: "info",
    });
    ports = [server.workerNotificationPort!, server.workerNotificationPort! + 1];
    adminOnly = await startBenchServer({
      name: "admin-only",
      admin: true,
      httpNotifier: true,
      mysqlDsn: `sqlite:${join(server.dir, "fleetspeak.sqlite")}`,
      services: noopServices(),
      workers: 1,
    });
    const identities = clientIdentities(0, CLIENTS);
    clients = new AckingClients({
      target: { host: "127.0.0.1", port: server.frontendPort!, servername: "localhost", caPem: benchPki().caCertPem, services: ["TestService"] },
      identities,
      ledger,
      sendEveryMs: 200,
    });
    await clients.start();
    remote = new SteadyInserter(adminOnly.adminAddress!, identities.map((i) => Buffer.from(i.id, "hex")), ledger);
  });
  after(async () => {
    await remote?.stop();
    remote?.close();
    clients?.stop();
    await adminOnly?.stop();
    await server?.stop();
  });

  it("has each worker listen on its own port and record its streams at it", async () => {
    const workers = processTree(server.pid).slice(1);
    const listening = listeners();
    assert.deepEqual(ports.map((p) => workers.includes(listening.get(p)!)), [true, true], `listeners ${JSON.stringify([...listening])}, workers ${workers}`);
    assert.notEqual(listening.get(ports[0]!), listening.get(ports[1]!));
    // The supervisor keeps notification_listen_address (for addresses recorded before).
    assert.equal(listening.get(Number(server.notificationAddress!.split(":")[1])), server.pid);
    // Each worker's streams are recorded at its port: as many as it holds connections.
    const held = ssPids(["state", "established", `( sport = :${server.frontendPort} )`], () => "all").get("all") ?? [];
    const expected = new Map(ports.map((p) => [`127.0.0.1:${p}`, held.filter((pid) => pid === listening.get(p)).length]));
    await until("every client's stream recorded", () => [...recordedAddresses().values()].reduce((a, b) => a + b, 0) === CLIENTS);
    assert.deepEqual(recordedAddresses(), expected);
  });

  it("shows the server holding every stream in the console's servers view, and each client's holder", async () => {
    const store = await openStore({ mysqlDataSourceName: "", sqlitePath: join(server.dir, "fleetspeak.sqlite") });
    try {
      const data = new ConsoleData(store);
      const views = await data.servers();
      const self = views.find((v) => v.report?.frontend === `127.0.0.1:${server.frontendPort}`);
      assert.ok(self, JSON.stringify(views.map((v) => v.id)));
      assert.deepEqual(self.report?.workersStreamingTo, ports.map((p) => `127.0.0.1:${p}`));
      assert.equal(self.recentStreamingClients, CLIENTS);
      assert.deepEqual(views.filter((v) => v.state === "no heartbeat"), [], "no worker address shows up as a server of its own");
    } finally {
      await store.close();
    }
  });

  it("delivers another server's notifications straight to the worker holding the stream", async () => {
    remote.start(20);
    await sleep(3000);
    await remote.stop();
    await until("every inserted message received", () => ledger.outstanding === 0);
    assert.ok(remote.ok >= 40, `inserted ${remote.ok}`);
    assert.deepEqual(remote.errors, {});
    assert.equal(await metric(adminOnly, "fleetspeak_notifications_sent_total", { result: "ok" }), remote.ok);
    assert.equal(await metric(adminOnly, "fleetspeak_notifications_sent_total"), remote.ok, "none absent or failed");
    assert.equal(await metric(server, "fleetspeak_notifications_received_total", { known: "true" }), remote.ok);
    // The admin-only server's connections go to the workers' ports, none to the supervisor's.
    const peers = ssPids(["state", "established"], (line) => /\s127\.0\.0\.1:\d+\s+127\.0\.0\.1:(\d+)/.exec(line)?.[1]);
    const toPort = (p: number) => (peers.get(String(p)) ?? []).filter((pid) => pid === adminOnly.pid).length;
    assert.ok(toPort(ports[0]!) + toPort(ports[1]!) > 0, "the admin-only server is connected to the workers' ports");
    assert.equal(toPort(Number(server.notificationAddress!.split(":")[1])), 0, "and not to the supervisor's");
  });

  it("brings a SIGKILLed worker back on its own port; nothing acknowledged is lost", async () => {
    const before = listeners().get(ports[0]!)!;
    remote.start(20);
    await sleep(1000);
    const killedAt = nowMs();
    process.kill(before, "SIGKILL");
    await server.process.waitFor(/worker process 1 exited with signal SIGKILL/, 60_000);
    await clients.untilAllOpen(60_000);
    await until("worker 1 listening on its port again", () => {
      const now = listeners().get(ports[0]!);
      return now !== undefined && now !== before && processTree(server.pid).includes(now);
    });
    await sleep(1500);
    await remote.stop();
    const stoppedAt = nowMs();
    await until("every inserted message received", () => ledger.outstanding === 0);
    const f = ledger.figures(started, stoppedAt, killedAt);
    assert.equal(f.lost, 0, `lost: ${f.lostIds.join(", ")}`);
    assert.deepEqual(remote.errors, {});
  });
});
