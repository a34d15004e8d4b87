// Operator console benchmark (npm run bench -- console [options]): what the console's queries cost
// on a large fleet, and what a console refreshing non-stop does to the hot path.
//  - Fills a fresh store with `--clients` clients (default 100,000; 3 labels each, last contacts
//    spread over two days, a quarter streaming to one of 4 frontends, 3 contacts each), 50,000
//    pending client-bound messages and 1,000 server-bound ones, with plain batched INSERTs.
//  - queries: median and max ms of each ConsoleStore query over 5 runs, and of each page's data
//    uncached (a fresh ConsoleData each time: what one refresh costs when its answers expire).
//  - hot path: p50/p99 ms of recordClientContact + claimClientMessages (what a contact does) from
//    8 concurrent loops for `--seconds`, alone and then while one loop loads every console page
//    uncached, back to back (far more than viewers cause: shared answers expire every 10–60 s).
// Prints one JSON line per backend. Options: --backend sqlite|mysql|both (default mysql),
// --clients N, --seconds N (default 10).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import Database from "better-sqlite3";
import mysql from "mysql2/promise";
import { parseMysqlDsn } from "../src/common/mysql-dsn.js";
import { AddressSchema, type Message, MessageSchema } from "../src/gen/fleetspeak/common_pb.js";
import { ConsoleData } from "../src/server/console/console-data.js";
import { MysqlStore } from "../src/server/store/mysql-store.js";
import { msToNs } from "../src/server/store/rows.js";
import { SqliteStore } from "../src/server/store/sqlite-store.js";
import type { Store } from "../src/server/store/store.js";
import { createTestDatabase } from "../test/support/mariadb.js";

type Backend = "sqlite" | "mysql";
const FRONTENDS = ["10.0.0.1:8081", "10.0.0.2:8081", "10.0.0.3:8081", "10.0.0.4:8081"];
const BATCH = 1000;

interface Options {
  backends: Backend[];
  clients: number;
  seconds: number;
}

function parseOptions(args: string[]): Options {
  const o: Options = { backends: ["mysql"], clients: 100_000, seconds: 10 };
  for (let i = 0; i < args.length; i += 2) {
    const name = args[i]!.replace(/^--?/, "");
    const value = args[i + 1];
    if (value === undefined) throw new Error(`bench console: option --${name} needs a value`);
    if (name === "backend") o.backends = value === "both" ? ["sqlite", "mysql"] : [value as Backend];
    else if (name === "clients" || name === "seconds") o[name] = Number(value);
    else throw new Error(`bench console: unknown option --${name} (known: --backend --clients --seconds)`);
  }
  return o;
}

/** Runs one batch of rows as a multi-row INSERT. */
type Insert = (table: string, columns: string[], rows: unknown[][]) => Promise<void>;

async function fill(insert: Insert, store: Store, n: number): Promise<Buffer[]> {
  const now = Date.now();
  const ids: Buffer[] = [];
  for (let start = 0; start < n; start += BATCH) {
    const clients: unknown[][] = [];
    const labels: unknown[][] = [];
    const contacts: unknown[][] = [];
    for (let i = start; i < Math.min(n, start + BATCH); i++) {
      const id = randomBytes(8);
      ids.push(id);
      const last = now - Math.floor(Math.random() * 2 * 86_400_000);
      const streaming = i % 4 === 0 ? FRONTENDS[i % FRONTENDS.length]! : null;
      clients.push([id, randomBytes(91), 0, msToNs(last), `192.0.2.${i % 250}:40000`, streaming]);
      labels.push([id, "client", i % 10 === 0 ? "windows" : "linux"], [id, "client", `rack-${i % 50}`], [id, "client", `group-${i % 1000}`]);
      for (let k = 0; k < 3; k++) contacts.push([id, msToNs(last - k * 600_000), randomBytes(8), randomBytes(8), "192.0.2.1:4000"]);
    }
    await insert("clients", ["client_id", "client_key", "blacklisted", "last_contact_time", "last_contact_address", "last_contact_streaming_to"], clients);
    await insert("client_labels", ["client_id", "service_name", "label"], labels);
    await insert("client_contacts", ["client_id", "time", "sent_nonce", "received_nonce", "address"], contacts);
  }
  const msg = (to: Uint8Array): Message =>
    create(MessageSchema, {
      messageId: randomBytes(32),
      source: create(AddressSchema, { serviceName: "GRR" }),
      destination: create(AddressSchema, { clientId: to, serviceName: "GRR" }),
      messageType: "GrrMessage",
      creationTime: timestampNow(),
    });
  for (let i = 0; i < 50_000; i += BATCH) {
    await store.storeMessages(Array.from({ length: BATCH }, (_, k) => msg(ids[(i + k) % ids.length]!)));
  }
  await store.storeMessages(Array.from({ length: 1000 }, () => msg(new Uint8Array(0))));
  return ids;
}

