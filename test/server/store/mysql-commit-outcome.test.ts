// A connection lost right after the database committed a claim or a lease, before the answer
// arrived: the store must find out what happened by reading the rows again, never guess. A guess of
// "not committed" leaves messages leased to nobody until their lease ends (15 minutes in
// production), which a database restart did now and then under load.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { parseMysqlDsn } from "../../../src/common/mysql-dsn.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { createTestDatabase, type TestDatabase } from "../../support/mariadb.js";
import { type MysqlProxy, proxiedDsn, startMysqlProxy } from "../../support/mysql-proxy.js";

const LEASE_MS = 600_000;

describe("MysqlStore when the connection is lost right after COMMIT", { timeout: 60_000 }, () => {
  let db: TestDatabase;
  let proxy: MysqlProxy;
  let store: MysqlStore;

  before(async () => {
    db = await createTestDatabase();
    const o = parseMysqlDsn(db.dsn);
    proxy = await startMysqlProxy(o.socketPath ? { path: o.socketPath } : { host: o.host!, port: o.port! });
    store = await MysqlStore.fromDsn(proxiedDsn(db.dsn, proxy.port), { poolSize: 4 });
  });
  after(async () => {
    await store?.close();
    await proxy?.close();
    await db?.drop();
  });

  /** A known client with an open contact and one message due for it. */
  async function clientWithMessage(service = "svc"): Promise<{ to: Buffer; contactId: string; m: Message }> {
    const to = randomBytes(8);
    await store.addClient(to, { key: randomBytes(16), labels: [], blacklisted: false });
    const contactId = await store.recordClientContact({ clientId: to, sentNonce: 1n, receivedNonce: 2n, address: "127.0.0.1:1" });
    const m = create(MessageSchema, {
      messageId: randomBytes(32),
      source: { serviceName: service },
      destination: { clientId: to, serviceName: service },
      messageType: "T",
      creationTime: timestampNow(),
      data: { typeUrl: "type.googleapis.com/x", value: randomBytes(10) },
    });
    await store.storeMessages([m]);
    return { to, contactId, m };
  }

  it("reports a carried message's lease as taken when its COMMIT went through", async () => {
    const { to, contactId, m } = await clientWithMessage();
    const cut = proxy.cutAfterAnswer(/UPDATE pending_messages p JOIN messages m/);
    const [outcome] = await store.leaseCarriedMessages([{ message: m, contactId }], LEASE_MS);
    await cut;
    assert.equal(outcome!.leased, true, "the lease committed, so the frontend must send the message");
    // It is leased to this contact: a claim does not hand it out a second time.
    assert.deepEqual(await store.claimClientMessages(to, { limit: 10, leaseMs: LEASE_MS }), []);
  });

  it("returns a client claim's messages when its COMMIT went through", async () => {
    const { to, contactId, m } = await clientWithMessage();
    const cut = proxy.cutAfterAnswer(/UPDATE pending_messages SET retry_count = retry_count \+ 1, scheduled_time/);
    const claimed = await store.claimClientMessages(to, { limit: 10, leaseMs: LEASE_MS, contactId });
    await cut;
    assert.deepEqual(
      claimed.map((c) => Buffer.from(c.messageId).toString("hex")),
      [Buffer.from(m.messageId).toString("hex")],
    );
  });

  it("returns a server claim's messages when its COMMIT went through", async () => {
    const id = randomBytes(32);
    await store.storeMessages([
      create(MessageSchema, {
        messageId: id,
        source: { clientId: randomBytes(8), serviceName: "client-svc" },
        destination: { serviceName: "server-svc" },
        messageType: "T",
        creationTime: timestampNow(),
      }),
    ], { serverDueMs: Date.now() - 1000 });
    const cut = proxy.cutAfterAnswer(/^COMMIT$/);
    const claimed = await store.claimServerMessages(10, () => Date.now() + LEASE_MS);
    await cut;
    assert.deepEqual(
      claimed.map((c) => Buffer.from(c.messageId).toString("hex")),
      [id.toString("hex")],
    );
  });

  it("still runs a claim that did not commit again rather than reporting nothing", async () => {
    // The cut comes after the locking read: nothing was written, the claim must simply work.
    const { to, m } = await clientWithMessage();
    const cut = proxy.cutAfterAnswer(/FOR UPDATE$/);
    const claimed = await store.claimClientMessages(to, { limit: 10, leaseMs: LEASE_MS });
    await cut;
    assert.deepEqual(
      claimed.map((c) => Buffer.from(c.messageId).toString("hex")),
      [Buffer.from(m.messageId).toString("hex")],
    );
  });
});
