// The database goes away for a few seconds under streaming load (seed topology, real processes, a
// private MariaDB stopped and started again): streams stay open, the frames whose messages cannot
// be stored wait for their ack, and new contacts are held until the database is back, so no
// client sees an error (before, streams were closed and their reconnections answered HTTP 500 until
// the database was back). Every message acknowledged to the inserter reaches its client.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { AckingClients } from "../../bench/faults/acking-clients.js";
import { DeliveryLedger } from "../../bench/faults/ledger.js";
import { SeedTopology } from "../../bench/faults/seed-topology.js";
import { SteadyInserter } from "../../bench/faults/steady-inserter.js";
import { benchPki, clientIdentities } from "../../bench/loadgen/identities.js";
import { nowMs } from "../../bench/loadgen/wire.js";
import { type MariadbInstance, startMariadbInstance } from "../support/mariadb-instance.js";

const CLIENTS = 20;

describe("a database outage under streaming load", { timeout: 240_000 }, () => {
  let db: MariadbInstance;
  let topo: SeedTopology;
  let clients: AckingClients;
  let inserter: SteadyInserter;
  const ledger = new DeliveryLedger();

  before(async () => {
    db = await startMariadbInstance();
    await db.createDatabase("fleetspeak");
    topo = await SeedTopology.start({ dsns: db.dsn("fleetspeak") });
    const identities = clientIdentities(0, CLIENTS);
    clients = new AckingClients({
      target: { host: "127.0.0.1", port: topo.clientPort, servername: "localhost", caPem: benchPki().caCertPem, services: ["TestService"] },
      identities,
      ledger,
      // Every stream has a frame to store while the database is down.
      sendEveryMs: 300,
    });
    await clients.start();
    inserter = new SteadyInserter(`127.0.0.1:${topo.adminPort}`, identities.map((i) => Buffer.from(i.id, "hex")), ledger);
  });
  after(async () => {
    await inserter?.stop();
    inserter?.close();
    clients?.stop();
    await topo?.stop();
    await db?.destroy();
  });

  it("keeps streams open and answers no client with an error; nothing acknowledged is lost", async () => {
    const started = nowMs();
    inserter.start(20);
    await sleep(2000);
    const faultAt = nowMs();
    await db.stop();
    await sleep(6000);
    await db.start();
    await sleep(6000);
    await inserter.stop();
    const stoppedAt = nowMs();
    for (let waited = 0; ledger.outstanding > 0 && waited < 30_000; waited += 200) await sleep(200);

    assert.deepEqual(clients.errorsSince(faultAt), {}, "no client saw an error");
    assert.deepEqual(
      clients.ends.filter((e) => e.at >= faultAt),
      [],
      "every stream stayed open through the outage",
    );
    const frontendLogs = ["frontend-1", "frontend-2"].map((n) => topo.server(n as "frontend-1")!.process.output()).join("\n");
    assert.match(frontendLogs, /storing a client frame failed; trying again while the stream lasts/);
    assert.match(frontendLogs, /client frame stored after the database came back/);

    const f = ledger.figures(started, stoppedAt, faultAt);
    assert.ok(f.inserted > 100, `inserted ${f.inserted}`);
    assert.equal(f.lost, 0, `lost: ${f.lostIds.join(", ")}`);
    assert.equal(f.deliveredAfterAck, 0);
  });
});
