// The load generator cannot rot: a few dozen simulated streaming clients in two load processes
// connect to a real server (in this process), receive messages pushed through the admin API, and
// acknowledge them, so that the server marks every one processed.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Fleet } from "../../bench/loadgen/fleet.js";
import { benchPki, clientIdentities } from "../../bench/loadgen/identities.js";
import { insertAtRate } from "../../bench/loadgen/inserter.js";
import { type TestServer, startTestServer } from "../support/server.js";

const CLIENTS = 30;

describe("load generator smoke test", { timeout: 20_000 }, () => {
  let server: TestServer;
  let fleet: Fleet | undefined;

  before(async () => {
    process.env.FLEETSPEAK_LOG_LEVEL ??= "warn";
    const pki = benchPki();
    server = await startTestServer({
      components: {
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.chainPem, key: pki.serverKeyPem },
        adminConfig: { listenAddress: "127.0.0.1:0" },
      },
    });
  });

  after(async () => {
    await fleet?.stop();
    await server?.stop();
  });

  it("connects every client and delivers pushed messages, which the clients acknowledge", async () => {
    const pki = benchPki();
    fleet = await Fleet.start({
      clients: CLIENTS,
      workers: 2,
      target: { host: "127.0.0.1", port: server.port, servername: "localhost", caPem: pki.caCertPem, services: ["TestService"] },
      mode: "stream",
      rampPerSec: 500,
      maxSeconds: 30,
      maxOldSpaceMb: 256,
    });
    const connected = await fleet.until((t) => t.open === CLIENTS, 10_000);
    assert.equal(connected.open, CLIENTS, `streams open: ${JSON.stringify(connected)}`);
    assert.equal(connected.errorCount, 0, JSON.stringify(connected.errors));

    const ids = clientIdentities(0, CLIENTS).map((c) => Buffer.from(c.id, "hex"));
    const inserted = await insertAtRate({ admins: [server.admin], clientIds: ids, service: "TestService", rate: 200, count: CLIENTS * 2 });
    assert.equal(inserted.ok, CLIENTS * 2, JSON.stringify(inserted.errors));

    const got = await fleet.until((t) => t.received >= CLIENTS * 2, 8000);
    assert.equal(got.received, CLIENTS * 2);
    assert.equal(got.duplicates, 0);
    assert.equal(fleet.takeLatencies().length, CLIENTS * 2, "every message carries its insert time");

    // The clients' MessageAcks reach the server: nothing stays pending.
    const deadline = Date.now() + 5000;
    let pending = -1;
    while (Date.now() < deadline) {
      const r = await server.admin.getPendingMessageCount({ clientIds: ids });
      pending = Number(r.count);
      if (pending === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(pending, 0, "messages still pending after the clients acknowledged them");
  });
});