function summary(ms: number[]): { p50: number; p99: number; max: number } {
  const s = [...ms].sort((a, b) => a - b);
  const at = (p: number) => Math.round(s[Math.min(s.length - 1, Math.floor(s.length * p))]! * 100) / 100;
  return { p50: at(0.5), p99: at(0.99), max: at(1) };
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function queries(store: Store, ids: Buffer[]): Promise<Record<string, { p50: number; max: number }>> {
  const now = Date.now();
  const one = ids[7]!;
  const cases: Record<string, () => Promise<unknown>> = {
    countClients: () => store.countClients([now - 300_000, now - 3600_000, now - 86_400_000]),
    countClientsByLabel: () => store.countClientsByLabel(50),
    countStreamHolders: () => store.countStreamHolders(now - 15 * 60_000),
    searchRecent: () => store.searchClients({ by: "recent", limit: 50 }),
    searchIdPrefix: () => store.searchClients({ by: "idPrefix", prefix: "ab", limit: 50 }),
    searchLabelCommon: () => store.searchClients({ by: "label", label: "linux", limit: 50 }),
    searchLabelAbsent: () => store.searchClients({ by: "label", label: "no-such-label", limit: 50 }),
    listRecentClientContacts: () => store.listRecentClientContacts(one, 20),
    countPendingByService: () => store.countPendingByService(one),
    listRecentFailedMessages: () => store.listRecentFailedMessages(one, 50, 20),
    listServiceQueues: () => store.listServiceQueues(100_000),
    fleetPage: () => new ConsoleData(store).fleet(undefined),
    clientPage: () => new ConsoleData(store).client(one),
    serversPage: () => new ConsoleData(store).servers(),
    servicesPage: () => new ConsoleData(store).services(),
  };
  const out: Record<string, { p50: number; max: number }> = {};
  for (const [name, fn] of Object.entries(cases)) {
    const ms: number[] = [];
    for (let i = 0; i < 5; i++) ms.push(await time(fn));
    const { p50, max } = summary(ms);
    out[name] = { p50, max };
  }
  return out;
}

/** recordClientContact + claimClientMessages from 8 loops for `seconds`; with `console`, one loop refreshing every page. */
async function hotPath(store: Store, ids: Buffer[], seconds: number, withConsole: boolean) {
  const until = Date.now() + seconds * 1000;
  const ms: number[] = [];
  let refreshes = 0;
  const contact = async () => {
    while (Date.now() < until) {
      const id = ids[Math.floor(Math.random() * ids.length)]!;
      ms.push(
        await time(async () => {
          const contactId = await store.recordClientContact({ clientId: id, sentNonce: 1n, receivedNonce: 2n, address: "192.0.2.9:1" });
          await store.claimClientMessages(id, { limit: 100, leaseMs: 600_000, contactId });
        }),
      );
    }
  };
  const refresh = async () => {
    while (Date.now() < until) {
      const data = new ConsoleData(store);
      await data.fleet(undefined);
      await data.client(ids[1]!);
      await data.servers();
      await data.services();
      refreshes++;
    }
  };
  await Promise.all([...Array.from({ length: 8 }, contact), ...(withConsole ? [refresh()] : [])]);
  return { contacts_per_s: Math.round(ms.length / seconds), ...summary(ms), console_refreshes: refreshes };
}

export async function run(args: string[]): Promise<void> {
  const o = parseOptions(args);
  for (const backend of o.backends) {
    let store: Store;
    let insert: Insert;
    let cleanup: () => Promise<void>;
    if (backend === "mysql") {
      const db = await createTestDatabase();
      store = await MysqlStore.fromDsn(db.dsn);
      const c = parseMysqlDsn(db.dsn);
      const conn = await mysql.createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
      insert = async (table, columns, rows) => {
        await conn.query(`INSERT INTO ${table} (${columns.join(", ")}) VALUES ?`, [rows]);
      };
      cleanup = async () => {
        await conn.end();
        await store.close();
        await db.drop();
      };
    } else {
      const dir = mkdtempSync(join(tmpdir(), "fs-bench-console-"));
      const path = join(dir, "fleetspeak.sqlite");
      store = await SqliteStore.open({ path });
      const db = new Database(path);
      db.pragma("busy_timeout = 5000");
      db.defaultSafeIntegers(true);
      insert = async (table, columns, rows) => {
        const stmt = db.prepare(`INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`);
        db.transaction(() => {
          for (const r of rows) stmt.run(...r);
        })();
      };
      cleanup = async () => {
        db.close();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      };
    }
    try {
      process.stderr.write(`console bench: filling ${backend} with ${o.clients} clients…\n`);
      const ids = await fill(insert, store, o.clients);
      const q = await queries(store, ids);
      process.stderr.write("console bench: hot path alone…\n");
      const alone = await hotPath(store, ids, o.seconds, false);
      process.stderr.write("console bench: hot path with the console refreshing non-stop…\n");
      const busy = await hotPath(store, ids, o.seconds, true);
      console.log(JSON.stringify({ backend, clients: o.clients, queries_ms: q, hot_path_alone_ms: alone, hot_path_with_console_ms: busy }));
    } finally {
      await cleanup();
    }
  }
}
