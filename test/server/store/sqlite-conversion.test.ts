// Converting Fleetspeak's (Go) own SQLite files to ours and back (`fleetspeak-server migrate`):
// every row survives the round trip byte for byte, a conversion is all or nothing (a damaged file,
// a process killed half-way), two conversions at once convert once, and our server refuses a file
// it cannot read with a line that says what to run.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { sqliteLayout } from "../../../src/server/store/sqlite-fleetspeak.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import { buildGoFixture, type GoFixture } from "../../support/go-fixture.js";
import { createGoSchema } from "../../support/go-server.js";

const ROOT = resolve(import.meta.dirname, "../../..");
const root = mkdtempSync(join(tmpdir(), "fs-sqlite-conversion-"));
let n = 0;

/** Every row of every table, in a stable order, with blobs in hex: what a file holds. */
function dump(path: string): Record<string, string[]> {
  const db = new Database(path, { readonly: true });
  try {
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as {
      name: string;
    }[]).map((r) => r.name);
    const out: Record<string, string[]> = {};
    for (const t of tables) {
      out[t] = (db.prepare(`SELECT * FROM ${t}`).raw().all() as unknown[][])
        .map((row) => JSON.stringify(row.map((v) => (Buffer.isBuffer(v) ? `x'${v.toString("hex")}'` : [typeof v, v]))))
        .sort();
    }
    return out;
  } finally {
    db.close();
  }
}

function layoutOf(path: string): string {
  const db = new Database(path, { readonly: true });
  try {
    return sqliteLayout(db);
  } finally {
    db.close();
  }
}

function migrateCli(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [join(ROOT, "bin/fleetspeak-server.js"), "migrate", ...args], {
      env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "warn" },
    });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    p.on("exit", (code) => res({ code, out }));
  });
}

let emptyGoFile: string;

/** A copy of an empty SQLite file made by Fleetspeak's (Go) server. */
function goFile(): string {
  const path = join(root, `go-${n++}.sqlite`);
  copyFileSync(emptyGoFile, path);
  return path;
}

/** Fills a Fleetspeak-layout file with `clients` clients and 20 messages each, as Fleetspeak encodes them. */
function fillLikeFleetspeak(path: string, clients: number): void {
  const db = new Database(path);
  const addClient = db.prepare("INSERT INTO clients VALUES (?, ?, 0, ?, '10.0.0.1:4000', NULL, NULL, NULL)");
  const addContact = db.prepare("INSERT INTO client_contacts (client_id, time, sent_nonce, received_nonce, address) VALUES (?, ?, ?, ?, 'a')");
  const addMessage = db.prepare(
    "INSERT INTO messages VALUES (?, '', 'GRR', '', ?, 'GRR', 'T', ?, 0, NULL, NULL, NULL, NULL, NULL, NULL)",
  );
  const addPending = db.prepare("INSERT INTO pending_messages VALUES (?, 0, ?, 'type.googleapis.com/x', ?)");
  db.transaction(() => {
    for (let c = 0; c < clients; c++) {
      const id = randomBytes(8).toString("hex");
      addClient.run(id, randomBytes(91), Date.now() * 1e6);
      addContact.run(id, Date.now() * 1e6, randomBytes(8).readBigUInt64LE().toString(16), "0");
      for (let m = 0; m < 20; m++) {
        const mid = randomBytes(32).toString("hex");
        addMessage.run(mid, id, Math.floor(Date.now() / 1000));
        addPending.run(mid, Date.now() * 1000, randomBytes(200));
      }
    }
  })();
  db.close();
}

before(async () => {
  emptyGoFile = join(root, "go-empty.sqlite");
  await createGoSchema(`sqlite:${emptyGoFile}`);
  const db = new Database(emptyGoFile);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
});
after(() => rmSync(root, { recursive: true, force: true }));

