// One fleetspeak-server with three worker processes on SQLite (real binary, real TLS), streaming
// clients that acknowledge every message and send their own all along, and a steady stream of
// InsertMessage calls, half through the server's own admin API and half through a second,
// admin-only server that notifies over HTTP: the workers share the client port, every
// notification finds the worker holding the stream, a SIGKILLed worker's clients move to the
// others and nothing acknowledged is lost, SQLite shared by five processes never tells a client
// "database is locked", and SIGTERM drains every worker.
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
import { metric, until } from "../support/bench-server-checks.js";

const CLIENTS = 30;
const WORKERS = 3;

/** Client connections per process id, from `ss` (what an operator would look at). */
function connectionsByPid(port: number): Map<number, number> {
  const out = execFileSync("ss", ["-Htnp", "state", "established", `( sport = :${port} )`], { encoding: "utf8" });
  const byPid = new Map<number, number>();
  for (const m of out.matchAll(/pid=(\d+)/g)) byPid.set(Number(m[1]), (byPid.get(Number(m[1])) ?? 0) + 1);
  return byPid;
}

describe("a fleetspeak-server with worker processes", { timeout: 240_000 }, () => {
  let server: BenchServer;
  let adminOnly: BenchServer;
  let clients: AckingClients;
  let local: SteadyInserter;
  let remote: SteadyInserter;
  const ledger = new DeliveryLedger();
  const started = nowMs();

  before(async () => {
    server = await startBenchServer({
      name: "workers",
      frontend: {},
      admin: true,
      notifications: true,
      services: noopServices(),
      workers: WORKERS,
      logLevel: "info",
    });
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
      sendEveryMs: 100,
    });
    await clients.start();
    const ids = identities.map((i) => Buffer.from(i.id, "hex"));
    local = new SteadyInserter(server.adminAddress!, ids, ledger);
    remote = new SteadyInserter(adminOnly.adminAddress!, ids, ledger);
  });
  after(async () => {
    for (const i of [local, remote]) {
      await i?.stop();
      i?.close();
    }
    clients?.stop();
    await adminOnly?.stop();
    await server?.stop();
  });

  it("runs the workers under one supervisor, every one taking clients on the one port", async () => {
    const workers = processTree(server.pid).slice(1);
    assert.equal(workers.length, WORKERS, `worker processes: ${workers.join(", ")}`);
    const byPid = connectionsByPid(server.frontendPort!);
    assert.equal(byPid.get(server.pid), undefined, "the supervisor holds no client connection");
    for (const w of workers) assert.ok((byPid.get(w) ?? 0) > 0, `worker ${w} holds client connections: ${JSON.stringify([...byPid])}`);
    assert.equal([...byPid.values()].reduce((a, b) => a + b, 0), CLIENTS);
    assert.equal(await metric(server, "fleetspeak_frontend_connected_clients"), CLIENTS, "the metric counts every worker's streams");
  });

  it("delivers every message through a notification that finds the worker holding the stream", async () => {
    local.start(20);
    remote.start(20);
    await sleep(3000);
    await local.stop();
    await remote.stop();
    await until("every inserted message received", () => ledger.outstanding === 0);
    assert.ok(local.ok >= 50 && remote.ok >= 50, `inserted ${local.ok} + ${remote.ok}`);
    // In-process and sibling-worker notifications: each found the worker holding the stream.
    assert.equal(await metric(server, "fleetspeak_notifications_sent_total", { result: "ok" }), local.ok);
    assert.equal(await metric(server, "fleetspeak_notifications_sent_total"), local.ok, "none absent or failed");
    // HTTP notifications to the supervisor's listener, each routed to the worker holding the stream.
    assert.equal(await metric(adminOnly, "fleetspeak_notifications_sent_total", { result: "ok" }), remote.ok);
    assert.equal(await metric(server, "fleetspeak_notifications_received_total", { known: "true" }), remote.ok);
    assert.deepEqual({ ...local.errors, ...remote.errors }, {});
  });

  it("restarts a SIGKILLed worker; its clients reconnect to the others and nothing acknowledged is lost", async () => {
    local.start(20);
    remote.start(20);
    await sleep(2000);
    const byPid = connectionsByPid(server.frontendPort!);
    const [victim, held] = [...byPid].sort((a, b) => b[1] - a[1])[0]!;
    const killedAt = nowMs();
    process.kill(victim, "SIGKILL");
    await server.process.waitFor(/worker process \d exited with signal SIGKILL/, 60_000);
    await until("every client streaming again", () => clients.openCount === CLIENTS);
    await until("the worker restarted", () => processTree(server.pid).slice(1).length === WORKERS && /worker process restarted/.test(server.process.output()));
    await sleep(2000);
    await local.stop();
    await remote.stop();
    const stoppedAt = nowMs();
    // A message written to the killed worker's stream but not acknowledged is due again once its
    // client is back: at once (recent leases are released) or at the next due-message sweep.
    await until("every inserted message received", () => ledger.outstanding === 0);
    const f = ledger.figures(started, stoppedAt, killedAt);
    // A call under way on the killed worker's admin connection fails (the caller retries it);
    // the admin-only server's calls all succeed.
    assert.deepEqual(remote.errors, {});
    for (const e of Object.keys(local.errors)) assert.match(e, /ECONNRESET|closed|unavailable/i);
    assert.equal(f.lost, 0, `lost: ${f.lostIds.join(", ")}`);
    assert.ok(held > 0);
    assert.ok(!processTree(server.pid).includes(victim));
  });

  it("shares SQLite between five processes without a client ever seeing 'database is locked', storing every message it acknowledged", async () => {
    const seen = JSON.stringify(clients.errors);
    assert.doesNotMatch(seen, /locked|busy|503/i, `client-visible errors: ${seen}`);
    assert.doesNotMatch(server.process.output() + adminOnly.process.output(), /database is locked|stayed locked|SQLITE_BUSY/);
    const db = new Database(join(server.dir, "fleetspeak.sqlite"), { readonly: true });
    try {
      const stored = db.prepare("SELECT COUNT(*) AS n FROM messages WHERE message_type = 'BenchData' AND source_client_id IS NOT NULL").get() as { n: number };
      assert.ok(clients.ingestedAcked > 500, `clients sent ${clients.ingestedAcked} acknowledged messages`);
      assert.ok(stored.n >= clients.ingestedAcked, `stored ${stored.n} of ${clients.ingestedAcked} acknowledged client messages`);
    } finally {
      db.close();
    }
  });

  it("drains every worker on SIGTERM: each stream is told done_sending and the server exits 0", async () => {
    const open = clients.openCount;
    clients.stopping = true; // no other frontend to move to: the clients stay away
    const at = nowMs();
    await server.stop();
    assert.equal(server.process.proc.exitCode, 0, server.process.output().slice(-3000));
    const ends = clients.ends.filter((e) => e.at >= at);
    assert.deepEqual(ends.map((e) => e.how), Array(open).fill("done_sending"), JSON.stringify(ends));
    const drained = server.process.output().match(/frontend drained: every stream was told done_sending/g) ?? [];
    assert.equal(drained.length, WORKERS, "each worker drained");
  });
});
