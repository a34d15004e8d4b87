// Datastore benchmark (npm run bench -- store [options]). For each backend:
//  - store_10 / store_100: new client-bound messages stored per second through Store.storeMessages
//    in batches of 10 and 100 (what one contact brings), from `--concurrency` writers at once;
//  - raw_10 / raw_100: the same rows inserted by plain batched INSERTs (messages + pending_messages
//    in one transaction) through the same driver, same concurrency: the baseline;
//  - claim_ack: messages per second claimed (claimClientMessages, limit 100) and then marked
//    processed one by one (setMessageResult, as a MessageAck does);
//  - listing: with `10,000 × scale` clients and `1,000,000 × scale` pending messages stored,
//    the latency of getPendingMessages / getPendingMessageCount / claimClientMessages for one
//    client and of clientsWithDueMessages over 1,000 clients.
// Prints one JSON line per backend. With --record, appends a row to bench/RESULTS.md.
//
// Options: --backend sqlite|mysql|both (default both), --messages N (per throughput measurement,
// default 20000), --scale F (listing data set, default 1 = the documented 10k clients / 1M
// messages), --concurrency N (writers, default 8), --payload BYTES (default 256), --record.
// MySQL: a fresh database on 127.0.0.1:3306 (or FLEETSPEAK_TEST_MYSQL_DSN), dropped afterwards.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { AnySchema, timestampNow } from "@bufbuild/protobuf/wkt";
import Database from "better-sqlite3";
import mysql from "mysql2/promise";
import { parseMysqlDsn } from "../src/common/mysql-dsn.js";
import { AddressSchema, type Message, MessageResultSchema, MessageSchema } from "../src/gen/fleetspeak/common_pb.js";
import { MysqlStore } from "../src/server/store/mysql-store.js";
import { MESSAGE_COLUMNS, type MessageRow, msToUs, toMessageRow } from "../src/server/store/rows.js";
import { SqliteStore } from "../src/server/store/sqlite-store.js";
import type { Store } from "../src/server/store/store.js";
import { createTestDatabase } from "../test/support/mariadb.js";

type Backend = "sqlite" | "mysql";

interface Options {
  backends: Backend[];
  messages: number;
  scale: number;
  concurrency: number;
  payload: number;
  record: boolean;
}

function parseOptions(args: string[]): Options {
  const o: Options = { backends: ["sqlite", "mysql"], messages: 20_000, scale: 1, concurrency: 8, payload: 256, record: false };
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.replace(/^--?/, "");
    if (name === "record") {
      o.record = true;
      continue;
    }
    const value = args[++i];
    if (value === undefined) throw new Error(`bench store: option --${name} needs a value`);
    if (name === "backend") {
      if (value === "both") o.backends = ["sqlite", "mysql"];
      else if (value === "sqlite" || value === "mysql") o.backends = [value];
      else throw new Error(`bench store: --backend must be sqlite, mysql or both, got ${JSON.stringify(value)}`);
    } else if (name === "messages" || name === "scale" || name === "concurrency" || name === "payload") {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`bench store: --${name} must be a positive number`);
      o[name] = n;
    } else {
      throw new Error(
        `bench store: unknown option --${name} (known: --backend --messages --scale --concurrency --payload --record)`,
      );
    }
  }
  return o;
}

function message(to: Uint8Array, payload: number): Message {
  return create(MessageSchema, {
    messageId: randomBytes(32),
    source: create(AddressSchema, { serviceName: "GRR" }),
    sourceMessageId: randomBytes(16),
    destination: create(AddressSchema, { clientId: to, serviceName: "GRR" }),
    messageType: "GrrMessage",
    creationTime: timestampNow(),
    data: create(AnySchema, { typeUrl: "type.googleapis.com/grr.GrrMessage", value: randomBytes(payload) }),
  });
}

/** Runs `jobs` through `concurrency` workers; returns the seconds it took. */
async function timed<T>(jobs: T[], concurrency: number, run: (job: T) => Promise<void>): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, jobs.length) }, async () => {
      while (next < jobs.length) await run(jobs[next++]!);
    }),
  );
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function batches(n: number, size: number, payload: number, clients: Uint8Array[]): Message[][] {
  const out: Message[][] = [];
  for (let i = 0; i < n; i += size) {
    const to = clients[(i / size) % clients.length]!;
    out.push(Array.from({ length: Math.min(size, n - i) }, () => message(to, payload)));
  }
  return out;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

async function latencies(n: number, fn: (i: number) => Promise<unknown>): Promise<{ p50_ms: number; p99_ms: number }> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn(i);
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { p50_ms: r(percentile(ms, 0.5)), p99_ms: r(percentile(ms, 0.99)) };
}

/** Plain batched INSERTs of already converted rows: the driver's own speed, the baseline. */
interface RawInserter {
  insert(rows: MessageRow[], dueUs: number): Promise<void>;
  close(): Promise<void>;
}

