import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
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
});
