import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SchemaVersionError, StoreUnavailableError } from "../../../src/server/store/errors.js";
import { latestVersion } from "../../../src/server/store/migrations.js";
import { MYSQL_MIGRATIONS } from "../../../src/server/store/mysql-schema.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { adminConnection, createTestDatabase } from "../../support/mariadb.js";
import { defineStoreConformance } from "./conformance.js";

defineStoreConformance("mysql", async () => {
  const db = await createTestDatabase();
  const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 8 });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await db.drop();
    },
  };
});

describe("MysqlStore", () => {
  it("migrates an empty database once when several servers start at the same moment", async () => {
    const db = await createTestDatabase();
    try {
      const stores = await Promise.all(Array.from({ length: 4 }, () => MysqlStore.fromDsn(db.dsn, { poolSize: 2 })));
      await Promise.all(stores.map((s) => s.ping()));
      const admin = await adminConnection();
      const [rows] = await admin.query(`SELECT version FROM \`${db.name}\`.schema_version`);
      await admin.end();
      assert.deepEqual(rows, [{ version: latestVersion(MYSQL_MIGRATIONS) }]);
      await Promise.all(stores.map((s) => s.close()));
    } finally {
      await db.drop();
    }
  });

  it("refuses a database written by a newer schema version", async () => {
    const db = await createTestDatabase();
    try {
      await (await MysqlStore.fromDsn(db.dsn, { poolSize: 1 })).close();
      const admin = await adminConnection();
      await admin.query(`UPDATE \`${db.name}\`.schema_version SET version = 999`);
      await admin.end();
      await assert.rejects(MysqlStore.fromDsn(db.dsn, { poolSize: 1 }), (e: Error) => {
        assert.ok(e instanceof SchemaVersionError);
        assert.match(
          e.message,
          new RegExp(
            `^database ${db.name} at \\S+ has schema version 999 but this server knows up to ${latestVersion(MYSQL_MIGRATIONS)}; upgrade the server$`,
          ),
        );
        return true;
      });
    } finally {
      await db.drop();
    }
  });

  it("refuses a database whose tables are named like Fleetspeak's but are not", async () => {
    const db = await createTestDatabase();
    try {
      const admin = await adminConnection();
      await admin.query(`CREATE TABLE \`${db.name}\`.messages (message_id BINARY(32) PRIMARY KEY)`);
      await admin.end();
      await assert.rejects(
        MysqlStore.fromDsn(db.dsn, { poolSize: 1 }),
        /holds tables named like Fleetspeak's that are not Fleetspeak's: missing columns in messages \(source_client_id, .*annotations\)\. Point mysql_data_source_name at/,
      );
    } finally {
      await db.drop();
    }
  });

  it("reports an unreachable server as StoreUnavailableError naming the host and what to check", async () => {
    await assert.rejects(MysqlStore.fromDsn("root@tcp(127.0.0.1:1)/nothing?timeout=2s"), (e: Error) => {
      assert.ok(e instanceof StoreUnavailableError, String(e));
      assert.match(e.message, /127\.0\.0\.1:1/);
      assert.match(e.message, /check that the MySQL\/MariaDB server is running/);
      return true;
    });
  });

  it("reports a missing database as StoreUnavailableError saying to create it", async () => {
    await assert.rejects(MysqlStore.fromDsn("root@tcp(127.0.0.1:3306)/fstest_does_not_exist"), (e: Error) => {
      assert.ok(e instanceof StoreUnavailableError, String(e));
      assert.match(e.message, /does not exist.*create it/);
      return true;
    });
  });

  it("recovers by itself when its connections are killed", async () => {
    const db = await createTestDatabase();
    const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 4 });
    try {
      await Promise.all(Array.from({ length: 4 }, () => store.ping()));
      const admin = await adminConnection();
      const [procs] = await admin.query<import("mysql2/promise").RowDataPacket[]>(
        "SELECT id FROM information_schema.processlist WHERE db = ?",
        [db.name],
      );
      assert.ok(procs.length > 0);
      for (const p of procs) await admin.query(`KILL ${Number(p.id)}`);
      await admin.end();
      // The first operations may see the loss; within a few tries the pool has fresh connections.
      let ok = false;
      for (let i = 0; i < 10 && !ok; i++) {
        try {
          await store.storeFile("svc", "after-kill", Buffer.from("x"));
          await store.ping();
          ok = true;
        } catch (e) {
          assert.ok(e instanceof StoreUnavailableError, String(e));
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      assert.ok(ok, "the store did not recover after its connections were killed");
      assert.equal(Buffer.from((await store.readFile("svc", "after-kill"))!.data).toString(), "x");
    } finally {
      await store.close();
      await db.drop();
    }
  });
});
