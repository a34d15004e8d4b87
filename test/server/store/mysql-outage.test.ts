// The database server going away under a running MysqlStore: operations in flight and operations
// while it is down fail with StoreUnavailableError (never hang, never report success), nothing
// uncommitted takes effect, and the store works again by itself once the server is back.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AddressSchema, MessageResultSchema, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { StoreUnavailableError } from "../../../src/server/store/errors.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { startThrowawayMariadb, type ThrowawayMariadb } from "../../support/mariadb.js";

describe("MysqlStore when the database server goes away", { timeout: 90_000 }, () => {
  let server: ThrowawayMariadb;
  let store: MysqlStore;

  before(async () => {
    server = await startThrowawayMariadb();
    const admin = await server.connect();
    await admin.query("CREATE DATABASE fleetspeak");
    await admin.end();
    store = await MysqlStore.fromDsn(`${server.dsn("fleetspeak")}?timeout=2s`, { poolSize: 4 });
  });
  after(async () => {
    await store?.close();
    await server?.destroy();
  });

  it("fails the operation in flight, refuses new ones, and recovers after a restart", async () => {
    const to = randomBytes(8);
    const m = create(MessageSchema, {
      messageId: randomBytes(32),
      source: create(AddressSchema, { serviceName: "admin" }),
      destination: create(AddressSchema, { clientId: to, serviceName: "svc" }),
      messageType: "T",
      creationTime: timestampNow(),
    });
    await store.storeMessages([m]);

    // Hold the message's row so that marking it processed waits inside its transaction.
    const holder = await server.connect();
    await holder.query("BEGIN");
    await holder.query("SELECT * FROM fleetspeak.messages WHERE message_id = ? FOR UPDATE", [m.messageId]);
    const inFlight = store.setMessageResult(to, m.messageId, create(MessageResultSchema, {}));
    const outcome = inFlight.then(
      () => "resolved",
      (e: Error) => e,
    );
    await sleep(300);
    await server.kill();
    holder.destroy();

    const err = await outcome;
    assert.ok(err instanceof StoreUnavailableError, `in-flight operation: ${String(err)}`);
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${server.port}`));

    for (const op of [
      () => store.ping(),
      () => store.storeMessages([{ ...m, messageId: randomBytes(32) } as typeof m]),
      () => store.claimClientMessages(to, { limit: 10, leaseMs: 60_000 }),
      () => store.getPendingMessageCount([to]),
    ]) {
      await assert.rejects(op(), (e: Error) => {
        assert.ok(e instanceof StoreUnavailableError, String(e));
        assert.match(e.message, /check that the MySQL\/MariaDB server is running/);
        return true;
      });
    }

    await server.start();
    let back = false;
    for (let i = 0; i < 50 && !back; i++) {
      try {
        await store.ping();
        back = true;
      } catch (e) {
        assert.ok(e instanceof StoreUnavailableError, String(e));
        await sleep(200);
      }
    }
    assert.ok(back, "the store did not come back after the server restarted");
    assert.equal((await store.getMessageStatus(m.messageId))!.result, undefined, "an uncommitted result took effect");
    const claimed = await store.claimClientMessages(to, { limit: 10, leaseMs: 60_000 });
    assert.equal(claimed.length, 1);
    assert.equal(await store.setMessageResult(to, m.messageId, create(MessageResultSchema, {})), true);
  });
});
