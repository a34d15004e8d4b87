// SIGTERM on a frontend of the seed topology (real processes, HAProxy, MariaDB) under a steady
// stream of InsertMessage calls: the frontend stops taking notifications and connections, writes
// what it already leased, tells every stream done_sending, and exits once its clients have moved;
// they reconnect at once through HAProxy to the other frontend, without an error, and every message
// acknowledged to the inserter reaches its client.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { AckingClients } from "../../bench/faults/acking-clients.js";
import { DeliveryLedger } from "../../bench/faults/ledger.js";
import { SeedTopology } from "../../bench/faults/seed-topology.js";
import { SteadyInserter } from "../../bench/faults/steady-inserter.js";
import { benchPki, clientIdentities } from "../../bench/loadgen/identities.js";
import { readMetrics } from "../../bench/loadgen/servers.js";
import { nowMs } from "../../bench/loadgen/wire.js";
import { createTestDatabase, type TestDatabase } from "../support/mariadb.js";

const CLIENTS = 20;

describe("SIGTERM on a frontend drains it", { timeout: 180_000 }, () => {
  let db: TestDatabase;
  let topo: SeedTopology;
  let clients: AckingClients;
  let inserter: SteadyInserter;
  const ledger = new DeliveryLedger();

  before(async () => {
    db = await createTestDatabase();
    topo = await SeedTopology.start({ dsns: db.dsn });
    const identities = clientIdentities(0, CLIENTS);
    clients = new AckingClients({
      target: { host: "127.0.0.1", port: topo.clientPort, servername: "localhost", caPem: benchPki().caCertPem, services: ["TestService"] },
      identities,
      ledger,
      sendEveryMs: 500,
    });
    await clients.start();
    inserter = new SteadyInserter(`127.0.0.1:${topo.adminPort}`, identities.map((i) => Buffer.from(i.id, "hex")), ledger);
  });
  after(async () => {
    await inserter?.stop();
    inserter?.close();
    clients?.stop();
    await topo?.stop();
    await db?.drop();
  });

  it("tells every stream done_sending, its clients move at once, and nothing acknowledged is lost", async () => {
    const started = nowMs();
    inserter.start(40);
    await sleep(3000);
    const frontend = topo.server("frontend-1")!;
    const held = (await readMetrics(frontend.metricsAddress, ["fleetspeak_frontend_connected_clients"]))
      .fleetspeak_frontend_connected_clients;
    assert.ok(held !== undefined && held > 0, `frontend-1 holds ${held} streams`);

    const faultAt = nowMs();
    const stopped = await topo.stopServer("frontend-1", "SIGTERM");
    const exitedAt = nowMs();
    assert.equal(stopped.process.proc.exitCode, 0, `frontend-1 exited with ${stopped.process.proc.exitCode}`);
    assert.match(stopped.process.output(), /"left":0,[^\n]*"msg":"frontend drained: every stream was told done_sending"/);

    await sleep(4000);
    await inserter.stop();
    const stoppedAt = nowMs();
    // What is due goes out at once or at the next due-message sweep (5 s).
    for (let waited = 0; ledger.outstanding > 0 && waited < 20_000; waited += 200) await sleep(200);

    const ends = clients.ends.filter((e) => e.at >= faultAt && e.at <= exitedAt);
    assert.deepEqual(
      ends.map((e) => e.how),
      Array(held).fill("done_sending"),
      `every stream of frontend-1 ended with done_sending: ${JSON.stringify(ends)}`,
    );
    assert.deepEqual(clients.errorsSince(faultAt), {}, "no client saw an error while moving");
    await clients.untilAllOpen(10_000);

    const f = ledger.figures(started, stoppedAt, faultAt);
    assert.ok(f.inserted > 200, `inserted ${f.inserted}`);
    assert.equal(f.insertFailed, 0, JSON.stringify(inserter.errors));
    assert.equal(f.lost, 0, `lost: ${f.lostIds.join(", ")}`);
    assert.equal(f.deliveredAfterAck, 0);
  });
});
