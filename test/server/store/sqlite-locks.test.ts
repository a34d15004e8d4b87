// Several worker processes share one SQLite file and only one writes at a time. A store that finds
// the file locked by another connection waits for it without holding its thread (the thread also
// serves the worker's clients): the lock holder here is another connection in this same thread,
// which could not let go if the store slept in SQLite's busy handler. Operations called while one
// waits keep their order; a lock held past busyTimeoutMs is a clear error.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { LabelSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { StoreUnavailableError } from "../../../src/server/store/errors.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";

const dir = mkdtempSync(join(tmpdir(), "fs-sqlite-locks-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
async function withLockedStore(
  busyTimeoutMs: number,
  check: (store: SqliteStore, lock: Database.Database, retries: string[]) => Promise<void>,
): Promise<void> {
  const path = join(dir, `locks-${++files}.sqlite`);
  const store = await SqliteStore.open({ path, busyTimeoutMs });
  const retries: string[] = [];
  store.observeRetries((op, reason) => retries.push(`${op}:${reason}`));
  const lock = new Database(path);
  try {
    lock.prepare("BEGIN IMMEDIATE").run(); // another writer holds the file
    await check(store, lock, retries);
  } finally {
    if (lock.inTransaction) lock.prepare("ROLLBACK").run();
    lock.close();
    await store.close();
  }
}

const newClient = () => ({ id: randomBytes(8), data: { key: randomBytes(91), labels: [], blacklisted: false } });

describe("SQLite store and another connection's write lock", () => {
  it("waits for the lock with the thread free, then writes", async () => {
    await withLockedStore(5000, async (store, lock, retries) => {
      const c = newClient();
      let done = false;
      const adding = store.addClient(c.id, c.data).then(() => (done = true));
      // This timer can only fire if the store is not sleeping in SQLite's busy handler.
      await sleep(150);
      assert.equal(done, false, "the write waits while the lock is held");
      lock.prepare("COMMIT").run();
      await adding;
      assert.ok(await store.getClientData(c.id), "the client was stored once the lock was free");
      assert.deepEqual(retries, ["addClient:locked"], "the wait is counted as a retry of the operation");
    });
  });

  it("keeps call order: what is called while a write waits sees that write", async () => {
    await withLockedStore(5000, async (store, lock) => {
      const c = newClient();
      const adding = store.addClient(c.id, c.data);
      const reading = store.getClientData(c.id); // not awaited after the write: called while it waits
      const labelling = store.addClientLabel(c.id, create(LabelSchema, { serviceName: "client", label: "after" }));
      setTimeout(() => lock.prepare("COMMIT").run(), 50);
      await adding;
      assert.ok(await reading, "the read called after the write sees the client");
      await labelling;
      assert.deepEqual((await store.getClientData(c.id))?.labels.map((l) => l.label), ["after"]);
    });
  });

  it("gives up after busyTimeoutMs with an error naming the database and what to check", async () => {
    await withLockedStore(200, async (store, lock) => {
      const c = newClient();
      const started = Date.now();
      await assert.rejects(store.addClient(c.id, c.data), (e: Error) => {
        assert.ok(e instanceof StoreUnavailableError, String(e));
        assert.match(e.message, /stayed locked by another connection during addClient; retry later/);
        return true;
      });
      assert.ok(Date.now() - started >= 200, "it waited the whole busy timeout");
      lock.prepare("COMMIT").run();
      await store.addClient(c.id, c.data); // nothing was left half done
      assert.ok(await store.getClientData(c.id));
    });
  });

  it("rejects what still waits when it is closed", async () => {
    await withLockedStore(5000, async (store) => {
      const c = newClient();
      const adding = store.addClient(c.id, c.data);
      await sleep(20);
      await store.close();
      await assert.rejects(adding, /is closed \(addClient\)/);
    });
  });
});
