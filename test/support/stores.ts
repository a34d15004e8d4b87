// Fresh stores for tests and benchmarks: SQLite in a temporary directory, or a new MariaDB
// database (dropped by close) on the machine's server.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MysqlStore } from "../../src/server/store/mysql-store.js";
import { SqliteStore } from "../../src/server/store/sqlite-store.js";
import type { Store } from "../../src/server/store/store.js";
import { createTestDatabase } from "./mariadb.js";

export interface TestStore {
  store: SqliteStore;
  path: string;
  dir: string;
  close(): Promise<void>;
}

/** A SQLite store in a new temporary directory, removed by close. */
export async function openTestStore(prefix = "fs-store-"): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const path = join(dir, "fleetspeak.sqlite");
  const store = await SqliteStore.open({ path });
  return {
    store,
    path,
    dir,
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh store of either backend (MariaDB: a new database, dropped by cleanup). */
export async function openBackend(backend: "sqlite" | "mariadb"): Promise<{ store: Store; cleanup(): Promise<void> }> {
  if (backend === "sqlite") {
    const ts = await openTestStore();
    return { store: ts.store, cleanup: () => ts.close() };
  }
  const db = await createTestDatabase();
  const store = await MysqlStore.fromDsn(db.dsn);
  return {
    store,
    async cleanup() {
      await store.close();
      await db.drop();
    },
  };
}
