// A trigger caught while another server's schema migration replaces it (on Galera: a node still
// applying the replicated CREATE TRIGGER) cannot be loaded for a moment, and MariaDB refuses the
// statement that opened its table with "Unknown trigger has an error in its body: 'Query was
// empty'". Nothing ran, so the store runs the transaction again, as for a deadlock, instead of
// failing the client's contact or the admin call. Reproduced on the real MariaDB by emptying the
// trigger's definition file in the database's directory, then putting it back.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { RowDataPacket } from "mysql2/promise";
import { MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { adminConnection, createTestDatabase, type TestDatabase } from "../../support/mariadb.js";

describe("MysqlStore and a trigger that cannot be loaded for a moment", { timeout: 60_000 }, () => {
  let db: TestDatabase;
  let store: MysqlStore;
  let triggerFile: string;
  const retries: string[] = [];

  /** FLUSH TABLES: the server reads the table's triggers again when it next opens it. */
  async function flushTables(): Promise<void> {
    const c = await adminConnection();
    try {
      await c.query("FLUSH TABLES");
    } finally {
      await c.end();
    }
  }

  before(async () => {
    db = await createTestDatabase();
    store = await MysqlStore.fromDsn(db.dsn, { poolSize: 2 });
    store.observeRetries((op, reason) => retries.push(`${op}:${reason}`));
    const c = await adminConnection();
    try {
      const [rows] = await c.query<RowDataPacket[]>("SELECT @@datadir AS dir");
      triggerFile = join(String(rows[0]!.dir), db.name, "pending_messages.TRG");
    } finally {
      await c.end();
    }
    assert.match(readFileSync(triggerFile, "utf8"), /^triggers=/m, `${triggerFile}: the pending_messages trigger's definition`);
  });

  after(async () => {
    await store?.close();
    await db?.drop();
  });

  it("runs the transaction again once the trigger is whole, and stores the message", async () => {
    const to = randomBytes(8);
    await store.addClient(to, { key: randomBytes(16), labels: [], blacklisted: false });
    const m = create(MessageSchema, {
      messageId: randomBytes(32),
      source: { serviceName: "GRR" },
      destination: { clientId: to, serviceName: "GRR" },
      messageType: "T",
      creationTime: timestampNow(),
      data: { typeUrl: "type.googleapis.com/x", value: randomBytes(10) },
    });
    // The copy lives outside the database's directory, which DROP DATABASE must find as it made it.
    const saved = mkdtempSync(join(tmpdir(), "fs-trigger-"));
    const whole = join(saved, "pending_messages.TRG");
    copyFileSync(triggerFile, whole);
    writeFileSync(triggerFile, readFileSync(whole, "utf8").replace(/^triggers=.*$/m, "triggers=''"));
    await flushTables();
    // Settled at once either way, so that a failure is reported after the file is put back.
    const storing = store.storeMessages([m]).then(
      () => undefined,
      (e: Error) => e,
    );
    await new Promise((r) => setTimeout(r, 300));
    copyFileSync(whole, triggerFile);
    await flushTables();
    const failed = await storing;
    rmSync(saved, { recursive: true, force: true });
    assert.equal(failed, undefined, "the message was stored");
    assert.ok(
      retries.some((r) => r.endsWith(":trigger_unreadable")),
      `the store met the unreadable trigger and retried: ${retries.join(", ")}`,
    );
    assert.equal(await store.getPendingMessageCount([to]), 1n, "the message waits for its client");
  });
});