const PENDING_COLUMNS =
  "message_id, for_server, destination_client_id, destination_service_name, retry_count, scheduled_time, data_type_url, data_value";

function pendingValues(r: MessageRow, dueUs: number): unknown[] {
  return [r.id, 0, r.destinationClientId, r.destinationService, 0, dueUs, r.dataTypeUrl, r.dataValue];
}

function sqliteRaw(path: string): RawInserter {
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 5000");
  const m = db.prepare(`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`);
  const p = db.prepare(`INSERT INTO pending_messages (${PENDING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)`);
  const tx = db.transaction((rows: MessageRow[], dueUs: number) => {
    for (const r of rows) {
      m.run(...r.values);
      p.run(...pendingValues(r, dueUs));
    }
  });
  return {
    insert: async (rows, dueUs) => {
      tx.immediate(rows, dueUs);
    },
    close: async () => {
      db.close();
    },
  };
}

function mysqlRaw(dsn: string, poolSize: number): RawInserter {
  const o = parseMysqlDsn(dsn);
  const pool = mysql.createPool({
    host: o.host,
    port: o.port,
    user: o.user,
    password: o.password,
    database: o.database,
    connectionLimit: poolSize,
    charset: "utf8mb4",
  });
  return {
    insert: async (rows, dueUs) => {
      const c = await pool.getConnection();
      try {
        await c.query("START TRANSACTION");
        await c.query(`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES ?`, [rows.map((r) => r.values)]);
        await c.query(`INSERT INTO pending_messages (${PENDING_COLUMNS}) VALUES ?`, [
          rows.map((r) => pendingValues(r, dueUs)),
        ]);
        await c.query("COMMIT");
      } finally {
        c.release();
      }
    },
    close: () => pool.end(),
  };
}

interface Opened {
  store: Store;
  raw: RawInserter;
  cleanup: () => Promise<void>;
}

async function open(backend: Backend, concurrency: number): Promise<Opened> {
  if (backend === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "fs-bench-store-"));
    const path = join(dir, "fleetspeak.sqlite");
    const store = await SqliteStore.open({ path });
    const raw = sqliteRaw(path);
    return {
      store,
      raw,
      cleanup: async () => {
        await store.close();
        await raw.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const db = await createTestDatabase();
  const store = await MysqlStore.fromDsn(db.dsn, { poolSize: Math.max(20, concurrency) });
  const raw = mysqlRaw(db.dsn, Math.max(20, concurrency));
  return {
    store,
    raw,
    cleanup: async () => {
      await store.close();
      await raw.close();
      await db.drop();
    },
  };
}

const rate = (n: number, s: number) => Math.round(n / s);

async function benchBackend(backend: Backend, o: Options): Promise<Record<string, unknown>> {
  const { store, raw, cleanup } = await open(backend, o.concurrency);
  try {
    const clients = Array.from({ length: 100 }, () => randomBytes(8));
    const out: Record<string, unknown> = { backend };

    for (const size of [10, 100]) {
      // Warm up (statement caches, pool connections); then raw and store take turns twice, and
      // each keeps its better run, so that neither gains from going first into a smaller table.
      await timed(batches(Math.min(2000, o.messages), size, o.payload, clients), o.concurrency, (b) =>
        store.storeMessages(b),
      );
      let bestStore = 0;
      let bestRaw = 0;
      for (let round = 0; round < 2; round++) {
        const now = Date.now();
        const forRaw = batches(o.messages, size, o.payload, clients).map((b) => b.map((m) => toMessageRow(m, now)));
        const rawS = await timed(forRaw, o.concurrency, (rows) => raw.insert(rows, msToUs(Date.now())));
        bestRaw = Math.max(bestRaw, rate(o.messages, rawS));
        const forStore = batches(o.messages, size, o.payload, clients);
        const storeS = await timed(forStore, o.concurrency, (b) => store.storeMessages(b));
        bestStore = Math.max(bestStore, rate(o.messages, storeS));
      }
      out[`store_${size}_msgs_per_s`] = bestStore;
      out[`raw_${size}_msgs_per_s`] = bestRaw;
      out[`store_${size}_ratio_to_raw`] = Math.round((bestStore / bestRaw) * 100) / 100;
    }

    // Claim and ack: fresh clients, each with 100 pending messages.
    const ackClients = Array.from({ length: Math.ceil(o.messages / 100) }, () => randomBytes(8));
    for (const b of batches(o.messages, 100, o.payload, ackClients)) await store.storeMessages(b);
    let acked = 0;
    const ackS = await timed(ackClients, o.concurrency, async (c) => {
      for (;;) {
        const got = await store.claimClientMessages(c, { limit: 100, leaseMs: 900_000 });
        if (got.length === 0) return;
        for (const m of got) {
          await store.setMessageResult(c, m.messageId, create(MessageResultSchema, { processedTime: timestampNow() }));
        }
        acked += got.length;
      }
    });
    out.claim_ack_msgs_per_s = rate(acked, ackS);

    // Listing on a large data set.
    const nClients = Math.round(10_000 * o.scale);
    const perClient = 100;
    const big = Array.from({ length: nClients }, () => randomBytes(8));
    const fillStart = Date.now();
    const fill: Message[][] = [];
    for (let i = 0; i < nClients; i += 10) {
      fill.push(big.slice(i, i + 10).flatMap((c) => Array.from({ length: perClient }, () => message(c, 64))));
      if (fill.length === 20 || i + 10 >= nClients) {
        await timed(fill.splice(0), o.concurrency, (b) => store.storeMessages(b));
      }
    }
    out.listing_clients = nClients;
    out.listing_messages = nClients * perClient;
    out.listing_fill_s = Math.round((Date.now() - fillStart) / 100) / 10;
    const pick = (i: number) => big[(i * 7919) % nClients]!;
    out.get_pending_messages = await latencies(200, (i) =>
      store.getPendingMessages({ clientIds: [pick(i)], offset: 0, limit: 0, wantData: false }),
    );
    out.get_pending_messages_with_data = await latencies(200, (i) =>
      store.getPendingMessages({ clientIds: [pick(i + 1)], offset: 0, limit: 0, wantData: true }),
    );
    out.get_pending_count = await latencies(200, (i) => store.getPendingMessageCount([pick(i + 2)]));
    out.claim_100 = await latencies(200, (i) => store.claimClientMessages(pick(i + 3), { limit: 100, leaseMs: 900_000 }));
    out.clients_with_due_1000 = await latencies(50, (i) =>
      store.clientsWithDueMessages(Array.from({ length: 1000 }, (_, j) => pick(i * 1000 + j))),
    );
    return out;
  } finally {
    await cleanup();
  }
}

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"]).toString().trim();
  } catch {
    return "unknown";
  }
}

