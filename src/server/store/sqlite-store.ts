// The embedded datastore: one SQLite file (WAL mode), the default when no MySQL database is
// configured. better-sqlite3 is synchronous, so every operation here is one statement or one
// transaction that runs to completion before the next; write transactions start IMMEDIATE so that
// several processes sharing the file queue up on busy_timeout instead of failing to upgrade a lock.
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import type { Label, Message, MessageResult } from "../../gen/fleetspeak/common_pb.js";
import type { ResourceUsageData } from "../../gen/fleetspeak_monitoring/resource_pb.js";
import type { Client, ClientContact } from "../../gen/fleetspeak_server/admin_pb.js";
import type { Broadcast } from "../../gen/fleetspeak_server/broadcasts_pb.js";
import type { ClientResourceUsageRecord } from "../../gen/fleetspeak_server/resource_pb.js";
import { Coalescer } from "../../common/coalescer.js";
import { createLogger, type Logger } from "../../common/log.js";
import {
  checkQueueRows,
  clientCountsFromRow,
  ConsoleReads,
  countClientsQuery,
  heartbeatValues,
  labelCountFromRow,
  pruneHeartbeatsQuery,
  type Query,
  QUEUE_COLUMNS,
  serviceQueuesFromRows,
  serviceQueuesQuery,
  topLabels,
  UPSERT_HEARTBEAT_SQL,
} from "./console-queries.js";
import { InvalidArgumentError, NotFoundError, SchemaVersionError, StoreUnavailableError } from "./errors.js";
import { latestVersion, pendingMigrations } from "./migrations.js";
import { convertFromFleetspeak, convertToFleetspeak, sqliteLayout } from "./sqlite-fleetspeak.js";
import {
  BROADCAST_COLUMNS,
  type BroadcastDbRow,
  broadcastFromRow,
  broadcastValues,
  buf,
  CREATED_BEFORE_SQL,
  type ClientDbRow,
  type ContactDbRow,
  checkClientId,
  checkId,
  checkLabel,
  checkName,
  checkPayloadSize,
  clientFromRow,
  contactFromRow,
  contactIdFromString,
  contactIdToString,
  type DbInt,
  defaultServerDueMs,
  hex,
  type LabelDbRow,
  labelFromRow,
  labelsByClient,
  MESSAGE_COLUMNS,
  type MessageDbRow,
  type MessageRow,
  messageColumns,
  messageFromRow,
  msToNs,
  msToTimestamp,
  msToUs,
  NOT_EXPIRED_SQL,
  nonceToBytes,
  notExpiredParams,
  nsToMs,
  num,
  RESOURCE_USAGE_COLUMNS,
  REMOVED_BY_ADMIN,
  type ResourceUsageDbRow,
  resourceUsageFromRow,
  resourceUsageValues,
  resultFromRow,
  resultValues,
  serviceQuotas,
  carriedLeaseParams,
  carriedLeaseWhere,
  carriedRow,
  recentLeaseRange,
  toMessageRow,
} from "./rows.js";
import { BACKSTOP_PAGES, SqliteCheckpointer } from "./sqlite-checkpointer.js";
import { SQLITE_MIGRATIONS } from "./sqlite-schema.js";
import type {
  ActiveBroadcast,
  CarriedLease,
  CarriedMessage,
  ClaimOptions,
  ClientAck,
  ClientCounts,
  ClientSearch,
  LabelCount,
  PendingByService,
  ServerHeartbeat,
  ServiceQueue,
  StreamHolderCount,
  MessageResultUpdate,
  ClientData,
  ContactRecord,
  MessageStatus,
  PendingQuery,
  Store,
  StoredFile,
} from "./store.js";

export interface SqliteStoreOptions {
  /** The database file; its directory is created if missing. */
  path: string;
  /** How long to wait for another process's write lock before giving up. Default 5000 ms. */
  busyTimeoutMs?: number;
  /**
   * Who runs the WAL checkpoints: "auto" (SQLite's default, in the commit that crosses 1,000
   * pages), "thread" (a thread of this process, sqlite-checkpointer.ts), or "elsewhere" (another
   * process of the server runs the thread). Default "auto".
   */
  checkpoints?: "auto" | "thread" | "elsewhere";
  /** Logs the checkpoint thread's trouble (with checkpoints: "thread"). */
  logger?: Logger;
}

/** IDs as a JSON list of hex strings: one statement matches any number of them. */
const IN_IDS = "(SELECT unhex(value) FROM json_each(?))";
const STREAM_PAGE = 1000;
/** Rows per page of the console's whole-table passes (inPages): a few milliseconds each. */
const CONSOLE_PAGE = 2000;
const EMPTY = Buffer.alloc(0);

function idList(ids: Uint8Array[]): string {
  return JSON.stringify(ids.map(hex));
}

/** Thrown inside a transaction to roll it back quietly. */
class Rollback {}

/** An operation waiting for a lock another connection holds (see SqliteStore.run). */
interface Waiting {
  op: string;
  fn: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  /** When it was first tried (0: not yet). */
  since: number;
  tries: number;
}

function isLockBusy(e: unknown): boolean {
  return ((e as { code?: string }).code ?? "").startsWith("SQLITE_BUSY");
}

/** One storeMessages call, checked and waiting for its transaction. */
interface PendingStore {
  rows: MessageRow[];
  contact: bigint | undefined;
  serverDue: number;
  clientDue: number;
}

