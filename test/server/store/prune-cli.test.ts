import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AddressSchema, type Message, MessageResultSchema, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { runPrune } from "../../../src/cli/prune.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import type { Store } from "../../../src/server/store/store.js";
import { createTestDatabase } from "../../support/mariadb.js";

const DAY = 24 * 3600 * 1000;

function message(createdMs: number, processed: boolean): Message {
  const m = create(MessageSchema, {
    messageId: randomBytes(32),
    source: create(AddressSchema, { serviceName: "s" }),
    destination: create(AddressSchema, { clientId: randomBytes(8), serviceName: "d" }),
    creationTime: timestampFromMs(createdMs),
  });
  if (processed) m.result = create(MessageResultSchema, { processedTime: timestampFromMs(createdMs) });
  return m;
}

/** Stores 5 old processed, 1 old pending and 1 recent processed message; returns them. */
async function fill(store: Store) {
  const old = Array.from({ length: 5 }, () => message(Date.now() - 40 * DAY, true));
  const pending = message(Date.now() - 40 * DAY, false);
  const recent = message(Date.now() - DAY, true);
  await store.storeMessages([...old, pending, recent]);
  return { old, kept: [pending, recent] };
}

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

const root = mkdtempSync(join(tmpdir(), "fs-prune-"));
after(() => rmSync(root, { recursive: true, force: true }));

describe("prune command", () => {
  it("deletes old processed messages from a SQLite database, Go-style flags", async () => {
    const path = join(root, "a.sqlite");
    const store = await SqliteStore.open({ path });
    const { old, kept } = await fill(store);
    await store.close();
    const c = capture();
    assert.equal(await runPrune(["-sqlite_path", path, "-older_than", "720h", "-batch_size=2"], c.io), 0);
    assert.match(c.out.join("\n"), /deleted 5 processed or failed messages created before/);
    const again = await SqliteStore.open({ path });
    assert.equal((await again.getMessages(old.map((m) => m.messageId), false)).length, 0);
    assert.equal((await again.getMessages(kept.map((m) => m.messageId), false)).length, 2);
    await again.close();
  });

  it("deletes old processed messages from a MySQL database", async () => {
    const db = await createTestDatabase();
    try {
      const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 2 });
      const { old, kept } = await fill(store);
      const c = capture();
      assert.equal(await runPrune(["--mysql_data_source_name", db.dsn, "--older_than", "300h"], c.io), 0);
      assert.match(c.out.join("\n"), /deleted 5 /);
      assert.equal((await store.getMessages(old.map((m) => m.messageId), false)).length, 0);
      assert.equal((await store.getMessages(kept.map((m) => m.messageId), false)).length, 2);
      await store.close();
    } finally {
      await db.drop();
    }
  });

  it("explains bad usage with exit code 2", async () => {
    for (const argv of [
      [],
      ["-sqlite_path", "x", "-mysql_data_source_name", "y"],
      ["-sqlite_path", "x", "-older_than", "soon"],
      ["-sqlite_path", "x", "-batch_size", "0"],
      ["-sqlite_path", "x", "-bogus"],
    ]) {
      const c = capture();
      assert.equal(await runPrune(argv, c.io), 2, argv.join(" "));
      assert.match(c.err.join("\n"), /usage: fleetspeak-server prune/);
    }
  });

  it("reports an unreachable database with exit code 1", async () => {
    const c = capture();
    assert.equal(await runPrune(["-mysql_data_source_name", "root@tcp(127.0.0.1:1)/x?timeout=1s"], c.io), 1);
    assert.match(c.err.join("\n"), /127\.0\.0\.1:1/);
  });
});
