// WAL checkpoints off the event loop: a store opened with checkpoints "thread" has a thread copy
// the write-ahead log into the database file within a second or two, while the serving connection
// no longer does it in the commit that crosses 1,000 pages; "elsewhere" (a worker process, whose
// supervisor runs the thread) leaves the log alone up to the backstop.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { BACKSTOP_PAGES } from "../../../src/server/store/sqlite-checkpointer.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";

const dir = mkdtempSync(join(tmpdir(), "fs-sqlite-checkpoints-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Writes about `pages` pages to the file's write-ahead log through a connection that never checkpoints. */
function fillLog(path: string, pages: number): void {
  const db = new Database(path);
  try {
    db.pragma("wal_autocheckpoint = 0");
    db.exec("CREATE TABLE IF NOT EXISTS scratch (x BLOB)");
    const insert = db.prepare("INSERT INTO scratch (x) VALUES (?)");
    const blob = Buffer.alloc(3500, 7);
    for (let i = 0; i < pages; i += 100) db.transaction(() => {
      for (let k = 0; k < 100; k++) insert.run(blob);
    })();
  } finally {
    db.close();
  }
}

const sizeOf = (file: string) => statSync(file).size;

/**
 * Opens a store on a new file with `checkpoints`, fills the log with ~2,000 pages through another
 * connection, runs `check` with the database file's size before that, and closes the store.
 */
async function withFilledLog(
  name: string,
  checkpoints: "thread" | "elsewhere",
  check: (store: SqliteStore, path: string, before: number) => Promise<void>,
): Promise<void> {
  const path = join(dir, name);
  const store = await SqliteStore.open({ path, checkpoints });
  try {
    const before = sizeOf(path);
    fillLog(path, 2000);
    await check(store, path, before);
  } finally {
    await store.close();
  }
}

describe("SQLite WAL checkpoints", { timeout: 60_000 }, () => {
  it('"thread": a thread of the process copies the log into the database file', () =>
    withFilledLog("thread.sqlite", "thread", async (_store, path, before) => {
      const deadline = Date.now() + 10_000;
      while (sizeOf(path) < before + 6_000_000) {
        assert.ok(Date.now() < deadline, `database file ${sizeOf(path)} bytes, log ${sizeOf(`${path}-wal`)}: not checkpointed`);
        await sleep(100);
      }
    }));

  it('"elsewhere": the serving connection leaves the log to another process, up to the backstop', () =>
    withFilledLog("elsewhere.sqlite", "elsewhere", async (store, path, before) => {
      // A commit of the serving connection past SQLite's default 1,000 pages does not checkpoint.
      await store.storeFile("TestService", "f", Buffer.from("x"));
      await sleep(2500);
      assert.ok(sizeOf(path) < before + 1_000_000, `database file grew to ${sizeOf(path)} bytes`);
      assert.ok(sizeOf(`${path}-wal`) > 6_000_000, "the pages are still in the log");
      assert.ok(BACKSTOP_PAGES >= 2000);
    }));
});