export class SqliteStore implements Store {
  readonly backend = "sqlite";
  private readonly db: Database.Database;
  /** The thread running this file's WAL checkpoints, with checkpoints: "thread". */
  private checkpointer: SqliteCheckpointer | undefined;
  /** Runs its argument in a transaction; made once (better-sqlite3 builds a wrapper per transaction() call). */
  private readonly inTransaction: Database.Transaction<<T>(fn: () => T) => T>;
  private readonly statements = new Map<string, Database.Statement>();
  private closed = false;
  /** Operations in call order behind one that found the database locked by another connection. */
  private readonly waiting: Waiting[] = [];
  /** The next try of what waits: clearImmediate must never be given a Timeout, nor clearTimeout an Immediate. */
  private drainTimer: { immediate: NodeJS.Immediate } | { timeout: NodeJS.Timeout } | undefined;
  private onRetry: ((operation: string, reason: string) => void) | undefined;
  readonly #reads = new ConsoleReads(
    (op, q) => this.all(op, q),
    (ids) => this.listClients(ids),
  );

  private constructor(
    private readonly path: string,
    private readonly busyTimeoutMs: number,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    try {
      this.db = new Database(path);
    } catch (e) {
      throw new StoreUnavailableError(
        `cannot open SQLite database ${path}: ${(e as Error).message}; check that the directory is writable`,
        { cause: e },
      );
    }
    this.db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("foreign_keys = ON");
    this.db.defaultSafeIntegers(true);
    this.inTransaction = this.db.transaction(<T>(fn: () => T): T => fn());
  }

  /** Opens (creating if needed) the database file and brings its schema up to date. */
  static async open(opts: SqliteStoreOptions): Promise<SqliteStore> {
    const store = new SqliteStore(resolve(opts.path), opts.busyTimeoutMs ?? 5000);
    try {
      store.migrate();
    } catch (e) {
      store.db.close();
      if (e instanceof SchemaVersionError) throw e;
      throw store.mapError("schema migration", e);
    }
    // From here on a lock held by another connection (another worker of this server, or a
    // tool) is waited for without blocking the thread: see run().
    store.db.pragma("busy_timeout = 0");
    const checkpoints = opts.checkpoints ?? "auto";
    if (checkpoints !== "auto") store.db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    if (checkpoints === "thread") store.checkpointer = new SqliteCheckpointer({ path: store.path, logger: opts.logger ?? createLogger("store") });
    return store;
  }

  /**
   * `fleetspeak-server migrate`: converts a file that Fleetspeak (Go) made to this server's layout
   * (in one transaction), or brings one of ours up to date. Says which it did.
   */
  static async migrateFile(path: string, toFleetspeak: boolean): Promise<string> {
    const store = new SqliteStore(resolve(path), 5000);
    const where = store.path;
    try {
      const layout = sqliteLayout(store.db);
      if (toFleetspeak) {
        if (layout === "fleetspeak") return `${where} is in Fleetspeak's layout already; nothing to do`;
        if (layout !== "ours") throw new SchemaVersionError(`${where} holds no database of this server to convert`);
        store.migrate();
        const merged = convertToFleetspeak(store.db);
        if (merged === undefined) return `${where} was converted to Fleetspeak's layout by another process meanwhile`;
        const said = `converted ${where} to Fleetspeak's (Go) SQLite layout; Fleetspeak's server can run on it now`;
        if (merged.length === 0) return said;
        return `${said}\nnote: Fleetspeak's SQLite datastore keeps file names that spell the same number as one file; the newer one was kept, these are gone: ${merged.join(", ")}`;
      }
      if (layout === "fleetspeak") {
        const numeric = convertFromFleetspeak(store.db);
        if (numeric !== undefined) {
          const said = `converted ${where} from Fleetspeak's (Go) SQLite layout; this server can run on it now (fleetspeak-server migrate --to-fleetspeak converts it back)`;
          if (numeric.length === 0) return said;
          return `${said}\nnote: Fleetspeak's SQLite datastore stored the names of these files as numbers, losing how they were written (e.g. "0123" became "123"): ${numeric.join(", ")}; they are served under these names now. Store any of them again under its real name with: fleetspeak-admin storefile SERVICE NAME FILE`;
        }
      }
      store.migrate();
      return `${where} is up to date (schema version ${latestVersion(SQLITE_MIGRATIONS)})`;
    } catch (e) {
      if (e instanceof SchemaVersionError) throw e;
      throw new StoreUnavailableError(`cannot convert ${where}: ${(e as Error).message}`, { cause: e });
    } finally {
      store.db.close();
    }
  }

  private migrate(): void {
    this.db
      .transaction(() => {
        const layout = sqliteLayout(this.db);
        if (layout === "fleetspeak") {
          throw new SchemaVersionError(
            `${this.path} is a database of Fleetspeak's (Go) own SQLite datastore; stop Fleetspeak, back the file up, and convert it in place with: fleetspeak-server migrate --sqlite_path ${this.path} (fleetspeak-server migrate --to-fleetspeak --sqlite_path ${this.path} converts it back)`,
          );
        }
        if (layout === "unknown") {
          throw new SchemaVersionError(
            `${this.path} holds tables named like Fleetspeak's but was made by neither Fleetspeak nor this server; point the server at another file`,
          );
        }
        this.db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
        const row = this.db.prepare("SELECT MAX(version) AS v FROM schema_version").get() as { v: DbInt | null };
        const current = row.v === null ? 0 : num(row.v);
        const todo = pendingMigrations(SQLITE_MIGRATIONS, current, `database ${this.path}`);
        for (const m of todo) {
          for (const s of m.statements) this.db.exec(s);
        }
        if (todo.length > 0) {
          this.db.exec("DELETE FROM schema_version");
          this.db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(todo[todo.length - 1]!.version);
        }
      })
      .immediate();
  }

  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  observeRetries(observer: (operation: string, reason: string) => void): void {
    this.onRetry = observer;
  }

  /**
   * Runs `fn` (statements, or one write transaction) now, unless the database is locked by another
   * connection: several worker processes of one server share the file, and only one writes at a
   * time. SQLite's own busy timeout would then hold this process's only thread, sleeping 1, 2,
   * 5 ms… between tries, and every stream of the worker with it. Instead the connection's timeout
   * is 0 and the operation waits here, tried again from the event loop until busyTimeoutMs have
   * passed, while the thread serves its clients. Operations called meanwhile queue behind it in
   * call order, so that each still sees what the ones called before it did, as when every call ran
   * at once. A BUSY error leaves nothing done: a transaction is rolled back whole, and the
   * operations that run several transactions run each through here.
   */
  private run<T>(op: string, fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError(op));
    if (this.waiting.length === 0) {
      try {
        return Promise.resolve(fn());
      } catch (e) {
        if (!isLockBusy(e)) return Promise.reject(this.mapError(op, e));
        return this.wait(op, fn, Date.now());
      }
    }
    return this.wait(op, fn, 0);
  }

  private closedError(op: string): StoreUnavailableError {
    return new StoreUnavailableError(`SQLite store ${this.path} is closed (${op})`);
  }

  private wait<T>(op: string, fn: () => T, since: number): Promise<T> {
    if (since !== 0) this.onRetry?.(op, "locked");
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ op, fn, resolve: resolve as (v: unknown) => void, reject, since, tries: since === 0 ? 0 : 1 });
      this.scheduleDrain(0);
    });
  }

  /** The next try: at once for the first few (the lock is held for a commit, ~1 ms), then every 1–10 ms. */
  private scheduleDrain(tries: number): void {
    if (this.drainTimer) return;
    const drain = () => {
      this.drainTimer = undefined;
      this.drain();
    };
    this.drainTimer = tries < 3 ? { immediate: setImmediate(drain) } : { timeout: setTimeout(drain, Math.min(10, tries - 2)) };
  }

  private drain(): void {
    while (this.waiting.length > 0) {
      const w = this.waiting[0]!;
      if (this.closed) {
        this.waiting.shift();
        w.reject(this.closedError(w.op));
        continue;
      }
      try {
        const value = w.fn();
        this.waiting.shift();
        w.resolve(value);
      } catch (e) {
        const now = Date.now();
        if (isLockBusy(e) && (w.since === 0 || now - w.since < this.busyTimeoutMs)) {
          if (w.since === 0) w.since = now;
          w.tries++;
          this.scheduleDrain(w.tries);
          return;
        }
        this.waiting.shift();
        w.reject(this.mapError(w.op, e));
      }
    }
  }

  private write<T>(op: string, fn: () => T): Promise<T> {
    return this.run(op, () => this.inTransaction.immediate(fn) as T);
  }

  private mapError(op: string, e: unknown): Error {
    if (
      e instanceof StoreUnavailableError ||
      e instanceof InvalidArgumentError ||
      e instanceof NotFoundError ||
      e instanceof SchemaVersionError
    ) {
      return e;
    }
    const err = e as Error & { code?: string };
    const code = err.code ?? "";
    if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
      return new StoreUnavailableError(
        `SQLite database ${this.path} stayed locked by another connection during ${op}; retry later, and check that no other process holds a long transaction on it`,
        { cause: e },
      );
    }
    if (
      code.startsWith("SQLITE_FULL") ||
      code.startsWith("SQLITE_IOERR") ||
      code.startsWith("SQLITE_CANTOPEN") ||
      code.startsWith("SQLITE_READONLY") ||
      code.startsWith("SQLITE_CORRUPT") ||
      code.startsWith("SQLITE_NOTADB")
    ) {
      return new StoreUnavailableError(
        `SQLite database ${this.path} failed during ${op} (${code}: ${err.message}); check the disk and the file's permissions`,
        { cause: e },
      );
    }
    return new Error(`SQLite store ${this.path}: ${op}: ${err.message}`, { cause: e });
  }

  private isForeignKeyError(e: unknown): boolean {
    return (e as { code?: string }).code === "SQLITE_CONSTRAINT_FOREIGNKEY";
  }

  private isUniqueError(e: unknown): boolean {
    const code = (e as { code?: string }).code;
    return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE";
  }

  // ---- messages ----

  storeMessages(msgs: Message[], opts: { contactId?: string; serverDueMs?: number } = {}): Promise<void> {
    const now = Date.now();
    let rows: MessageRow[];
    let contact: bigint | undefined;
    try {
      rows = msgs.map((m) => toMessageRow(m, now));
      contact = opts.contactId === undefined ? undefined : contactIdFromString(opts.contactId);
    } catch (e) {
      return Promise.reject(e);
    }
    if (rows.length === 0) return Promise.resolve();
    const serverDue = msToUs(opts.serverDueMs ?? defaultServerDueMs(now));
    return this.stores.submit({ rows, contact, serverDue, clientDue: msToUs(now) });
  }

  /**
   * Stores of one event-loop turn share a transaction: a commit writes its pages to the WAL (a
   * few write() calls), which cost more than the rows of a frame's ten messages. One that fails
   * (an unknown contact) is run again alone, so that it fails by itself.
   */
  private readonly stores = new Coalescer<PendingStore, void>(
    (batch) =>
      this.write("storeMessages", () => {
        for (const { rows, contact, serverDue, clientDue } of batch) {
          for (const r of rows) {
            this.storeOne(r, r.forServer ? serverDue : clientDue);
            if (contact !== undefined) this.linkOne(contact, r.id);
          }
        }
        return batch.map(() => undefined);
      }),
    { maxBatch: 64, maxInFlight: 1, isolate: (err) => !(err instanceof StoreUnavailableError) },
  );

  private storeOne(r: MessageRow, dueUs: number): void {
    if (r.result === "success") {
      this.stmt(
        `INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
         ON CONFLICT (message_id) DO UPDATE SET processed_time_seconds = excluded.processed_time_seconds,
           processed_time_nanos = excluded.processed_time_nanos, failed = NULL, failed_reason = NULL`,
      ).run(...r.values);
      this.stmt("DELETE FROM pending_messages WHERE message_id = ?").run(r.id);
      return;
    }
    const inserted =
      this.stmt(`INSERT OR IGNORE INTO messages (${MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`).run(
        ...r.values,
      ).changes === 1;
    if (inserted) {
      if (r.result === undefined) this.insertPending(r, dueUs);
      return;
    }
    if (r.result === "failed") {
      const failed = this.stmt(
        `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = 1, failed_reason = ?
         WHERE message_id = ? AND processed_time_seconds IS NULL`,
      ).run(r.values[9], r.values[10], r.values[13], r.id);
      if (failed.changes === 1) this.stmt("DELETE FROM pending_messages WHERE message_id = ?").run(r.id);
    }
  }

  private insertPending(r: MessageRow, dueUs: number): void {
    this.stmt(
      `INSERT INTO pending_messages (message_id, for_server, destination_client_id, destination_service_name,
         retry_count, scheduled_time, data_type_url, data_value) VALUES (?,?,?,?,0,?,?,?)`,
    ).run(r.id, r.forServer ? 1 : 0, r.destinationClientId, r.destinationService, dueUs, r.dataTypeUrl, r.dataValue);
  }

  private linkOne(contact: bigint, id: Buffer): void {
    try {
      this.stmt("INSERT OR IGNORE INTO client_contact_messages (client_contact_id, message_id) VALUES (?, ?)").run(
        contact,
        id,
      );
    } catch (e) {
      if (this.isForeignKeyError(e)) {
        throw new NotFoundError(
          `cannot link message ${hex(id)} to contact ${contact.toString(16)}: no such contact or message`,
        );
      }
      throw e;
    }
  }

  getMessages(ids: Uint8Array[], wantData: boolean): Promise<Message[]> {
    return this.run("getMessages", () => {
      for (const id of ids) checkId(id, 32, "message ID");
      if (ids.length === 0) return [];
      const rows = this.stmt(
        `SELECT ${messageColumns("m")}, p.data_type_url, p.data_value FROM messages m
         LEFT JOIN pending_messages p ON p.message_id = m.message_id WHERE m.message_id IN ${IN_IDS}`,
      ).all(idList(ids)) as MessageDbRow[];
      return rows.map((r) => messageFromRow(r, wantData));
    });
  }

  getMessageStatus(id: Uint8Array): Promise<MessageStatus | undefined> {
    return this.run("getMessageStatus", () => {
      checkId(id, 32, "message ID");
      const row = this.stmt(
        `SELECT creation_time_seconds, creation_time_nanos, processed_time_seconds, processed_time_nanos, failed,
           failed_reason FROM messages WHERE message_id = ?`,
      ).get(buf(id)) as MessageDbRow | undefined;
      if (!row) return undefined;
      const status: MessageStatus = {
        creationTime: { seconds: BigInt(row.creation_time_seconds), nanos: num(row.creation_time_nanos) },
      };
      const result = resultFromRow(row);
      if (result) status.result = result;
      return status;
    });
  }

  async setMessageResult(destinationClientId: Uint8Array, id: Uint8Array, result: MessageResult): Promise<boolean> {
    const [done] = await this.setMessageResults([{ destinationClientId, id, result }]);
    return done!;
  }

  setMessageResults(items: MessageResultUpdate[]): Promise<boolean[]> {
    return this.write("setMessageResults", () => {
      const now = Date.now();
      return items.map(({ destinationClientId, id, result }) => {
        checkId(id, 32, "message ID");
        if (destinationClientId.length !== 0) checkClientId(destinationClientId, "destination client ID");
        const [s, n, failed, reason] = resultValues(result, now);
        const dest = destinationClientId.length === 0 ? null : buf(destinationClientId);
        const changed = this.stmt(
          `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = ?, failed_reason = ?
           WHERE message_id = ? AND destination_client_id IS ?`,
        ).run(s, n, failed, reason, buf(id), dest).changes;
        if (changed === 0) return false;
        this.stmt("DELETE FROM pending_messages WHERE message_id = ?").run(buf(id));
        return true;
      });
    });
  }

  ackClientMessages(items: ClientAck[], processedMs: number): Promise<number[]> {
    return this.write("ackClientMessages", () => {
      const at = msToTimestamp(processedMs);
      const mark = this.stmt(
        `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = NULL, failed_reason = NULL
         WHERE message_id = ? AND destination_client_id = ? AND processed_time_seconds IS NULL`,
      );
      const unqueue = this.stmt("DELETE FROM pending_messages WHERE message_id = ?");
      return items.map(({ clientId, ids }) => {
        checkClientId(clientId);
        for (const id of ids) checkId(id, 32, "message ID");
        let marked = 0;
        for (const id of ids) {
          if (mark.run(Number(at.seconds), at.nanos, buf(id), buf(clientId)).changes === 0) continue;
          unqueue.run(buf(id));
          marked++;
        }
        return marked;
      });
    });
  }

  releaseRecentLeases(clientId: Uint8Array, opts: { leaseMs: number; recentMs: number; dueAtMs: number }): Promise<number> {
    return this.write("releaseRecentLeases", () => {
      checkClientId(clientId);
      const [from, to] = recentLeaseRange(Date.now(), opts);
      return this.stmt(
        `UPDATE pending_messages SET scheduled_time = ?
         WHERE destination_client_id = ? AND scheduled_time > ? AND scheduled_time <= ?`,
      ).run(msToUs(opts.dueAtMs), buf(clientId), from, to).changes;
    });
  }

  leaseCarriedMessages(items: CarriedMessage[], leaseMs: number): Promise<CarriedLease[]> {
    return this.write("leaseCarriedMessages", () => {
      const now = Date.now();
      // Only a message stored exactly as carried (every column and the payload) is leased.
      const lease = this.stmt(
        `UPDATE pending_messages AS p SET retry_count = p.retry_count + 1, scheduled_time = ?
         FROM messages AS m WHERE m.message_id = p.message_id AND ${carriedLeaseWhere("p", "m", "IS")}`,
      );
      const due = this.stmt(
        "SELECT EXISTS (SELECT 1 FROM pending_messages WHERE destination_client_id = ? AND scheduled_time <= ?) AS due",
      );
      return items.map(({ message, contactId }) => {
        const row = carriedRow(message, now);
        if (!row) return { leased: false, othersDue: false };
        const leased = lease.run(msToUs(now + leaseMs), ...carriedLeaseParams(row, msToUs(now))).changes > 0;
        if (leased && contactId !== undefined) this.linkOne(contactIdFromString(contactId), row.id);
        const othersDue = (due.get(row.destinationClientId, msToUs(now)) as { due: number }).due > 0;
        return { leased, othersDue };
      });
    });
  }

  claimClientMessages(clientId: Uint8Array, opts: ClaimOptions): Promise<Message[]> {
    return this.write("claimClientMessages", () => {
      checkClientId(clientId);
      const limit = Math.floor(opts.limit);
      if (limit <= 0) return [];
      const now = Date.now();
      const nowUs = msToUs(now);
      const cid = buf(clientId);
      const quotas = serviceQuotas(opts.serviceLimits);
      let picked: { message_id: Buffer; scheduled_time: DbInt }[];
      if (quotas === undefined) {
        picked = this.stmt(
          `SELECT message_id, scheduled_time FROM pending_messages
           WHERE destination_client_id = ? AND scheduled_time <= ? ORDER BY scheduled_time LIMIT ?`,
        ).all(cid, nowUs, limit) as typeof picked;
      } else {
        picked = [];
        const q = this.stmt(
          `SELECT message_id, scheduled_time FROM pending_messages
           WHERE destination_client_id = ? AND scheduled_time <= ? AND destination_service_name = ?
           ORDER BY scheduled_time LIMIT ?`,
        );
        for (const [svc, n] of quotas) {
          picked.push(...(q.all(cid, nowUs, svc, Math.min(n, limit)) as typeof picked));
        }
        picked.sort((a, b) => num(a.scheduled_time) - num(b.scheduled_time));
        picked = picked.slice(0, limit);
      }
      const leaseUs = msToUs(now + opts.leaseMs);
      const upd = this.stmt(
        "UPDATE pending_messages SET retry_count = retry_count + 1, scheduled_time = ? WHERE message_id = ?",
      );
      for (const p of picked) upd.run(leaseUs, p.message_id);
      if (opts.contactId !== undefined) {
        const contact = contactIdFromString(opts.contactId);
        for (const p of picked) this.linkOne(contact, p.message_id);
      }
      return this.readPending(picked.map((p) => p.message_id));
    });
  }

  /** Full messages (metadata and payload) of pending rows, in the given order. */
  private readPending(ids: Buffer[]): Message[] {
    if (ids.length === 0) return [];
    const rows = this.stmt(
      `SELECT ${messageColumns("m")}, p.data_type_url, p.data_value FROM pending_messages p
       JOIN messages m ON m.message_id = p.message_id WHERE p.message_id IN ${IN_IDS}`,
    ).all(idList(ids)) as MessageDbRow[];
    const byId = new Map(rows.map((r) => [hex(r.message_id), r]));
    const out: Message[] = [];
    for (const id of ids) {
      const r = byId.get(hex(id));
      if (r) out.push(messageFromRow(r, true, false));
    }
    return out;
  }

  clientsWithDueMessages(clientIds: Uint8Array[]): Promise<Uint8Array[]> {
    return this.run("clientsWithDueMessages", () => {
      for (const id of clientIds) checkClientId(id);
      if (clientIds.length === 0) return [];
      const rows = this.stmt(
        `SELECT c.value AS id FROM json_each(?) c WHERE EXISTS (SELECT 1 FROM pending_messages p
           WHERE p.destination_client_id = unhex(c.value) AND p.scheduled_time <= ?)`,
      ).all(idList(clientIds), msToUs(Date.now())) as { id: string }[];
      const seen = new Set<string>();
      const out: Uint8Array[] = [];
      for (const r of rows) {
        if (seen.has(r.id)) continue;
        seen.add(r.id);
        out.push(Buffer.from(r.id, "hex"));
      }
      return out;
    });
  }

  claimServerMessages(limit: number, retryAtMs: (retryCount: number) => number): Promise<Message[]> {
    return this.write("claimServerMessages", () => {
      const n = Math.floor(limit);
      if (n <= 0) return [];
      const picked = this.stmt(
        `SELECT message_id, retry_count FROM pending_messages
         WHERE destination_client_id = ? AND scheduled_time <= ? ORDER BY scheduled_time LIMIT ?`,
      ).all(EMPTY, msToUs(Date.now()), n) as { message_id: Buffer; retry_count: DbInt }[];
      const upd = this.stmt("UPDATE pending_messages SET retry_count = ?, scheduled_time = ? WHERE message_id = ?");
      for (const p of picked) {
        const retries = num(p.retry_count) + 1;
        upd.run(retries, msToUs(retryAtMs(retries)), p.message_id);
      }
      return this.readPending(picked.map((p) => p.message_id));
    });
  }

  deletePendingMessages(clientIds: Uint8Array[]): Promise<void> {
    return this.write("deletePendingMessages", () => {
      for (const id of clientIds) checkClientId(id);
      if (clientIds.length === 0) return;
      const t = msToTimestamp(Date.now());
      const ids = idList(clientIds);
      this.stmt(
        `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = 1, failed_reason = ?
         WHERE message_id IN (SELECT message_id FROM pending_messages WHERE destination_client_id IN ${IN_IDS})`,
      ).run(Number(t.seconds), t.nanos, REMOVED_BY_ADMIN, ids);
      this.stmt(`DELETE FROM pending_messages WHERE destination_client_id IN ${IN_IDS}`).run(ids);
    });
  }

  getPendingMessageCount(clientIds: Uint8Array[]): Promise<bigint> {
    return this.run("getPendingMessageCount", () => {
      for (const id of clientIds) checkClientId(id);
      if (clientIds.length === 0) return 0n;
      const row = this.stmt(`SELECT COUNT(*) AS n FROM pending_messages WHERE destination_client_id IN ${IN_IDS}`).get(
        idList(clientIds),
      ) as { n: DbInt };
      return BigInt(row.n);
    });
  }

  getPendingMessages(q: PendingQuery): Promise<Message[]> {
    return this.run("getPendingMessages", () => {
      for (const id of q.clientIds) checkClientId(id);
      if (q.offset !== 0 && q.limit === 0) {
        throw new InvalidArgumentError("if offset is provided, a limit must be provided as well");
      }
      if (q.offset < 0 || q.limit < 0) throw new InvalidArgumentError("offset and limit must not be negative");
      if (q.clientIds.length === 0) return [];
      const data = q.wantData ? "p.data_type_url, p.data_value" : "NULL AS data_type_url, NULL AS data_value";
      const rows = this.stmt(
        `SELECT ${messageColumns("m")}, ${data} FROM pending_messages p JOIN messages m ON m.message_id = p.message_id
         WHERE p.destination_client_id IN ${IN_IDS} ORDER BY p.message_id LIMIT ? OFFSET ?`,
      ).all(idList(q.clientIds), q.limit === 0 ? -1 : q.limit, q.offset) as MessageDbRow[];
      return rows.map((r) => messageFromRow(r, q.wantData, false));
    });
  }

  /** Deletes in transactions of batchSize rows, letting the event loop run between them. */
  async pruneMessages(beforeMs: number, batchSize: number): Promise<number> {
    const size = Math.floor(batchSize);
    if (size <= 0) throw new InvalidArgumentError(`batch size must be positive, got ${batchSize}`);
    const t = msToTimestamp(beforeMs);
    const sql = `DELETE FROM messages WHERE message_id IN (SELECT message_id FROM messages
       WHERE ${CREATED_BEFORE_SQL} AND processed_time_seconds IS NOT NULL LIMIT ?)`;
    let total = 0;
    for (;;) {
      const n = await this.write("pruneMessages", () => Number(this.stmt(sql).run(t.seconds, t.seconds, t.nanos, size).changes));
      total += n;
      if (n < size) return total;
    }
  }

  // ---- clients ----

  getClientData(id: Uint8Array): Promise<ClientData | undefined> {
    return this.run("getClientData", () => {
      checkClientId(id);
      const row = this.stmt("SELECT client_key, blacklisted FROM clients WHERE client_id = ?").get(buf(id)) as
        | { client_key: Buffer | null; blacklisted: DbInt }
        | undefined;
      if (!row) return undefined;
      const labels = (
        this.stmt("SELECT service_name, label FROM client_labels WHERE client_id = ?").all(buf(id)) as LabelDbRow[]
      ).map(labelFromRow);
      return { key: row.client_key ?? new Uint8Array(0), labels, blacklisted: num(row.blacklisted) !== 0 };
    });
  }

  addClient(id: Uint8Array, data: ClientData): Promise<void> {
    return this.write("addClient", () => {
      checkClientId(id);
      for (const l of data.labels) checkLabel(l);
      try {
        this.stmt(
          "INSERT INTO clients (client_id, client_key, blacklisted, last_contact_time) VALUES (?, ?, ?, ?)",
        ).run(buf(id), buf(data.key), data.blacklisted ? 1 : 0, msToNs(Date.now()));
      } catch (e) {
        if (this.isUniqueError(e)) throw new InvalidArgumentError(`client ${hex(id)} already exists`);
        throw e;
      }
      const ins = this.stmt("INSERT OR IGNORE INTO client_labels (client_id, service_name, label) VALUES (?, ?, ?)");
      for (const l of data.labels) ins.run(buf(id), l.serviceName, l.label);
    });
  }

  listClients(ids: Uint8Array[]): Promise<Client[]> {
    return this.run("listClients", () => {
      for (const id of ids) checkClientId(id);
      const cols =
        "client_id, blacklisted, last_contact_time, last_contact_address, last_contact_streaming_to, " +
        "last_clock_seconds, last_clock_nanos";
      let rows: ClientDbRow[];
      let labels: LabelDbRow[];
      if (ids.length === 0) {
        rows = this.stmt(`SELECT ${cols} FROM clients`).all() as ClientDbRow[];
        labels = this.stmt("SELECT client_id, service_name, label FROM client_labels").all() as LabelDbRow[];
      } else {
        const list = idList(ids);
        rows = this.stmt(`SELECT ${cols} FROM clients WHERE client_id IN ${IN_IDS}`).all(list) as ClientDbRow[];
        labels = this.stmt(
          `SELECT client_id, service_name, label FROM client_labels WHERE client_id IN ${IN_IDS}`,
        ).all(list) as LabelDbRow[];
      }
      const byClient = labelsByClient(labels);
      return rows.map((r) => clientFromRow(r, byClient.get(hex(r.client_id)) ?? []));
    });
  }

  async streamClientIds(
    includeBlacklisted: boolean,
    lastContactAfterMs: number,
    onId: (id: Uint8Array) => void | Promise<void>,
  ): Promise<void> {
    const q = `SELECT client_id FROM clients WHERE client_id > ? AND last_contact_time > ?
      ${includeBlacklisted ? "" : "AND blacklisted = 0"} ORDER BY client_id LIMIT ${STREAM_PAGE}`;
    let after: Buffer = EMPTY;
    const afterNs = msToNs(lastContactAfterMs);
    for (;;) {
      const page = await this.run(
        "streamClientIds",
        () => this.stmt(q).pluck().all(after, afterNs) as Buffer[],
      );
      for (const id of page) await onId(id);
      if (page.length < STREAM_PAGE) return;
      after = page[page.length - 1]!;
    }
  }

  addClientLabel(id: Uint8Array, label: Label): Promise<void> {
    return this.run("addClientLabel", () => {
      checkClientId(id);
      checkLabel(label);
      try {
        this.stmt("INSERT OR IGNORE INTO client_labels (client_id, service_name, label) VALUES (?, ?, ?)").run(
          buf(id),
          label.serviceName,
          label.label,
        );
      } catch (e) {
        if (this.isForeignKeyError(e)) throw new NotFoundError(`client ${hex(id)} not found`);
        throw e;
      }
    });
  }

  removeClientLabel(id: Uint8Array, label: Label): Promise<void> {
    return this.run("removeClientLabel", () => {
      checkClientId(id);
      this.stmt("DELETE FROM client_labels WHERE client_id = ? AND service_name = ? AND label = ?").run(
        buf(id),
        label.serviceName,
        label.label,
      );
    });
  }

  blacklistClient(id: Uint8Array): Promise<void> {
    return this.run("blacklistClient", () => {
      checkClientId(id);
      this.stmt("UPDATE clients SET blacklisted = 1 WHERE client_id = ?").run(buf(id));
    });
  }

  recordClientContact(c: ContactRecord): Promise<string> {
    return this.write("recordClientContact", () => {
      checkClientId(c.clientId);
      const now = msToNs(Date.now());
      const id = buf(c.clientId);
      const updated = this.stmt(
        `UPDATE clients SET last_contact_time = ?, last_contact_address = ?, last_contact_streaming_to = ?,
           last_clock_seconds = ?, last_clock_nanos = ? WHERE client_id = ?`,
      ).run(
        now,
        c.address,
        c.streamingTo ?? null,
        c.clientClock ? c.clientClock.seconds : null,
        c.clientClock ? c.clientClock.nanos : null,
        id,
      ).changes;
      if (updated === 0) throw new NotFoundError(`client ${hex(c.clientId)} not found`);
      const info = this.stmt(
        "INSERT INTO client_contacts (client_id, time, sent_nonce, received_nonce, address) VALUES (?, ?, ?, ?, ?)",
      ).run(id, now, nonceToBytes(c.sentNonce), nonceToBytes(c.receivedNonce), c.address);
      return contactIdToString(info.lastInsertRowid);
    });
  }

  listClientContacts(id: Uint8Array): Promise<ClientContact[]> {
    return this.run("listClientContacts", () => {
      checkClientId(id);
      const rows = this.stmt(
        `SELECT time, sent_nonce, received_nonce, address FROM client_contacts WHERE client_id = ?
         ORDER BY client_contact_id`,
      ).all(buf(id)) as ContactDbRow[];
      return rows.map(contactFromRow);
    });
  }

  linkMessagesToContact(contactId: string, messageIds: Uint8Array[]): Promise<void> {
    return this.write("linkMessagesToContact", () => {
      const contact = contactIdFromString(contactId);
      for (const id of messageIds) checkId(id, 32, "message ID");
      for (const id of messageIds) this.linkOne(contact, buf(id));
    });
  }

  recordResourceUsageData(id: Uint8Array, data: ResourceUsageData): Promise<void> {
    return this.run("recordResourceUsageData", () => {
      checkClientId(id);
      const values = resourceUsageValues(id, data, Date.now());
      try {
        this.stmt(
          `INSERT INTO client_resource_usage_records (${RESOURCE_USAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
        ).run(...values);
      } catch (e) {
        if (this.isForeignKeyError(e)) throw new NotFoundError(`client ${hex(id)} not found`);
        throw e;
      }
    });
  }

  fetchResourceUsageRecords(id: Uint8Array, startMs: number, endMs: number): Promise<ClientResourceUsageRecord[]> {
    return this.run("fetchResourceUsageRecords", () => {
      checkClientId(id);
      const rows = this.stmt(
        `SELECT ${RESOURCE_USAGE_COLUMNS} FROM client_resource_usage_records
         WHERE client_id = ? AND server_timestamp >= ? AND server_timestamp < ? ORDER BY server_timestamp`,
      ).all(buf(id), msToNs(startMs), msToNs(endMs)) as ResourceUsageDbRow[];
      return rows.map(resourceUsageFromRow);
    });
  }

  // ---- broadcasts ----

  createBroadcast(b: Broadcast, limit: bigint): Promise<void> {
    return this.write("createBroadcast", () => {
      const values = broadcastValues(b, limit);
      try {
        this.stmt(`INSERT INTO broadcasts (${BROADCAST_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)`).run(...values);
      } catch (e) {
        if (this.isUniqueError(e)) throw new InvalidArgumentError(`broadcast ${hex(b.broadcastId)} already exists`);
        throw e;
      }
      const ins = this.stmt(
        "INSERT OR IGNORE INTO broadcast_labels (broadcast_id, service_name, label) VALUES (?, ?, ?)",
      );
      for (const l of b.requiredLabels) ins.run(values[0], l.serviceName, l.label);
    });
  }

  disableBroadcasts(ids: Uint8Array[]): Promise<void> {
    return this.write("disableBroadcasts", () => {
      for (const id of ids) checkId(id, 8, "broadcast ID");
      const upd = this.stmt("UPDATE broadcasts SET message_limit = 0 WHERE broadcast_id = ?");
      for (const id of ids) upd.run(buf(id));
    });
  }

  listActiveBroadcasts(): Promise<ActiveBroadcast[]> {
    return this.run("listActiveBroadcasts", () => {
      const rows = this.stmt(
        `SELECT ${BROADCAST_COLUMNS}, sent FROM broadcasts WHERE sent < message_limit AND ${NOT_EXPIRED_SQL}`,
      ).all(...notExpiredParams(Date.now())) as BroadcastDbRow[];
      if (rows.length === 0) return [];
      const labels = this.stmt(
        `SELECT broadcast_id AS client_id, service_name, label FROM broadcast_labels WHERE broadcast_id IN ${IN_IDS}`,
      ).all(idList(rows.map((r) => r.broadcast_id))) as LabelDbRow[];
      const byId = labelsByClient(labels);
      return rows.map((r) => ({
        broadcast: broadcastFromRow(r, byId.get(hex(r.broadcast_id)) ?? []),
        sent: BigInt(r.sent),
        limit: BigInt(r.message_limit),
      }));
    });
  }

  listSentBroadcasts(clientId: Uint8Array): Promise<Uint8Array[]> {
    return this.run("listSentBroadcasts", () => {
      checkClientId(clientId);
      return this.stmt("SELECT broadcast_id FROM broadcast_sent WHERE client_id = ?").pluck().all(buf(clientId)) as Buffer[];
    });
  }

  saveBroadcastMessage(msg: Message, broadcastId: Uint8Array, clientId: Uint8Array): Promise<boolean> {
    const now = Date.now();
    let row: MessageRow;
    try {
      checkId(broadcastId, 8, "broadcast ID");
      checkClientId(clientId);
      row = toMessageRow(msg, now);
      if (!row.destinationClientId.equals(buf(clientId))) {
        throw new InvalidArgumentError(
          `broadcast message ${hex(row.id)} is addressed to ${hex(row.destinationClientId)}, not to client ${hex(clientId)}`,
        );
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return this.run("saveBroadcastMessage", () => {
      try {
        return this.db
          .transaction(() => {
            let sentRow: number;
            try {
              sentRow = this.stmt("INSERT OR IGNORE INTO broadcast_sent (broadcast_id, client_id) VALUES (?, ?)").run(
                buf(broadcastId),
                buf(clientId),
              ).changes;
            } catch (e) {
              if (this.isForeignKeyError(e)) throw new Rollback();
              throw e;
            }
            if (sentRow === 0) throw new Rollback();
            const counted = this.stmt(
              `UPDATE broadcasts SET sent = sent + 1 WHERE broadcast_id = ? AND sent < message_limit AND ${NOT_EXPIRED_SQL}`,
            ).run(buf(broadcastId), ...notExpiredParams(now)).changes;
            if (counted === 0) throw new Rollback();
            this.stmt(`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`).run(
              ...row.values,
            );
            if (row.result === undefined) this.insertPending(row, msToUs(now));
            return true;
          })
          .immediate();
      } catch (e) {
        if (e instanceof Rollback) return false;
        throw e;
      }
    });
  }

  // ---- files ----

  storeFile(service: string, name: string, data: Uint8Array): Promise<void> {
    return this.run("storeFile", () => {
      checkName(service, "file service name");
      checkName(name, "file name");
      checkPayloadSize(data.length, `file ${service}/${name}`);
      this.stmt("INSERT OR REPLACE INTO files (service, name, modified_time_nanos, data) VALUES (?, ?, ?, ?)").run(
        service,
        name,
        msToNs(Date.now()),
        buf(data),
      );
    });
  }

  deleteFile(service: string, name: string): Promise<void> {
    return this.run("deleteFile", () => {
      this.stmt("DELETE FROM files WHERE service = ? AND name = ?").run(service, name);
    });
  }

  statFile(service: string, name: string): Promise<number | undefined> {
    return this.run("statFile", () => {
      const t = this.stmt("SELECT modified_time_nanos FROM files WHERE service = ? AND name = ?")
        .pluck()
        .get(service, name) as DbInt | undefined;
      return t === undefined ? undefined : nsToMs(t);
    });
  }

  readFile(service: string, name: string): Promise<StoredFile | undefined> {
    return this.run("readFile", () => {
      const row = this.stmt("SELECT modified_time_nanos, data FROM files WHERE service = ? AND name = ?").get(
        service,
        name,
      ) as { modified_time_nanos: DbInt; data: Buffer | null } | undefined;
      if (!row) return undefined;
      return { data: row.data ?? new Uint8Array(0), modifiedMs: nsToMs(row.modified_time_nanos) };
    });
  }

  // ---- console (SQL shared with MySQL: console-queries.ts) ----

  private all<T>(op: string, q: () => Query): Promise<T[]> {
    return this.run(op, () => {
      const { sql, params } = q();
      return this.stmt(sql).all(...params) as T[];
    });
  }

  /**
   * Runs a query over a whole table page by page (keyset pages of CONSOLE_PAGE rows after the
   * last key of the page before), yielding to the event loop in between: better-sqlite3 holds
   * the process while a statement runs, and one pass over a large fleet at once would stall
   * every client of this server for a second or more. Counts made this way may be off by the
   * few rows that change during the pass.
   */
  private async inPages(op: string, page: (after: Buffer) => { rows: number; last?: Buffer }): Promise<void> {
    let after: Buffer = EMPTY;
    for (;;) {
      const { rows, last } = await this.run(op, () => page(after));
      if (rows < CONSOLE_PAGE || last === undefined) return;
      after = last;
      await new Promise((r) => setImmediate(r));
    }
  }

  async countClients(seenAfterMs: number[]): Promise<ClientCounts> {
    const counts: ClientCounts = { total: 0, seenAfter: seenAfterMs.map(() => 0) };
    const source = `(SELECT client_id, last_contact_time FROM clients WHERE client_id > ? ORDER BY client_id LIMIT ${CONSOLE_PAGE})`;
    const q = countClientsQuery(seenAfterMs, source);
    await this.inPages("countClients", (after) => {
      const row = this.stmt(q.sql).get(...q.params, after) as Record<string, DbInt | Buffer | null>;
      const page = clientCountsFromRow(row, seenAfterMs.length);
      counts.total += page.total;
      page.seenAfter.forEach((n, i) => {
        counts.seenAfter[i]! += n;
      });
      return { rows: page.total, ...(row.last ? { last: row.last as Buffer } : {}) };
    });
    return counts;
  }

  async countClientsByLabel(max: number): Promise<LabelCount[]> {
    const tally = new Map<string, LabelCount>();
    await this.inPages("countClientsByLabel", (after) => {
      // A page is the labels of the next CONSOLE_PAGE clients (a client's labels never straddle two pages).
      const end = this.stmt(`SELECT client_id FROM clients WHERE client_id > ? ORDER BY client_id LIMIT 1 OFFSET ${CONSOLE_PAGE - 1}`)
        .pluck()
        .get(after) as Buffer | undefined;
      const rows = (
        end === undefined
          ? this.stmt("SELECT service_name, label, COUNT(*) AS n FROM client_labels WHERE client_id > ? GROUP BY service_name, label").all(after)
          : this.stmt(
              "SELECT service_name, label, COUNT(*) AS n FROM client_labels WHERE client_id > ? AND client_id <= ? GROUP BY service_name, label",
            ).all(after, end)
      ) as Array<LabelDbRow & { n: DbInt }>;
      for (const r of rows) {
        const key = `${r.service_name}\u0000${r.label}`;
        const c = tally.get(key);
        if (c) c.clients += num(r.n);
        else tally.set(key, labelCountFromRow(r));
      }
      return end === undefined ? { rows: 0 } : { rows: CONSOLE_PAGE, last: end };
    });
    return topLabels([...tally.values()], max);
  }

  countStreamHolders(seenAfterMs: number): Promise<StreamHolderCount[]> {
    return this.#reads.countStreamHolders(seenAfterMs);
  }

  searchClients(search: ClientSearch): Promise<Client[]> {
    return this.#reads.searchClients(search);
  }

  listRecentClientContacts(id: Uint8Array, max: number): Promise<ClientContact[]> {
    return this.#reads.listRecentClientContacts(id, max);
  }

  countPendingByService(clientId: Uint8Array): Promise<PendingByService[]> {
    return this.#reads.countPendingByService(clientId);
  }

  listRecentFailedMessages(clientId: Uint8Array, contacts: number, max: number): Promise<Message[]> {
    return this.#reads.listRecentFailedMessages(clientId, contacts, max);
  }

  async listServiceQueues(maxRows: number): Promise<ServiceQueue[]> {
    type Row = Parameters<typeof serviceQueuesFromRows>[0][number] & { last: Buffer };
    const all: Row[] = [];
    const now = Date.now();
    const limit = checkQueueRows(maxRows);
    let counted = 0;
    await this.inPages("listServiceQueues", (after) => {
      const q = serviceQueuesQuery(now, {
        sql: `(SELECT ${QUEUE_COLUMNS} FROM pending_messages WHERE message_id > ? ORDER BY message_id LIMIT ${Math.min(CONSOLE_PAGE, limit - counted)})`,
        params: [after],
      });
      const rows = this.stmt(q.sql).all(...q.params) as Row[];
      all.push(...rows);
      const n = rows.reduce((sum, r) => sum + num(r.n), 0);
      counted += n;
      const last = rows.reduce<Buffer | undefined>((m, r) => (m === undefined || Buffer.compare(r.last, m) > 0 ? r.last : m), undefined);
      return { rows: counted < limit ? n : 0, ...(last ? { last } : {}) };
    });
    return serviceQueuesFromRows(all);
  }

  recordServerHeartbeat(heartbeat: ServerHeartbeat): Promise<void> {
    return this.run("recordServerHeartbeat", () => {
      this.stmt(UPSERT_HEARTBEAT_SQL).run(...heartbeatValues(heartbeat));
    });
  }

  listServerHeartbeats(afterMs: number): Promise<ServerHeartbeat[]> {
    return this.#reads.listServerHeartbeats(afterMs);
  }

  pruneServerHeartbeats(beforeMs: number): Promise<number> {
    return this.run("pruneServerHeartbeats", () => {
      const { sql, params } = pruneHeartbeatsQuery(beforeMs);
      return this.stmt(sql).run(...params).changes;
    });
  }

  // ---- lifecycle ----

  ping(): Promise<void> {
    return this.run("ping", () => {
      this.stmt("SELECT 1").get();
    });
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      const t = this.drainTimer;
      if (t && "immediate" in t) clearImmediate(t.immediate);
      else if (t) clearTimeout(t.timeout);
      this.drainTimer = undefined;
      this.drain(); // rejects what still waits
      this.statements.clear();
      this.db.close();
      await this.checkpointer?.stop();
    }
  }
}