export async function run(args: string[]): Promise<void> {
  const o = parseOptions(args);
  const machine = `${cpus().length} cores, ${cpus()[0]?.model.trim() ?? "unknown CPU"}`;
  const command = `npm run bench -- store ${args.join(" ")}`.trim();
  for (const backend of o.backends) {
    const figures = await benchBackend(backend, o);
    const line = {
      bench: "store",
      date: new Date().toISOString(),
      commit: gitCommit(),
      machine,
      messages: o.messages,
      concurrency: o.concurrency,
      payload_bytes: o.payload,
      scale: o.scale,
      ...figures,
    };
    console.log(JSON.stringify(line));
    if (o.record) record(line, command);
  }
}

const SECTION = "## store: datastore throughput and listing (`npm run bench -- store`)";
const TABLE_HEAD = [
  "| date | commit | machine | command | backend | store msgs/s, batches of 10 (× raw INSERT baseline) | batches of 100 | claim + ack msgs/s | listing set: clients / pending msgs | getPendingMessages p50 / p99 ms | getPendingMessageCount p50 / p99 ms | claim 100 p50 / p99 ms | clientsWithDueMessages(1000) p50 / p99 ms |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
];

/** Adds a row to this benchmark's table in bench/RESULTS.md (creating file, section, table). */
function record(line: Record<string, unknown>, command: string): void {
  const file = fileURLToPath(new URL("./RESULTS.md", import.meta.url));
  const f = line as Record<string, never>;
  const lat = (k: string) => {
    const v = f[k] as { p50_ms: number; p99_ms: number };
    return `${v.p50_ms} / ${v.p99_ms}`;
  };
  const row = `| ${[
    String(line.date).slice(0, 10),
    line.commit,
    line.machine,
    `\`${command}\``,
    line.backend,
    `${f.store_10_msgs_per_s} (${f.store_10_ratio_to_raw}× of ${f.raw_10_msgs_per_s})`,
    `${f.store_100_msgs_per_s} (${f.store_100_ratio_to_raw}× of ${f.raw_100_msgs_per_s})`,
    f.claim_ack_msgs_per_s,
    `${f.listing_clients} / ${f.listing_messages}`,
    lat("get_pending_messages"),
    lat("get_pending_count"),
    lat("claim_100"),
    lat("clients_with_due_1000"),
  ].join(" | ")} |`;
  const lines = existsSync(file) ? readFileSync(file, "utf8").split("\n") : ["# Benchmark results", ""];
  let at = lines.indexOf(SECTION);
  if (at < 0) {
    while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
    lines.push("", SECTION, "", ...TABLE_HEAD, "");
    at = lines.indexOf(SECTION);
  }
  let end = at + 1;
  while (end < lines.length && !lines[end]!.startsWith("|")) end++;
  while (end < lines.length && lines[end]!.startsWith("|")) end++;
  lines.splice(end, 0, row);
  writeFileSync(file, lines.join("\n"));
}
