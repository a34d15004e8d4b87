// The whole Store conformance suite again, on databases whose schema the real Fleetspeak (Go)
// server made: a MySQL database adopted in place at open, and a Fleetspeak SQLite file converted
// by `fleetspeak-server migrate`. Whatever this server does on a database it created, it does on
// one it took over from Fleetspeak.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import Database from "better-sqlite3";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import { createGoSchema, goMysqlSchemaStatements } from "../../support/go-server.js";
import { adminConnection, createTestDatabase } from "../../support/mariadb.js";
import { defineStoreConformance } from "./conformance.js";

const root = mkdtempSync(join(tmpdir(), "fs-adopted-"));
after(() => rmSync(root, { recursive: true, force: true }));

defineStoreConformance("mysql, adopted from Fleetspeak (Go)", async () => {
  const schema = await goMysqlSchemaStatements();
  const db = await createTestDatabase();
  const admin = await adminConnection();
  try {
    await admin.query(`USE \`${db.name}\``);
    await admin.query("SET FOREIGN_KEY_CHECKS = 0");
    for (const s of schema) await admin.query(s);
  } finally {
    await admin.end();
  }
  const store = await MysqlStore.fromDsn(db.dsn, { poolSize: 8 });
  assert.equal(store.origin, "adopted");
  return {
    store,
    cleanup: async () => {
      await store.close();
      await db.drop();
    },
  };
});

let sqliteTemplate: Promise<string> | undefined;

/** An empty SQLite file in Fleetspeak's own layout, made once by its server. */
function goSqliteFile(): Promise<string> {
  sqliteTemplate ??= (async () => {
    const path = join(root, "go-template.sqlite");
    await createGoSchema(`sqlite:${path}`);
    // Whatever Fleetspeak left in the write-ahead log goes into the file that is copied.
    const db = new Database(path);
    db.pragma("wal_checkpoint(TRUNCATE)");
    db.close();
    return path;
  })();
  return sqliteTemplate;
}

let n = 0;
defineStoreConformance("sqlite, converted from Fleetspeak (Go)", async () => {
  const template = await goSqliteFile();
  const dir = join(root, `db${n++}`);
  mkdirSync(dir);
  const path = join(dir, "fleetspeak.sqlite");
  copyFileSync(template, path);
  assert.match(await SqliteStore.migrateFile(path, false), /converted .* from Fleetspeak's \(Go\) SQLite layout/);
  const store = await SqliteStore.open({ path });
  return { store, cleanup: () => store.close() };
});