describe("converting Fleetspeak's (Go) SQLite files", () => {
  describe("a file the real Fleetspeak server and clients filled", { timeout: 240_000 }, () => {
    let fixture: GoFixture;
    before(async () => {
      fixture = await buildGoFixture({ backend: "sqlite" });
    });
    after(() => fixture?.cleanup());

    it("comes back byte for byte after a conversion to ours and back", async () => {
      const path = fixture.sqlitePath!;
      const db = new Database(path);
      db.pragma("wal_checkpoint(TRUNCATE)");
      db.close();
      const before = dump(path);
      assert.ok(before.messages!.length > 0 && before.broadcasts!.length > 0 && before.files!.length > 0);
      assert.match(await SqliteStore.migrateFile(path, false), /^converted /);
      assert.equal(layoutOf(path), "ours");
      assert.match(await SqliteStore.migrateFile(path, true), /^converted .* to Fleetspeak's/);
      assert.deepEqual(dump(path), before);
    });
  });

  it("converts all or nothing: a damaged file is refused and left exactly as it was", async () => {
    const path = goFile();
    fillLikeFleetspeak(path, 3);
    // A pending row whose message is gone (Fleetspeak's own foreign keys would have refused it).
    const db = new Database(path);
    db.pragma("foreign_keys = OFF");
    db.prepare("INSERT INTO pending_messages VALUES (?, 0, 0, NULL, NULL)").run(randomBytes(32).toString("hex"));
    db.close();
    const before = dump(path);
    await assert.rejects(
      SqliteStore.migrateFile(path, false),
      /rows that cannot be converted \(they refer to rows that do not exist, or repeat a key\): 1 of pending_messages; nothing was changed/,
    );
    assert.deepEqual(dump(path), before);
    assert.equal(layoutOf(path), "fleetspeak");
  });

  it("leaves a file either unconverted or converted, never between, when the process is killed", async () => {
    const path = goFile();
    fillLikeFleetspeak(path, 2000);
    const before = dump(path);
    const counts = (d: Record<string, string[]>) => ({ messages: d.messages!.length, pending: d.pending_messages!.length });
    for (const delayMs of [150, 400, 900]) {
      const p: ChildProcess = spawn(process.execPath, [join(ROOT, "bin/fleetspeak-server.js"), "migrate", "--sqlite_path", path]);
      // Listened for from the start: the migration may finish before the kill (the built server
      // starts fast), and an exit that happened before a later once("exit") is never heard.
      const exited = new Promise((r) => p.once("exit", r));
      await new Promise((r) => setTimeout(r, delayMs));
      p.kill("SIGKILL");
      await exited;
      const layout = layoutOf(path);
      assert.ok(layout === "fleetspeak" || layout === "ours", `killed after ${delayMs} ms: layout ${layout}`);
      if (layout === "fleetspeak") assert.deepEqual(dump(path), before, `killed after ${delayMs} ms`);
      else assert.deepEqual(counts(dump(path)), counts(before), `killed after ${delayMs} ms`);
      if (layout === "ours") assert.match(await SqliteStore.migrateFile(path, true), /^converted/);
    }
    assert.match(await SqliteStore.migrateFile(path, false), /^converted/);
    const store = await SqliteStore.open({ path });
    const [one] = await store.listClients([]);
    assert.equal(await store.getPendingMessageCount([one!.clientId]), 20n);
    await store.close();
  });

  it("converts once when two migrate commands run at the same moment", async () => {
    const path = goFile();
    fillLikeFleetspeak(path, 200);
    const results = await Promise.all([migrateCli(["--sqlite_path", path]), migrateCli(["--sqlite_path", path])]);
    for (const r of results) assert.equal(r.code, 0, r.out);
    assert.equal(results.filter((r) => /^migrate: converted /.test(r.out)).length, 1, results.map((r) => r.out).join("\n"));
    const store = await SqliteStore.open({ path });
    assert.equal((await store.listClients([])).length, 200);
    await store.close();
  });

  it("is required: the server refuses Fleetspeak's file and names the command, and refuses a foreign one", async () => {
    const path = goFile();
    await assert.rejects(
      SqliteStore.open({ path }),
      new RegExp(`${path} is a database of Fleetspeak's \\(Go\\) own SQLite datastore; .* fleetspeak-server migrate --sqlite_path ${path}`),
    );
    const foreign = join(root, `foreign-${n++}.sqlite`);
    const db = new Database(foreign);
    db.exec("CREATE TABLE clients (id INTEGER PRIMARY KEY)");
    db.close();
    await assert.rejects(SqliteStore.open({ path: foreign }), /holds tables named like Fleetspeak's but was made by neither/);
    const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-server.js"), "migrate", "--sqlite_path", foreign], {
      encoding: "utf8",
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^migrate: .*made by neither Fleetspeak nor this server/m);
  });
});
