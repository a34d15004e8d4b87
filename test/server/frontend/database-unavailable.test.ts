// A frontend whose database cannot be reached: a new contact is held while the store is tried
// again (a short outage costs the client nothing but a wait), and after contactHoldMs it is
// answered 503 with a Retry-After, never 500 (the client did nothing wrong, and should come back
// later, not at once).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { parseMysqlDsn } from "../../../src/common/mysql-dsn.js";
import { createTestDatabase, type TestDatabase } from "../../support/mariadb.js";
import { type MysqlProxy, proxiedDsn, startMysqlProxy } from "../../support/mysql-proxy.js";
import { RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { testServerPki } from "../../support/tls.js";

describe("a frontend whose database cannot be reached", { timeout: 60_000 }, () => {
  let db: TestDatabase;
  let proxy: MysqlProxy;
  let server: TestServer;
  let client: RawClient;

  before(async () => {
    db = await createTestDatabase();
    const o = parseMysqlDsn(db.dsn);
    proxy = await startMysqlProxy(o.socketPath ? { path: o.socketPath } : { host: o.host!, port: o.port! });
    const pki = testServerPki();
    server = await startTestServer({
      components: {
        mysqlDataSourceName: proxiedDsn(db.dsn, proxy.port),
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
      },
      overrides: { frontendLimits: { contactHoldMs: 1500 } },
    });
    client = new RawClient({ host: "127.0.0.1", port: server.port, ca: server.caPem });
    assert.equal((await client.poll({})).status, 200);
  });
  after(async () => {
    await server?.stop();
    await proxy?.close();
    await db?.drop();
  });

  it("holds a poll while the database is down and answers it once the database is back", async () => {
    proxy.setDown(true);
    const poll = client.poll({});
    await sleep(600);
    proxy.setDown(false);
    const answer = await poll;
    assert.equal(answer.status, 200, answer.text);
  });

  it("answers a poll 503 with a Retry-After when the database stays down past the hold", async () => {
    proxy.setDown(true);
    try {
      const answer = await client.poll({});
      assert.equal(answer.status, 503, answer.text);
      assert.match(answer.text, /cannot use database/);
      const retryAfter = Number(answer.headers["retry-after"]);
      assert.ok(retryAfter >= 5 && retryAfter <= 15, `Retry-After: ${answer.headers["retry-after"]}`);
    } finally {
      proxy.setDown(false);
    }
  });

  it("refuses a new stream the same way", async () => {
    proxy.setDown(true);
    try {
      await assert.rejects(client.stream({}), /^Error: HTTP 503: cannot use database/);
    } finally {
      proxy.setDown(false);
    }
    const stream = await client.stream({});
    stream.close();
  });
});
