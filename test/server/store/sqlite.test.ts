import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { LabelSchema, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { SchemaVersionError } from "../../../src/server/store/errors.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import { defineStoreConformance } from "./conformance.js";

const root = mkdtempSync(join(tmpdir(), "fs-sqlite-store-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

defineStoreConformance("sqlite", async () => {
  const dir = join(root, `db${n++}`);
  const store = await SqliteStore.open({ path: join(dir, "fleetspeak.sqlite") });
  return { store, cleanup: () => store.close() };
});

describe("SqliteStore", () => {
  it("creates the database file and its missing parent directories, in WAL mode", async () => {
    const path = join(root, "deep", "er", "fs.sqlite");
    const store = await SqliteStore.open({ path });
    await store.ping();
    assert.ok(existsSync(path));
    await store.close();
    const db = new Database(path, { readonly: true });
    assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
    db.close();
  });

  it("reopens an existing database without migrating it again", async () => {
    const path = join(root, "reopen.sqlite");
    const a = await SqliteStore.open({ path });
    await a.storeFile("s", "n", Buffer.from("kept"));
    await a.close();
    const b = await SqliteStore.open({ path });
    assert.equal(Buffer.from((await b.readFile("s", "n"))!.data).toString(), "kept");
    await b.close();
  });

  it("refuses a database written by a newer schema version", async () => {
    const path = join(root, "newer.sqlite");
    (await SqliteStore.open({ path })).close();
    const db = new Database(path);
    db.exec("UPDATE schema_version SET version = 999");
    db.close();
    await assert.rejects(SqliteStore.open({ path }), (e: Error) => {
      assert.ok(e instanceof SchemaVersionError);
      assert.match(e.message, /has schema version 999 but this server knows up to \d+; upgrade the server/);
      assert.ok(e.message.includes(path));
      return true;
    });
  });

  it("answers operations after close with StoreUnavailableError", async () => {
    const store = await SqliteStore.open({ path: join(root, "closed.sqlite") });
    await store.close();
    await assert.rejects(store.ping(), { name: "StoreUnavailableError" });
  });

  it("counts clients, labels and queues over more rows than one page exactly (the console reads them in pages)", async () => {
    const store = await SqliteStore.open({ path: join(root, "pages.sqlite") });
    const n = 4500;
    const ids: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const id = randomBytes(8);
      ids.push(id);
      const parity = create(LabelSchema, { serviceName: "client", label: i % 2 === 0 ? "even" : "odd" });
      await store.addClient(id, { key: randomBytes(91), labels: [create(LabelSchema, { serviceName: "client", label: "all" }), parity], blacklisted: false });
    }
    assert.deepEqual(await store.countClients([0]), { total: n, seenAfter: [n] });
    assert.deepEqual(
      (await store.countClientsByLabel(10)).map((c) => [c.label.label, c.clients]),
      [
        ["all", n],
        ["even", n / 2],
        ["odd", n / 2],
      ],
    );
    const msg = (to: Buffer) =>
      create(MessageSchema, {
        messageId: randomBytes(32),
        source: { serviceName: "bulk" },
        destination: { clientId: to, serviceName: "bulk" },
        messageType: "T",
        creationTime: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
      });
    await store.storeMessages(ids.map(msg));
    const queue = (count: number) => [{ service: "bulk", serverDueNow: 0, serverDueLater: 0, clientPending: count }];
    assert.deepEqual(await store.listServiceQueues(10_000), queue(n));
    assert.deepEqual(await store.listServiceQueues(2200), queue(2200));
    assert.deepEqual(await store.listServiceQueues(4000), queue(4000));
    await store.close();
  });
});
