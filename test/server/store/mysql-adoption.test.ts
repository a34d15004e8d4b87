// Adopting a MySQL/MariaDB database that Fleetspeak (Go) made, on the real MariaDB with the
// schema the real Fleetspeak server creates: what a cut-short or concurrent adoption does, what
// Fleetspeak's own rows (written with its statements: pending rows without our columns, broadcast
// allocations) mean to this server, and handing the database back.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Connection, RowDataPacket } from "mysql2/promise";
import { AddressSchema, LabelSchema, type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { BroadcastSchema } from "../../../src/gen/fleetspeak_server/broadcasts_pb.js";
import { latestVersion } from "../../../src/server/store/migrations.js";
import { MYSQL_MIGRATIONS } from "../../../src/server/store/mysql-schema.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { goMysqlSchemaStatements } from "../../support/go-server.js";
import { adminConnection, createTestDatabase, type TestDatabase } from "../../support/mariadb.js";

const LATEST = latestVersion(MYSQL_MIGRATIONS);
let goSchema: string[] = [];

/** A new database holding exactly the tables Fleetspeak's (Go) server created. */
async function goMadeDatabase(): Promise<TestDatabase & { admin: Connection }> {
  const db = await createTestDatabase();
  const admin = await adminConnection();
  await admin.query(`USE \`${db.name}\``);
  await admin.query("SET FOREIGN_KEY_CHECKS = 0");
  for (const s of goSchema) await admin.query(s);
  await admin.query("SET FOREIGN_KEY_CHECKS = 1");
  return {
    ...db,
    admin,
    drop: async () => {
      await admin.end();
      await db.drop();
    },
  };
}

const clientMsg = (to: Uint8Array, service = "svc"): Message =>
  create(MessageSchema, {
    messageId: randomBytes(32),
    source: create(AddressSchema, { serviceName: "GRR" }),
    destination: create(AddressSchema, { clientId: to, serviceName: service }),
    messageType: "T",
    creationTime: timestampFromMs(Date.now()),
  });

/** Inserts a client-bound pending message with the statements Fleetspeak's (Go) MySQL datastore uses. */
async function insertLikeFleetspeak(admin: Connection, to: Buffer, service: string): Promise<Buffer> {
  const id = randomBytes(32);
  const now = Date.now();
  await admin.query(
    `INSERT IGNORE INTO messages(message_id, source_client_id, source_service_name, source_message_id,
       destination_client_id, destination_service_name, message_type, creation_time_seconds, creation_time_nanos,
       processed_time_seconds, processed_time_nanos, failed, failed_reason, validation_info, annotations)
     VALUES(?, NULL, 'GRR', NULL, ?, ?, 'T', ?, 0, NULL, NULL, NULL, NULL, NULL, NULL)`,
    [id, to, service, Math.floor(now / 1000)],
  );
  await admin.query(
    "INSERT INTO pending_messages(for_server, message_id, retry_count, scheduled_time, data_type_url, data_value) VALUES(0, ?, 0, ?, 'url', 'x')",
    [id, now * 1000 - 1],
  );
  return id;
}

async function addClient(store: MysqlStore): Promise<Buffer> {
  const id = randomBytes(8);
  await store.addClient(id, { key: randomBytes(32), labels: [], blacklisted: false });
  return id;
}

before(async () => {
  goSchema = await goMysqlSchemaStatements();
});

describe("adopting a MySQL database made by Fleetspeak (Go)", () => {
  it("adopts once when several servers start on it at the same moment", async () => {
    const db = await goMadeDatabase();
    try {
      const stores = await Promise.all(Array.from({ length: 4 }, () => MysqlStore.fromDsn(db.dsn, { poolSize: 2 })));
      assert.deepEqual(stores.map((s) => s.origin).sort(), ["adopted", "current", "current", "current"]);
      const [rows] = await db.admin.query<RowDataPacket[]>("SELECT version FROM schema_version");
      assert.deepEqual(rows, [{ version: LATEST }]);
      await Promise.all(stores.map((s) => s.close()));
    } finally {
      await db.drop();
    }
  });

  it("finishes an adoption cut short after any step, losing nothing", async () => {
    const v2 = MYSQL_MIGRATIONS.find((m) => m.version === 2)!;
    for (let done = 0; done < v2.steps.length; done++) {
      const db = await goMadeDatabase();
      try {
        // What a server killed during the adoption leaves: version 1 recorded (its tables are
        // Fleetspeak's), the first `done` steps of version 2 applied, and rows written meanwhile.
        const to = randomBytes(8);
        await db.admin.query(
          "INSERT INTO clients(client_id, client_key, blacklisted, last_contact_time) VALUES(?, 'k', 0, 1)",
          [to],
        );
        const early = await insertLikeFleetspeak(db.admin, to, "svc");
        await db.admin.query("CREATE TABLE schema_version (version INT NOT NULL) ENGINE=InnoDB");
        await db.admin.query("INSERT INTO schema_version VALUES (1)");
        for (const step of v2.steps.slice(0, done)) {
          for (const sql of step.sql ?? []) await db.admin.query(sql);
          if (step.run) await step.run((sql, values) => db.admin.query(sql, values));
        }
        const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 2 });
        try {
          assert.equal(store.origin, "upgraded", `cut after ${done} steps`);
          const claimed = await store.claimClientMessages(to, { limit: 10, leaseMs: 60_000 });
          assert.deepEqual(
            claimed.map((m) => Buffer.from(m.messageId).toString("hex")),
            [early.toString("hex")],
            `cut after ${done} steps: the pending message written before the cut is delivered`,
          );
        } finally {
          await store.close();
        }
        const [[v]] = await db.admin.query<RowDataPacket[]>("SELECT version FROM schema_version");
        assert.equal(v!.version, LATEST);
      } finally {
        await db.drop();
      }
    }
  });

  it("claims pending messages that Fleetspeak's statements insert while both run (the trigger fills our columns)", async () => {
    const db = await goMadeDatabase();
    const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 2 });
    try {
      const to = await addClient(store);
      const id = await insertLikeFleetspeak(db.admin, to, "svc");
      assert.deepEqual(
        (await store.clientsWithDueMessages([to])).map((c) => Buffer.from(c).toString("hex")),
        [to.toString("hex")],
      );
      const claimed = await store.claimClientMessages(to, { limit: 10, leaseMs: 60_000, serviceLimits: new Map([["svc", 5]]) });
      assert.deepEqual(
        claimed.map((m) => Buffer.from(m.messageId).toString("hex")),
        [id.toString("hex")],
      );
      assert.equal(await store.getPendingMessageCount([to]), 1n);
    } finally {
      await store.close();
      await db.drop();
    }
  });

  it("without the right to create triggers, warns and still delivers what Fleetspeak inserts (filled in by the sweeps)", async () => {
    const db = await goMadeDatabase();
    const user = `fsnotrig${process.pid}`;
    await db.admin.query(`CREATE USER '${user}'@'%' IDENTIFIED BY 'pw'`);
    try {
      // Everything Fleetspeak's documentation asks for, but TRIGGER.
      await db.admin.query(
        `GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, REFERENCES ON \`${db.name}\`.* TO '${user}'@'%'`,
      );
      const dsn = db.dsn.replace(/^root@/, `${user}:pw@`);
      const store = await MysqlStore.fromDsn(dsn, { poolSize: 2 });
      try {
        assert.equal(store.origin, "adopted");
        const [triggers] = await db.admin.query<RowDataPacket[]>(
          "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = ?",
          [db.name],
        );
        assert.deepEqual(triggers, []);
        const to = await addClient(store);
        const id = await insertLikeFleetspeak(db.admin, to, "svc");
        await new Promise((r) => setTimeout(r, 1100)); // the fill runs at most once a second
        assert.equal((await store.clientsWithDueMessages([to])).length, 1);
        const claimed = await store.claimClientMessages(to, { limit: 10, leaseMs: 60_000 });
        assert.deepEqual(
          claimed.map((m) => Buffer.from(m.messageId).toString("hex")),
          [id.toString("hex")],
        );
      } finally {
        await store.close();
      }
    } finally {
      await db.admin.query(`DROP USER '${user}'@'%'`);
      await db.drop();
    }
  });

  it("honours broadcast allocations that Fleetspeak's servers hold, and folds them when disabling or when they expire", async () => {
    const db = await goMadeDatabase();
    const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 2 });
    try {
      const b = create(BroadcastSchema, {
        broadcastId: randomBytes(8),
        source: create(AddressSchema, { serviceName: "GRR" }),
        messageType: "B",
        requiredLabels: [create(LabelSchema, { serviceName: "client", label: "linux" })],
      });
      await store.createBroadcast(b, 3n);
      const [[row]] = await db.admin.query<RowDataPacket[]>("SELECT sent, allocated FROM broadcasts");
      assert.deepEqual({ sent: Number(row!.sent), allocated: Number(row!.allocated) }, { sent: 0, allocated: 0 });
      // A Fleetspeak server takes an allocation of 2 (as its CreateAllocation does) and sends 1 under it.
      const alloc = randomBytes(8);
      const inTenMinutes = Math.floor(Date.now() / 1000) + 600;
      await db.admin.query("UPDATE broadcasts SET allocated = 2 WHERE broadcast_id = ?", [b.broadcastId]);
      await db.admin.query("INSERT INTO broadcast_allocations VALUES (?, ?, 1, 2, ?, 0)", [b.broadcastId, alloc, inTenMinutes]);
      const send = async () => {
        const c = await addClient(store);
        return store.saveBroadcastMessage(clientMsg(c), b.broadcastId, c);
      };
      assert.equal(await send(), true, "1 sent + 2 allocated < 3");
      assert.equal(await send(), false, "the limit counts what Fleetspeak's servers reserved");
      // Disabling folds the allocation in: its send counts, its reservation goes.
      await store.disableBroadcasts([b.broadcastId]);
      const [[after]] = await db.admin.query<RowDataPacket[]>("SELECT sent, allocated, message_limit FROM broadcasts");
      assert.deepEqual(
        { sent: Number(after!.sent), allocated: Number(after!.allocated), limit: Number(after!.message_limit) },
        { sent: 2, allocated: 0, limit: 0 },
      );
      const [left] = await db.admin.query<RowDataPacket[]>("SELECT * FROM broadcast_allocations");
      assert.equal(left.length, 0);

      // An allocation left expired by a Fleetspeak server that went away is folded in by the next listing.
      const b2 = create(BroadcastSchema, { ...b, broadcastId: randomBytes(8) });
      await store.createBroadcast(b2, 10n);
      await db.admin.query("UPDATE broadcasts SET allocated = 5 WHERE broadcast_id = ?", [b2.broadcastId]);
      await db.admin.query("INSERT INTO broadcast_allocations VALUES (?, ?, 4, 5, ?, 0)", [
        b2.broadcastId,
        randomBytes(8),
        Math.floor(Date.now() / 1000) - 3600,
      ]);
      const [active] = await store.listActiveBroadcasts();
      assert.deepEqual({ sent: active!.sent, limit: active!.limit }, { sent: 4n, limit: 10n });
      const [[b2row]] = await db.admin.query<RowDataPacket[]>("SELECT allocated FROM broadcasts WHERE broadcast_id = ?", [
        b2.broadcastId,
      ]);
      assert.equal(Number(b2row!.allocated), 0);
    } finally {
      await store.close();
      await db.drop();
    }
  });

  it("hands the database back: --to-fleetspeak removes exactly this server's additions, and adopting again restores them", async () => {
    const db = await goMadeDatabase();
    const schemaOf = async () => {
      const [cols] = await db.admin.query<RowDataPacket[]>(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ? ORDER BY 1, 2",
        [db.name],
      );
      const [idx] = await db.admin.query<RowDataPacket[]>(
        "SELECT DISTINCT table_name, index_name FROM information_schema.statistics WHERE table_schema = ? ORDER BY 1, 2",
        [db.name],
      );
      const [trg] = await db.admin.query<RowDataPacket[]>(
        "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = ?",
        [db.name],
      );
      return JSON.stringify([cols, idx, trg]);
    };
    try {
      const pristine = await schemaOf();
      const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 1 });
      const to = await addClient(store);
      await store.storeMessages([clientMsg(to)]);
      await store.close();
      assert.notEqual(await schemaOf(), pristine);
      const back = await MysqlStore.fromDsn(db.dsn, { poolSize: 1, skipMigration: true });
      const removed = await back.revertToFleetspeak();
      await back.close();
      assert.ok(removed.includes("trigger pending_messages_destination"), removed.join(", "));
      // Fleetspeak's own schema again, but for what stays on purpose: the binary label and file
      // keys and the wider source_message_id (checked by type, not listed here).
      assert.equal(await schemaOf(), pristine);
      const again = await MysqlStore.fromDsn(db.dsn, { poolSize: 1 });
      assert.equal(again.origin, "adopted");
      assert.equal(await again.getPendingMessageCount([to]), 1n);
      await again.close();
    } finally {
      await db.drop();
    }
  });
});
