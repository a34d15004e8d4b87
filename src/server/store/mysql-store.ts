// The shared datastore for distributed setups: MySQL or MariaDB through a mysql2 connection pool.
// Every frontend and admin server of a deployment runs one of these against the same database,
// so each operation is one statement or one short transaction whose effect is right whatever the
// other servers do at the same moment: claims lock the rows they take (a client's rows with
// SELECT … FOR UPDATE, the shared server backlog with FOR UPDATE SKIP LOCKED so that servers
// share it out) and reschedule them before committing; broadcast limits are a conditional
// increment. Conflicts (deadlocks, lock-wait timeouts, Galera certification failures) are retried
// a bounded number of times, a COMMIT whose answer was lost is read back, never guessed;
// a lost or refused connection becomes StoreUnavailableError naming the database server.
import { randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import mysql, {
  type ExecuteValues,
  type Pool,
  type PoolConnection,
  type PoolOptions,
  type ResultSetHeader,
  type RowDataPacket,
} from "mysql2/promise";
import type { Connection as CoreConnection } from "mysql2";
import type { Logger } from "../../common/log.js";
import { createLogger } from "../../common/log.js";
import { type MysqlConnectionOptions, parseMysqlDsn } from "../../common/mysql-dsn.js";
import type { Label, Message, MessageResult } from "../../gen/fleetspeak/common_pb.js";
import type { ResourceUsageData } from "../../gen/fleetspeak_monitoring/resource_pb.js";
import type { Client, ClientContact } from "../../gen/fleetspeak_server/admin_pb.js";
import type { Broadcast } from "../../gen/fleetspeak_server/broadcasts_pb.js";
import type { ClientResourceUsageRecord } from "../../gen/fleetspeak_server/resource_pb.js";
import {
  checkQueueRows,
  clientCountsFromRow,
  ConsoleReads,
  countClientsQuery,
  heartbeatValues,
  labelCountFromRow,
  labelCountsQuery,
  pruneHeartbeatsQuery,
  type Query,
  QUEUE_COLUMNS,
  serviceQueuesFromRows,
  serviceQueuesQuery,
  UPSERT_HEARTBEAT_SQL,
} from "./console-queries.js";
import { InvalidArgumentError, NotFoundError, SchemaVersionError, StoreUnavailableError } from "./errors.js";
import { migrateMysql, readSchema, revertMysqlToFleetspeak } from "./mysql-migrate.js";
import { mysqlConnectionOptions, mysqlWhere } from "./mysql-connection.js";
import { FILL_PENDING_DESTINATIONS, PENDING_DESTINATION_TRIGGER, PENDING_WITHOUT_DESTINATION } from "./mysql-schema.js";
import {
  BROADCAST_COLUMNS,
  BROADCAST_HAS_ROOM_SQL,
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
import { BROADCAST_UNLIMITED } from "./store.js";

export interface MysqlStoreOptions {
  connection: MysqlConnectionOptions;
  /** Most connections this process opens. Default 20. */
  poolSize?: number;
  /** How many times a transaction that met a conflict (deadlock, lock-wait timeout, Galera certification) is run again. Default 10. */
  maxRetries?: number;
  /**
   * How long to keep reading back what a claim or lease did when the connection failed after its
   * COMMIT went out (the database may be restarting). Default 60 s.
   */
  unknownOutcomeMs?: number;
  /** Leave the schema as it is (for `migrate --to-fleetspeak`, which must not adopt first). Default false. */
  skipMigration?: boolean;
  logger?: Logger;
}

const DEFAULT_POOL_SIZE = 20;
const STREAM_PAGE = 1000;
const EMPTY = Buffer.alloc(0);

// Transient conflicts between transactions: the transaction was rolled back and is run again
// whole. On Galera, a transaction that loses certification to another node's (both wrote the same
// rows) fails with ER_LOCK_DEADLOCK, at COMMIT or at any statement when the applier aborts it, and
// a failed replication of the commit as ER_ERROR_DURING_COMMIT.
const CONFLICTS = new Map([
  [1213, "deadlock"], // ER_LOCK_DEADLOCK, also Galera certification failures
  [1205, "lock_wait_timeout"], // ER_LOCK_WAIT_TIMEOUT
  [1637, "too_many_transactions"], // ER_TOO_MANY_CONCURRENT_TRXS
  [1180, "commit_failed"], // ER_ERROR_DURING_COMMIT
]);
const ER_DUP_ENTRY = 1062;
const ER_NO_REFERENCED_ROW_2 = 1452;
/** A Galera node outside the primary component (cut off from the cluster) refuses every statement. */
const ER_WSREP_NOT_READY = 1047;
const ER_WARN_DATA_OUT_OF_RANGE = 1264;

/**
 * A link to a contact that cannot exist: no such row, or an ID beyond the column (Fleetspeak's
 * schema keeps client_contact_id in a signed INT).
 */
function isUnknownContact(e: unknown): boolean {
  return errno(e) === ER_NO_REFERENCED_ROW_2 || errno(e) === ER_WARN_DATA_OUT_OF_RANGE;
}

// Errors that say the database server cannot be used right now (as opposed to a bad statement).
const UNAVAILABLE_ERRNOS = new Set([
  1040, // ER_CON_COUNT_ERROR
  1044, // ER_DBACCESS_DENIED_ERROR
  1045, // ER_ACCESS_DENIED_ERROR
  ER_WSREP_NOT_READY,
  1049, // ER_BAD_DB_ERROR
  1053, // ER_SERVER_SHUTDOWN
  1203, // ER_TOO_MANY_USER_CONNECTIONS
  1317, // ER_QUERY_INTERRUPTED
  1927, // ER_CONNECTION_KILLED
  2002, // CR_CONNECTION_ERROR
  2003, // CR_CONN_HOST_ERROR
  2006, // CR_SERVER_GONE_ERROR
  2013, // CR_SERVER_LOST
]);
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "ER_CONNECTION_KILLED",
  "ER_SERVER_SHUTDOWN",
]);

type DbError = Error & { errno?: number; code?: string; fatal?: boolean; sqlMessage?: string; sqlState?: string };

/**
 * A trigger the server could not load when it opened the table: while another server's schema
 * migration replaces it (on Galera, a node still applying the replicated CREATE TRIGGER), MariaDB
 * reads a trigger definition that is not all there and answers ER_PARSE_ERROR "Unknown trigger has
 * an error in its body: 'Query was empty'" (MySQL: ER_ERROR_IN_TRIGGER_BODY or
 * ER_ERROR_IN_UNKNOWN_TRIGGER_BODY). Nothing ran; a moment later the trigger is whole again.
 */
const ER_PARSE_ERROR = 1064;
const TRIGGER_BODY_ERRNOS = new Set([1603, 1710]);
function isTriggerUnreadable(e: DbError): boolean {
  if (TRIGGER_BODY_ERRNOS.has(e.errno!)) return true;
  return e.errno === ER_PARSE_ERROR && /trigger.* has an error in its body/i.test(e.sqlMessage ?? e.message);
}

/** Why a transaction is run again, for the retries metric; undefined when the error is no conflict. */
function conflictOf(e: unknown): string | undefined {
  const err = e as DbError;
  if (err.errno === undefined) return undefined;
  return CONFLICTS.get(err.errno) ?? (isTriggerUnreadable(err) ? "trigger_unreadable" : undefined);
}

function isRetryable(e: unknown): boolean {
  return conflictOf(e) !== undefined;
}

function isConnectionError(e: unknown): boolean {
  const err = e as DbError;
  if (err.fatal) return true;
  if (err.code !== undefined && UNAVAILABLE_CODES.has(err.code)) return true;
  if (err.errno !== undefined && UNAVAILABLE_ERRNOS.has(err.errno)) return true;
  return /Pool is closed|connection is in closed state/.test(err.message ?? "");
}

/**
 * Whether statements sent before this error may have run: the connection failed (no answer from
 * the server, which answers every failed statement with an error and its SQLSTATE) after they
 * went out. A COMMIT among them may have happened or not; only reading the rows again can tell.
 */
function outcomeUnknown(e: unknown): boolean {
  const err = e as DbError;
  return isConnectionError(e) && err.sqlState === undefined && !/connection is in closed state|Pool is closed/.test(err.message ?? "");
}

/** The pause before running a conflicting transaction again: doubling from 10 ms up to 1 s, jittered so that two servers that met do not meet again. */
function backoffMs(attempt: number): number {
  return Math.min(1000, 10 * 2 ** attempt) * (0.5 + Math.random());
}

/**
 * The due time (µs) a claim or lease gives its rows: the lease's end plus random microseconds, so
 * that the attempt can recognize its own rows when the answer to its COMMIT is lost.
 */
function leaseStamp(untilMs: number): number {
  return msToUs(untilMs) + randomInt(1, 1000);
}

/** Thrown by txBatch when its COMMIT went out and the connection failed before the answer. */
class CommitOutcomeUnknown extends Error {}

function errno(e: unknown): number | undefined {
  return (e as DbError).errno;
}

/** A due row of a client claim: the message, its payload and when it fell due. */
type ClaimRow = MessageDbRow & { scheduled_time: DbInt; data_type_url: string | null; data_value: Buffer | null };

/** The first rows (in due order) that fit each service's quota and the overall limit. */
function withinQuotas(rows: ClaimRow[], quotas: [string, number][], limit: number): ClaimRow[] {
  const left = new Map(quotas);
  const out: ClaimRow[] = [];
  for (const r of rows) {
    const n = left.get(r.destination_service_name) ?? 0;
    if (n <= 0) continue;
    left.set(r.destination_service_name, n - 1);
    out.push(r);
    if (out.length === limit) break;
  }
  return out;
}

/** New pending entries (payload and schedule) for freshly inserted messages. */
function pendingInsert(rows: MessageRow[], due: (r: MessageRow) => number): Statement {
  return [
    `INSERT INTO pending_messages (message_id, for_server, destination_client_id, destination_service_name,
       retry_count, scheduled_time, data_type_url, data_value) VALUES ?`,
    [
      rows.map((r) => [
        r.id,
        r.forServer ? 1 : 0,
        r.destinationClientId,
        r.destinationService,
        0,
        due(r),
        r.dataTypeUrl,
        r.dataValue,
      ]),
    ],
  ];
}

/**
 * Links messages to a contact; an existing link is kept. Not INSERT IGNORE: MySQL would turn a
 * missing contact or message into a warning.
 */
function linkInsert(contact: bigint, ids: Buffer[]): Statement {
  return [
    "INSERT INTO client_contact_messages (client_contact_id, message_id) VALUES ? ON DUPLICATE KEY UPDATE message_id = message_id",
    [ids.map((id) => [contact, id])],
  ];
}

function unknownContact(contact: bigint): NotFoundError {
  return new NotFoundError(`cannot link messages to contact ${contact.toString(16)}: no such contact or message`);
}

/** How long after its expiry a Fleetspeak (Go) allocation is taken as abandoned. */
const ALLOCATION_EXPIRY_MARGIN_MS = 60_000;

/**
 * Removes the broadcast allocations matching `where` (on broadcast_allocations) and moves their
 * counts into the broadcasts rows: sent += allocation sent, allocated -= allocation limit (never
 * below 0), as Fleetspeak's CleanupAllocation does.
 */
async function foldAllocations(c: PoolConnection, where: string, params: unknown[]): Promise<void> {
  const [rows] = await c.query<({ broadcast_id: Buffer; allocation_id: Buffer; sent: DbInt | null; message_limit: DbInt | null } & RowDataPacket)[]>(
    `SELECT broadcast_id, allocation_id, sent, message_limit FROM broadcast_allocations WHERE ${where} FOR UPDATE`,
    params,
  );
  for (const r of rows) {
    const sent = BigInt(r.sent ?? 0);
    const reserved = r.message_limit === null || BigInt(r.message_limit) === BROADCAST_UNLIMITED ? 0n : BigInt(r.message_limit);
    await c.query(
      `UPDATE broadcasts SET sent = sent + ?, allocated = IF(allocated > ?, allocated - ?, 0) WHERE broadcast_id = ?`,
      [sent, reserved, reserved, r.broadcast_id],
    );
    await c.query("DELETE FROM broadcast_allocations WHERE broadcast_id = ? AND allocation_id = ?", [
      r.broadcast_id,
      r.allocation_id,
    ]);
  }
}

/** Thrown inside a transaction to roll it back and return a value. */
class Rollback<T> {
  constructor(readonly value: T) {}
}

/** One statement of a batch: SQL with `?` placeholders and their values (escaped client-side). */
type Statement = readonly [sql: string, values?: unknown[]];

function formatBatch(statements: readonly Statement[]): string {
  return statements
    .map(([sql, values]) => (values ? mysql.format(sql, values as Parameters<typeof mysql.format>[1]) : sql))
    .join(";\n");
}

/**
 * Sends SQL on the connection's callback API. The hot paths use this instead of mysql2/promise,
 * which builds an Error (for its stack) on every call: ~5 % of a frontend's CPU in the push
 * benchmark. A multi-statement query resolves with one result per statement.
 */
function send<T = unknown>(conn: PoolConnection, sql: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    // PoolConnection.connection is the callback-style core connection (mysql2's typings say otherwise).
    (conn.connection as unknown as CoreConnection).query(sql, (err, result) => (err ? reject(err) : resolve(result as T)));
  });
}

/** Ends a transaction without waiting for the answer; the connection goes back to the pool after. */
function endInBackground(conn: PoolConnection, sql: "COMMIT" | "ROLLBACK"): void {
  send(conn, sql).then(
    () => conn.release(),
    () => conn.destroy(),
  );
}


type Params = ExecuteValues[];

export class MysqlStore implements Store {
  readonly backend = "mysql";
  private readonly where: string;
  private readonly maxRetries: number;
  private readonly unknownOutcomeMs: number;
  private closed = false;
  private onRetry: (operation: string, reason: string) => void = () => {};
  readonly #reads = new ConsoleReads(
    (op, q) => this.readQuery(op, q),
    (ids) => this.listClients(ids),
  );
  /** How the database was found at open: made now, adopted from Fleetspeak (Go), upgraded, or current. */
  origin: "created" | "adopted" | "upgraded" | "current" = "current";
  private fillsDestinations = false;
  private lastFillMs = 0;

  private constructor(
    private readonly pool: Pool,
    private readonly opts: MysqlConnectionOptions,
    options: MysqlStoreOptions,
    private readonly log: Logger,
  ) {
    this.where = mysqlWhere(opts);
    this.maxRetries = options.maxRetries ?? 10;
    this.unknownOutcomeMs = options.unknownOutcomeMs ?? 60_000;
  }

  observeRetries(observer: (operation: string, reason: string) => void): void {
    this.onRetry = observer;
  }

  /** Connects, brings the schema up to date (under a database-wide lock) and returns the store. */
  static async open(options: MysqlStoreOptions): Promise<MysqlStore> {
    const c = options.connection;
    if (c.database === "") {
      throw new InvalidArgumentError(
        'mysql_data_source_name names no database; write it like "user:password@tcp(host:3306)/fleetspeak"',
      );
    }
    const poolOptions: PoolOptions = {
      ...mysqlConnectionOptions(c),
      connectionLimit: options.poolSize ?? DEFAULT_POOL_SIZE,
      maxIdle: options.poolSize ?? DEFAULT_POOL_SIZE,
      idleTimeout: 60_000,
      waitForConnections: true,
      queueLimit: 0,
      supportBigNumbers: true,
      bigNumberStrings: true,
      dateStrings: true,
      enableKeepAlive: true,
      keepAliveInitialDelay: 30_000,
      // Hot transactions go out as one "START TRANSACTION; …; COMMIT" query (txBatch): one round
      // trip instead of one per statement. Every value in them is escaped by mysql2 (format),
      // never spliced in as text, so this opens no injection path.
      multipleStatements: true,
    };
    const pool = mysql.createPool(poolOptions);
    const log = options.logger ?? createLogger("store.mysql");
    // Claims are locking reads of (destination, due time) index ranges. READ COMMITTED keeps them
    // from also locking the next client's first entry (REPEATABLE READ's next-key locks), and
    // FORCE INDEX keeps the optimizer from scanning, and so locking, the whole small table.
    const sessionVars = Object.entries(c.sessionVariables);
    const setup = [
      "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
      ...(sessionVars.length > 0
        ? [`SET ${sessionVars.map(([k, v]) => `SESSION ${k} = ${mysql.escape(v)}`).join(", ")}`]
        : []),
    ];
    pool.pool.on("connection", (conn) => {
      for (const sql of setup) {
        conn.query(sql, (err: Error | null) => {
          if (err) log.error({ err: err.message, sql }, "setting up a database session failed");
        });
      }
    });
    const store = new MysqlStore(pool, c, options, log);
    try {
      if (options.skipMigration) await store.ping();
      else await store.migrate();
    } catch (e) {
      await pool.end().catch(() => {});
      throw e instanceof SchemaVersionError ? e : store.mapError("schema migration", e);
    }
    return store;
  }

  /** Parses a Go-style DSN (mysql_data_source_name) and opens the store. */
  static fromDsn(dsn: string, extra: Omit<MysqlStoreOptions, "connection"> = {}): Promise<MysqlStore> {
    return MysqlStore.open({ ...extra, connection: parseMysqlDsn(dsn) });
  }

  private async migrate(): Promise<void> {
    const conn = await this.pool.getConnection();
    try {
      this.origin = await migrateMysql({ conn, log: this.log, where: `database ${this.opts.database} at ${this.where}` });
      this.fillsDestinations = !(await readSchema(conn)).triggers.has(PENDING_DESTINATION_TRIGGER);
    } finally {
      conn.release();
    }
    if (this.fillsDestinations) await this.fillPendingDestinations();
  }

  /**
   * Where the database has no pending_messages_destination trigger (the database user may not
   * create one), pending rows that Fleetspeak (Go) servers insert lack the destination columns
   * that this server's claims look up: fill them in at start and at most once a second from the
   * sweeps. Finding none is one index lookup.
   */
  private async fillPendingDestinations(): Promise<void> {
    const now = Date.now();
    if (!this.fillsDestinations || now - this.lastFillMs < 1000) return;
    this.lastFillMs = now;
    await this.onConnection(async (c) => {
      for (;;) {
        const [rows] = await c.query<({ message_id: Buffer } & RowDataPacket)[]>(PENDING_WITHOUT_DESTINATION, [1000]);
        if (rows.length === 0) return;
        await c.query(FILL_PENDING_DESTINATIONS, [rows.map((r) => r.message_id)]);
        if (rows.length < 1000) return;
      }
    }).catch((e: unknown) => {
      throw this.mapError("filling in pending message destinations", e);
    });
  }

  /**
   * Removes this server's additions to Fleetspeak's schema (`fleetspeak-server migrate
   * --to-fleetspeak`); returns what was removed. The store must not be used afterwards.
   */
  async revertToFleetspeak(): Promise<string[]> {
    const conn = await this.pool.getConnection();
    try {
      return await revertMysqlToFleetspeak({ conn, log: this.log, where: `database ${this.opts.database} at ${this.where}` });
    } catch (e) {
      throw this.mapError("migrate --to-fleetspeak", e);
    } finally {
      conn.release();
    }
  }

  // ---- plumbing ----

  private mapError(op: string, e: unknown): Error {
    if (
      e instanceof StoreUnavailableError ||
      e instanceof InvalidArgumentError ||
      e instanceof NotFoundError ||
      e instanceof SchemaVersionError
    ) {
      return e;
    }
    const err = e as DbError;
    const db = this.opts.database;
    if (this.closed) return new StoreUnavailableError(`MySQL store for database ${db} is closed (${op})`, { cause: e });
    const what = `${err.code ?? err.errno ?? "error"}: ${err.sqlMessage ?? err.message}`;
    if (isRetryable(e)) {
      return new StoreUnavailableError(
        `database ${db} at ${this.where} stayed busy during ${op} (${what}) after ${this.maxRetries} retries; retry later`,
        { cause: e },
      );
    }
    if (errno(e) === 1045 || errno(e) === 1044) {
      return new StoreUnavailableError(
        `database server ${this.where} refused user ${JSON.stringify(this.opts.user)} for database ${db} during ${op} (${what}); check the user and password in mysql_data_source_name and the user's grants`,
        { cause: e },
      );
    }
    if (errno(e) === 1049) {
      return new StoreUnavailableError(
        `database ${db} does not exist on ${this.where} (${op}); create it (CREATE DATABASE ${db}) or fix mysql_data_source_name`,
        { cause: e },
      );
    }
    if (isConnectionError(e)) {
      return new StoreUnavailableError(
        `cannot use database ${db} at ${this.where} during ${op} (${what}); check that the MySQL/MariaDB server is running and reachable from this host, and that mysql_data_source_name names the right host and port`,
        { cause: e },
      );
    }
    return new Error(`MySQL store (database ${db} at ${this.where}): ${op}: ${err.sqlMessage ?? err.message}`, {
      cause: e,
    });
  }

  /** A read, or an idempotent statement: run once more if it met a dead pooled connection. */
  private async onConnection<T>(fn: (c: PoolConnection) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.pool.getConnection();
      let broken = false;
      try {
        return await fn(conn);
      } catch (e) {
        broken = isConnectionError(e);
        if (broken && attempt === 0) continue;
        throw e;
      } finally {
        if (broken) conn.destroy();
        else conn.release();
      }
    }
  }

  private async read<T extends RowDataPacket[]>(op: string, sql: string, params: Params = []): Promise<T> {
    try {
      return await this.onConnection(async (c) => (await c.execute<T>(sql, params))[0]);
    } catch (e) {
      throw this.mapError(op, e);
    }
  }

  /** Like read, for statements whose argument lists vary in length (expanded client-side). */
  private async readExpanded<T extends RowDataPacket[]>(op: string, sql: string, params: Params): Promise<T> {
    try {
      return await this.onConnection(async (c) => (await c.query<T>(sql, params))[0]);
    } catch (e) {
      throw this.mapError(op, e);
    }
  }

  private async write(op: string, sql: string, params: Params = []): Promise<ResultSetHeader> {
    return this.tx(op, async (c) => (await c.execute<ResultSetHeader>(sql, params))[0]);
  }

  /** A pooled connection with a transaction open; a dead pooled connection is replaced once. */
  private async begin(): Promise<PoolConnection> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.pool.getConnection();
      try {
        await conn.query("START TRANSACTION");
        return conn;
      } catch (e) {
        conn.destroy();
        if (attempt === 0 && isConnectionError(e)) continue;
        throw e;
      }
    }
  }

  /**
   * Runs fn in a transaction. Conflicts (deadlocks, lock-wait timeouts, Galera certification
   * failures) run it again, bounded, with back-off. fn may throw Rollback(value) to roll back and
   * return value. A connection lost before COMMIT rolled the transaction back: the caller gets
   * StoreUnavailableError. A connection lost while COMMIT was under way leaves its outcome unknown:
   * `resolve` finds out what happened by reading the database; without one, the caller gets
   * StoreUnavailableError (for writes that the caller may simply repeat).
   */
  private async tx<T>(op: string, fn: (c: PoolConnection) => Promise<T>, resolve?: (cause: unknown) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let committing = false;
      try {
        const conn = await this.begin();
        let broken = false;
        try {
          const out = await fn(conn);
          committing = true;
          await conn.query("COMMIT");
          return out;
        } catch (e) {
          broken = isConnectionError(e);
          if (!broken) {
            await conn.query("ROLLBACK").catch(() => {
              broken = true;
            });
          }
          if (e instanceof Rollback) return e.value as T;
          throw e;
        } finally {
          if (broken) conn.destroy();
          else conn.release();
        }
      } catch (e) {
        if (committing && resolve && outcomeUnknown(e)) return resolve(e);
        if (await this.retryAfter(op, e, attempt)) continue;
        throw this.mapError(op, e);
      }
    }
  }

  /** After a conflict, waits and says to run the transaction again (counting it), within maxRetries. */
  private async retryAfter(op: string, e: unknown, attempt: number): Promise<boolean> {
    const reason = conflictOf(e);
    if (reason === undefined || attempt >= this.maxRetries) return false;
    this.onRetry(op, reason);
    await sleep(backoffMs(attempt));
    return true;
  }

  /**
   * Runs statements as one transaction in a single round trip: "START TRANSACTION; …; COMMIT"
   * goes out as one multi-statement query, so that a transaction costs each side one wake-up
   * instead of one per statement (on a busy VM, the round trips were most of the cost of a
   * delivered message). Resolves with each statement's result, in order. The server stops at the
   * first failing statement; the transaction is then rolled back and the error thrown. Conflicts
   * run it again. A connection that fails after the batch went out leaves the COMMIT's outcome
   * unknown: `idempotent` batches (the same outcome when run twice) are run again once, others
   * throw CommitOutcomeUnknown for the caller to read back what happened.
   */
  private async txBatch(op: string, statements: readonly Statement[], idempotent: boolean): Promise<unknown[]> {
    const sql = formatBatch([["START TRANSACTION"], ...statements, ["COMMIT"]]);
    for (let attempt = 0; ; attempt++) {
      let conn: PoolConnection | undefined;
      try {
        conn = await this.pool.getConnection();
        const results = await send<unknown[]>(conn, sql);
        conn.release();
        return results.slice(1, -1);
      } catch (e) {
        if (conn) {
          if (isConnectionError(e)) conn.destroy();
          else endInBackground(conn, "ROLLBACK");
        }
        if (conn && isConnectionError(e) && attempt === 0) {
          if (idempotent || !outcomeUnknown(e)) continue;
          throw new CommitOutcomeUnknown(`${op}: connection lost after COMMIT was sent`, { cause: e });
        }
        if (await this.retryAfter(op, e, attempt)) continue;
        throw this.mapError(op, e);
      }
    }
  }

  /**
   * The rows among `expected` (message ID in hex → due time) that carry the due time a claim or
   * lease gave them (leaseStamp): what that transaction committed, when the connection failed
   * after its COMMIT went out. Read again until the database answers (it may be restarting), for
   * at most unknownOutcomeMs; then the outcome stays unknown and StoreUnavailableError says so.
   */
  private async committedStamps(op: string, expected: Map<string, number>, cause: unknown): Promise<Set<string>> {
    const ids = [...expected.keys()].map((h) => Buffer.from(h, "hex"));
    const deadline = Date.now() + this.unknownOutcomeMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const rows = await this.onConnection(
          async (c) =>
            (
              await c.query<({ message_id: Buffer; scheduled_time: DbInt } & RowDataPacket)[]>(
                "SELECT message_id, scheduled_time FROM pending_messages WHERE message_id IN (?)",
                [ids],
              )
            )[0],
        );
        const committed = new Set(rows.filter((r) => num(r.scheduled_time) === expected.get(hex(r.message_id))).map((r) => hex(r.message_id)));
        this.log.warn(
          { op, committed: committed.size, rows: expected.size, err: (cause as Error).message },
          "the connection to the database failed after COMMIT was sent; read back what the transaction did",
        );
        return committed;
      } catch (e) {
        const pause = Math.min(2000, backoffMs(attempt));
        if (!(isConnectionError(e) || isRetryable(e)) || Date.now() + pause > deadline) {
          throw new StoreUnavailableError(
            `the outcome of ${op} on database ${this.opts.database} at ${this.where} is unknown: the connection failed after COMMIT was sent (${(cause as Error).message}), and reading back the ${expected.size} rows it claimed failed for ${Math.round(this.unknownOutcomeMs / 1000)} s (${(e as Error).message}); if it committed, those messages go out when their lease ends`,
            { cause: e },
          );
        }
        await sleep(pause);
      }
    }
  }

  // ---- messages ----

  async storeMessages(msgs: Message[], opts: { contactId?: string; serverDueMs?: number } = {}): Promise<void> {
    const now = Date.now();
    const rows = msgs.map((m) => toMessageRow(m, now));
    const contact = opts.contactId === undefined ? undefined : contactIdFromString(opts.contactId);
    if (rows.length === 0) return;
    const serverDue = msToUs(opts.serverDueMs ?? defaultServerDueMs(now));
    const clientDue = msToUs(now);
    const due = (r: MessageRow) => (r.forServer ? serverDue : clientDue);
    const success = rows.filter((r) => r.result === "success");
    const others = rows.filter((r) => r.result !== "success");
    // Usually every message is new: the whole store is one batch (one round trip). A duplicate
    // ID fails its INSERT as a whole, the batch is rolled back, and the merge rules run one
    // message at a time.
    const batch: Statement[] = [];
    if (success.length > 0) {
      batch.push(
        [
          `INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES ? ON DUPLICATE KEY UPDATE
             processed_time_seconds = VALUES(processed_time_seconds), processed_time_nanos = VALUES(processed_time_nanos),
             failed = NULL, failed_reason = NULL`,
          [success.map((r) => r.values)],
        ],
        ["DELETE FROM pending_messages WHERE message_id IN (?)", [success.map((r) => r.id)]],
      );
    }
    if (others.length > 0) {
      batch.push([`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES ?`, [others.map((r) => r.values)]]);
      const pending = others.filter((r) => r.result === undefined);
      if (pending.length > 0) batch.push(pendingInsert(pending, due));
    }
    if (contact !== undefined) batch.push(linkInsert(contact, rows.map((r) => r.id)));
    try {
      await this.txBatch("storeMessages", batch, true);
      return;
    } catch (e) {
      const cause = e instanceof Error && e.cause !== undefined ? e.cause : e;
      if (isUnknownContact(cause) && contact !== undefined) throw unknownContact(contact);
      if (errno(cause) !== ER_DUP_ENTRY) throw e;
    }
    await this.tx("storeMessages", async (c) => {
      if (success.length > 0) {
        for (const [sql, values] of batch.slice(0, 2)) await c.query(sql, values);
      }
      for (const r of others) await this.mergeOne(c, r, due(r));
      if (contact !== undefined) await this.link(c, contact, rows.map((r) => r.id));
    });
  }

  private async insertPending(c: PoolConnection, rows: MessageRow[], due: (r: MessageRow) => number): Promise<void> {
    const [sql, values] = pendingInsert(rows, due);
    await c.query(sql, values);
  }

  /** Fleetspeak's merge rules for one message that carries no success. */
  private async mergeOne(c: PoolConnection, r: MessageRow, dueUs: number): Promise<void> {
    const [ins] = await c.execute<ResultSetHeader>(
      `INSERT IGNORE INTO messages (${MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
      r.values,
    );
    if (ins.affectedRows === 1) {
      if (r.result === undefined) await this.insertPending(c, [r], () => dueUs);
      return;
    }
    if (r.result === "failed") {
      const [upd] = await c.execute<ResultSetHeader>(
        `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = 1, failed_reason = ?
         WHERE message_id = ? AND processed_time_seconds IS NULL`,
        [r.values[9], r.values[10], r.values[13], r.id],
      );
      if (upd.affectedRows > 0) await c.execute("DELETE FROM pending_messages WHERE message_id = ?", [r.id]);
    }
  }

  private async link(c: PoolConnection, contact: bigint, ids: Buffer[]): Promise<void> {
    if (ids.length === 0) return;
    try {
      const [sql, values] = linkInsert(contact, ids);
      await c.query(sql, values);
    } catch (e) {
      if (isUnknownContact(e)) throw unknownContact(contact);
      throw e;
    }
  }

  async getMessages(ids: Uint8Array[], wantData: boolean): Promise<Message[]> {
    for (const id of ids) checkId(id, 32, "message ID");
    if (ids.length === 0) return [];
    const rows = await this.readExpanded<(MessageDbRow & RowDataPacket)[]>(
      "getMessages",
      `SELECT ${messageColumns("m")}, ${wantData ? "p.data_type_url, p.data_value" : "NULL AS data_type_url, NULL AS data_value"}
       FROM messages m LEFT JOIN pending_messages p ON p.message_id = m.message_id WHERE m.message_id IN (?)`,
      [ids.map(buf)],
    );
    return rows.map((r) => messageFromRow(r, wantData));
  }

  async getMessageStatus(id: Uint8Array): Promise<MessageStatus | undefined> {
    checkId(id, 32, "message ID");
    const [row] = await this.read<(MessageDbRow & RowDataPacket)[]>(
      "getMessageStatus",
      `SELECT creation_time_seconds, creation_time_nanos, processed_time_seconds, processed_time_nanos, failed,
         failed_reason FROM messages WHERE message_id = ?`,
      [buf(id)],
    );
    if (!row) return undefined;
    const status: MessageStatus = {
      creationTime: { seconds: BigInt(row.creation_time_seconds), nanos: num(row.creation_time_nanos) },
    };
    const result = resultFromRow(row);
    if (result) status.result = result;
    return status;
  }

  async setMessageResult(destinationClientId: Uint8Array, id: Uint8Array, result: MessageResult): Promise<boolean> {
    const [done] = await this.setMessageResults([{ destinationClientId, id, result }]);
    return done!;
  }

  async setMessageResults(items: MessageResultUpdate[]): Promise<boolean[]> {
    const now = Date.now();
    const rows = items.map(({ destinationClientId, id, result }) => {
      checkId(id, 32, "message ID");
      if (destinationClientId.length !== 0) checkClientId(destinationClientId, "destination client ID");
      const dest = destinationClientId.length === 0 ? null : buf(destinationClientId);
      return { id: buf(id), dest, values: resultValues(result, now) };
    });
    if (rows.length === 0) return [];
    return this.tx("setMessageResults", async (c) => {
      const done: boolean[] = [];
      for (const r of rows) {
        const [s, n, failed, reason] = r.values;
        const [upd] = await c.execute<ResultSetHeader>(
          `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = ?, failed_reason = ?
           WHERE message_id = ? AND destination_client_id <=> ?`,
          [s, n, failed, reason, r.id, r.dest],
        );
        done.push(upd.affectedRows > 0);
      }
      const finished = rows.filter((_, i) => done[i]).map((r) => r.id);
      if (finished.length > 0) await c.query("DELETE FROM pending_messages WHERE message_id IN (?)", [finished]);
      return done;
    });
  }

  async claimClientMessages(clientId: Uint8Array, opts: ClaimOptions): Promise<Message[]> {
    checkClientId(clientId);
    const limit = Math.floor(opts.limit);
    if (limit <= 0) return [];
    const quotas = serviceQuotas(opts.serviceLimits);
    if (quotas !== undefined && quotas.length === 0) return [];
    const cid = buf(clientId);
    const contact = opts.contactId === undefined ? undefined : contactIdFromString(opts.contactId);
    // Two round trips: the locking read of the due rows with their messages, then the new
    // schedule, the contact links and the commit in one batch. An empty claim (a sweep or a
    // wake-up that finds nothing) is one round trip: its rollback is not waited for.
    //
    // A plain locking read, not SKIP LOCKED: a client's due message can be locked for a moment
    // by transactions that do not take it (inserts of other clients' messages next to it in the
    // index), and skipping it then leaves it undelivered until the next sweep. One client talks
    // to one server at a time, so waiting here is rare and short; a second claimer that waited
    // sees the new due time and takes nothing.
    for (let attempt = 0; ; attempt++) {
      let conn: PoolConnection | undefined;
      let open = false;
      /** Set once the rescheduling and COMMIT went out: the due time given and the rows it took. */
      let committing: { until: number; picked: ClaimRow[] } | undefined;
      try {
        conn = await this.pool.getConnection();
        const now = Date.now();
        const nowUs = msToUs(now);
        const due = (services: string[] | undefined, n: number): Statement => [
          `SELECT p.scheduled_time, ${messageColumns("m")}, p.data_type_url, p.data_value
           FROM pending_messages p FORCE INDEX (pending_messages_due) JOIN messages m ON m.message_id = p.message_id
           WHERE p.destination_client_id = ? AND p.scheduled_time <= ?
           ${services ? "AND p.destination_service_name IN (?)" : ""}
           ORDER BY p.scheduled_time LIMIT ? FOR UPDATE`,
          services ? [cid, nowUs, services, n] : [cid, nowUs, n],
        ];
        const [, rows] = await send<[unknown, ClaimRow[]]>(
          conn,
          formatBatch([["START TRANSACTION"], due(quotas?.map(([svc]) => svc), limit)]),
        );
        open = true;
        let picked = quotas ? withinQuotas(rows, quotas, limit) : rows;
        if (quotas && picked.length < limit && rows.length === limit && picked.length < rows.length) {
          // The window was filled by services already at their quota: another service's due
          // messages may lie beyond it. Ask per service (rows stay locked by this transaction).
          const perService = await send<unknown>(conn, formatBatch(quotas.map(([svc, n]) => due([svc], Math.min(n, limit)))));
          const lists = (quotas.length === 1 ? [perService] : perService) as ClaimRow[][];
          picked = lists.flat().sort((a, b) => num(a.scheduled_time) - num(b.scheduled_time)).slice(0, limit);
        }
        if (picked.length === 0) {
          open = false;
          endInBackground(conn, "ROLLBACK");
          return [];
        }
        const ids = picked.map((r) => r.message_id as Buffer);
        const until = leaseStamp(now + opts.leaseMs);
        committing = { until, picked };
        await send(
          conn,
          formatBatch([
            [
              "UPDATE pending_messages SET retry_count = retry_count + 1, scheduled_time = ? WHERE message_id IN (?)",
              [until, ids],
            ],
            ...(contact !== undefined ? [linkInsert(contact, ids)] : []),
            ["COMMIT"],
          ]),
        );
        open = false;
        conn.release();
        return picked.map((r) => messageFromRow(r, true, false));
      } catch (e) {
        if (conn) {
          if (isConnectionError(e)) conn.destroy();
          else if (open) endInBackground(conn, "ROLLBACK");
          else conn.release();
        }
        if (isUnknownContact(e) && contact !== undefined) throw unknownContact(contact);
        if (committing && outcomeUnknown(e)) {
          const { until, picked } = committing;
          const mine = await this.committedStamps("claimClientMessages", new Map(picked.map((r) => [hex(r.message_id), until])), e);
          if (mine.size > 0) return picked.filter((r) => mine.has(hex(r.message_id))).map((r) => messageFromRow(r, true, false));
          // Not committed: the rows are as they were, and the claim is run again.
          if (attempt < this.maxRetries) continue;
        }
        // A connection found dead before anything was written can simply be replaced.
        if (isConnectionError(e) && !committing && attempt === 0) continue;
        if (await this.retryAfter("claimClientMessages", e, attempt)) continue;
        throw this.mapError("claimClientMessages", e);
      }
    }
  }

  async leaseCarriedMessages(items: CarriedMessage[], leaseMs: number): Promise<CarriedLease[]> {
    const now = Date.now();
    const until = leaseStamp(now + leaseMs);
    const statements: Statement[] = [];
    const rows = items.map(({ message, contactId }) => {
      const row = carriedRow(message, now);
      if (!row) return undefined;
      // The UPDATE only matches the stored message if every column and the payload are what was
      // carried: a notification cannot make a frontend send anything but what was stored.
      statements.push([
        `UPDATE pending_messages p JOIN messages m ON m.message_id = p.message_id
         SET p.retry_count = p.retry_count + 1, p.scheduled_time = ?
         WHERE ${carriedLeaseWhere("p", "m", "<=>")}`,
        [until, ...carriedLeaseParams(row, msToUs(now))],
      ]);
      if (contactId !== undefined) {
        statements.push([
          `INSERT INTO client_contact_messages (client_contact_id, message_id) SELECT ?, ? FROM DUAL WHERE ROW_COUNT() > 0
           ON DUPLICATE KEY UPDATE message_id = client_contact_messages.message_id`,
          [contactIdFromString(contactId), row.id],
        ]);
      }
      statements.push([
        `SELECT EXISTS (SELECT 1 FROM pending_messages FORCE INDEX (pending_messages_due)
           WHERE destination_client_id = ? AND scheduled_time <= ?) AS due`,
        [row.destinationClientId, msToUs(now)],
      ]);
      return row;
    });
    if (statements.length === 0) return items.map(() => ({ leased: false, othersDue: false }));
    let results: unknown[];
    try {
      results = await this.txBatch("leaseCarriedMessages", statements, false);
    } catch (e) {
      if (e instanceof CommitOutcomeUnknown) return this.carriedLeasesAfterLostCommit(rows, until, e.cause);
      const cause = e instanceof Error && e.cause !== undefined ? e.cause : e;
      if (isUnknownContact(cause)) {
        throw new NotFoundError("cannot link carried messages to their contact: no such contact");
      }
      throw e;
    }
    let next = 0;
    return items.map(({ contactId }, i) => {
      if (!rows[i]) return { leased: false, othersDue: false };
      const leased = (results[next] as ResultSetHeader).affectedRows > 0;
      next += contactId === undefined ? 1 : 2;
      const [due] = results[next++] as ({ due: DbInt } & RowDataPacket)[];
      return { leased, othersDue: num(due!.due) > 0 };
    });
  }

  async releaseRecentLeases(clientId: Uint8Array, opts: { leaseMs: number; recentMs: number; dueAtMs: number }): Promise<number> {
    checkClientId(clientId);
    const [from, to] = recentLeaseRange(Date.now(), opts);
    const res = await this.write(
      "releaseRecentLeases",
      `UPDATE pending_messages FORCE INDEX (pending_messages_due) SET scheduled_time = ?
       WHERE destination_client_id = ? AND scheduled_time > ? AND scheduled_time <= ?`,
      [msToUs(opts.dueAtMs), buf(clientId), from, to],
    );
    return res.affectedRows;
  }

  /**
   * The leases of a leaseCarriedMessages batch whose COMMIT's answer was lost, read back: a row
   * that carries the batch's due time was leased by it. Other messages may be due as well (the
   * answer said, and is lost), so the streams look.
   */
  private async carriedLeasesAfterLostCommit(rows: (MessageRow | undefined)[], until: number, cause: unknown): Promise<CarriedLease[]> {
    const expected = new Map(rows.filter((r) => r !== undefined).map((r) => [hex(r.id), until]));
    const mine = await this.committedStamps("leaseCarriedMessages", expected, cause);
    return rows.map((r) => {
      if (!r) return { leased: false, othersDue: false };
      // The same message twice in one batch was leased once, by its first item.
      const leased = mine.delete(hex(r.id));
      return { leased, othersDue: true };
    });
  }
  /**
   * Marks messages processed as their destination clients acknowledged them, all in one round
   * trip: per client, the messages addressed to it that have no result yet, and their pending
   * entries. Returns how many were marked per item.
   */
  async ackClientMessages(items: ClientAck[], processedMs: number): Promise<number[]> {
    const statements: Statement[] = [];
    const at = msToTimestamp(processedMs);
    const [seconds, nanos] = [Number(at.seconds), at.nanos];
    for (const { clientId, ids } of items) {
      checkClientId(clientId);
      for (const id of ids) checkId(id, 32, "message ID");
      if (ids.length === 0) continue;
      const cid = buf(clientId);
      const idList = ids.map(buf);
      statements.push(
        [
          `UPDATE messages SET processed_time_seconds = ?, processed_time_nanos = ?, failed = NULL, failed_reason = NULL
           WHERE message_id IN (?) AND destination_client_id = ? AND processed_time_seconds IS NULL`,
          [seconds, nanos, idList, cid],
        ],
        ["DELETE FROM pending_messages WHERE message_id IN (?) AND destination_client_id = ?", [idList, cid]],
      );
    }
    const results = statements.length === 0 ? [] : ((await this.txBatch("ackClientMessages", statements, true)) as ResultSetHeader[]);
    let next = 0;
    return items.map(({ ids }) => {
      if (ids.length === 0) return 0;
      const updated = results[next]!.affectedRows;
      next += 2;
      return updated;
    });
  }

  /** Full messages (metadata and payload) of pending rows, in the given order. */
  private async readPending(c: PoolConnection, ids: Buffer[]): Promise<Message[]> {
    const [rows] = await c.query<(MessageDbRow & RowDataPacket)[]>(
      `SELECT ${messageColumns("m")}, p.data_type_url, p.data_value FROM pending_messages p
       JOIN messages m ON m.message_id = p.message_id WHERE p.message_id IN (?)`,
      [ids],
    );
    const byId = new Map(rows.map((r) => [hex(r.message_id), r]));
    const out: Message[] = [];
    for (const id of ids) {
      const r = byId.get(hex(id));
      if (r) out.push(messageFromRow(r, true, false));
    }
    return out;
  }

  async clientsWithDueMessages(clientIds: Uint8Array[]): Promise<Uint8Array[]> {
    for (const id of clientIds) checkClientId(id);
    const unique = [...new Set(clientIds.map(hex))];
    if (unique.length === 0) return [];
    await this.fillPendingDestinations();
    // A semi-join that stops at each client's first due row (FirstMatch), where a DISTINCT over
    // an IN list would read every due row of every client.
    const rows = await this.read<({ id: string } & RowDataPacket)[]>(
      "clientsWithDueMessages",
      `SELECT j.id FROM JSON_TABLE(?, '$[*]' COLUMNS (id VARCHAR(16) PATH '$')) j
       WHERE EXISTS (SELECT 1 FROM pending_messages p
                     WHERE p.destination_client_id = UNHEX(j.id) AND p.scheduled_time <= ?)`,
      [JSON.stringify(unique), BigInt(msToUs(Date.now()))],
    );
    return rows.map((r) => Buffer.from(r.id, "hex"));
  }

  async claimServerMessages(limit: number, retryAtMs: (retryCount: number) => number): Promise<Message[]> {
    const n = Math.floor(limit);
    if (n <= 0) return [];
    await this.fillPendingDestinations();
    /** Each claimed row's new due time, once the transaction is about to commit. */
    let expected = new Map<string, number>();
    return this.tx(
      "claimServerMessages",
      async (c) => {
        type Picked = { message_id: Buffer; retry_count: DbInt } & RowDataPacket;
        const [picked] = await c.execute<Picked[]>(
          `SELECT message_id, retry_count FROM pending_messages FORCE INDEX (pending_messages_due)
           WHERE destination_client_id = ? AND scheduled_time <= ? ORDER BY scheduled_time LIMIT ?
           FOR UPDATE SKIP LOCKED`,
          [EMPTY, BigInt(msToUs(Date.now())), String(n)],
        );
        if (picked.length === 0) return [];
        expected = new Map(picked.map((p) => [hex(p.message_id), leaseStamp(retryAtMs(num(p.retry_count) + 1))]));
        const cases = picked.flatMap((p) => [p.message_id, expected.get(hex(p.message_id))]);
        const ids = picked.map((p) => p.message_id);
        await c.query(
          `UPDATE pending_messages SET retry_count = retry_count + 1,
             scheduled_time = CASE message_id ${picked.map(() => "WHEN ? THEN ?").join(" ")} END
           WHERE message_id IN (?)`,
          [...cases, ids],
        );
        return this.readPending(c, ids);
      },
      async (cause) => {
        const mine = await this.committedStamps("claimServerMessages", expected, cause);
        if (mine.size === 0) return [];
        const ids = [...mine].map((h) => Buffer.from(h, "hex"));
        try {
          return await this.onConnection((c) => this.readPending(c, ids));
        } catch (e) {
          throw this.mapError("claimServerMessages", e);
        }
      },
    );
  }

  async deletePendingMessages(clientIds: Uint8Array[]): Promise<void> {
    for (const id of clientIds) checkClientId(id);
    if (clientIds.length === 0) return;
    const t = msToTimestamp(Date.now());
    const ids = clientIds.map(buf);
    await this.tx("deletePendingMessages", async (c) => {
      await c.query(
        `UPDATE messages m JOIN pending_messages p ON p.message_id = m.message_id
         SET m.processed_time_seconds = ?, m.processed_time_nanos = ?, m.failed = 1, m.failed_reason = ?
         WHERE p.destination_client_id IN (?)`,
        [Number(t.seconds), t.nanos, REMOVED_BY_ADMIN, ids],
      );
      await c.query("DELETE FROM pending_messages WHERE destination_client_id IN (?)", [ids]);
    });
  }

  async getPendingMessageCount(clientIds: Uint8Array[]): Promise<bigint> {
    for (const id of clientIds) checkClientId(id);
    if (clientIds.length === 0) return 0n;
    const [row] = await this.readExpanded<({ n: DbInt } & RowDataPacket)[]>(
      "getPendingMessageCount",
      "SELECT COUNT(*) AS n FROM pending_messages WHERE destination_client_id IN (?)",
      [clientIds.map(buf)],
    );
    return BigInt(row!.n);
  }

  async getPendingMessages(q: PendingQuery): Promise<Message[]> {
    for (const id of q.clientIds) checkClientId(id);
    if (q.offset !== 0 && q.limit === 0) {
      throw new InvalidArgumentError("if offset is provided, a limit must be provided as well");
    }
    if (q.offset < 0 || q.limit < 0) throw new InvalidArgumentError("offset and limit must not be negative");
    if (q.clientIds.length === 0) return [];
    const data = q.wantData ? "p.data_type_url, p.data_value" : "NULL AS data_type_url, NULL AS data_value";
    const page = q.limit === 0 ? "" : ` LIMIT ${Math.floor(q.limit)} OFFSET ${Math.floor(q.offset)}`;
    const rows = await this.readExpanded<(MessageDbRow & RowDataPacket)[]>(
      "getPendingMessages",
      `SELECT ${messageColumns("m")}, ${data} FROM pending_messages p JOIN messages m ON m.message_id = p.message_id
       WHERE p.destination_client_id IN (?) ORDER BY p.message_id${page}`,
      [q.clientIds.map(buf)],
    );
    return rows.map((r) => messageFromRow(r, q.wantData, false));
  }

  async pruneMessages(beforeMs: number, batchSize: number): Promise<number> {
    const size = Math.floor(batchSize);
    if (size <= 0) throw new InvalidArgumentError(`batch size must be positive, got ${batchSize}`);
    const t = msToTimestamp(beforeMs);
    let total = 0;
    for (;;) {
      const res = await this.write(
        "pruneMessages",
        `DELETE FROM messages WHERE ${CREATED_BEFORE_SQL} AND processed_time_seconds IS NOT NULL
         ORDER BY creation_time_seconds LIMIT ?`,
        [Number(t.seconds), Number(t.seconds), t.nanos, String(size)],
      );
      total += res.affectedRows;
      if (res.affectedRows < size) return total;
    }
  }

  // ---- clients ----

  async getClientData(id: Uint8Array): Promise<ClientData | undefined> {
    checkClientId(id);
    const rows = await this.read<({ client_key: Buffer | null; blacklisted: DbInt; service_name: string | null; label: string | null } & RowDataPacket)[]>(
      "getClientData",
      `SELECT c.client_key, c.blacklisted, l.service_name, l.label FROM clients c
       LEFT JOIN client_labels l ON l.client_id = c.client_id WHERE c.client_id = ?`,
      [buf(id)],
    );
    const first = rows[0];
    if (!first) return undefined;
    const labels: Label[] = [];
    for (const r of rows) {
      if (r.service_name !== null && r.label !== null) labels.push(labelFromRow({ service_name: r.service_name, label: r.label }));
    }
    return { key: first.client_key ?? new Uint8Array(0), labels, blacklisted: num(first.blacklisted) !== 0 };
  }

  async addClient(id: Uint8Array, data: ClientData): Promise<void> {
    checkClientId(id);
    for (const l of data.labels) checkLabel(l);
    await this.tx("addClient", async (c) => {
      try {
        await c.execute("INSERT INTO clients (client_id, client_key, blacklisted, last_contact_time) VALUES (?, ?, ?, ?)", [
          buf(id),
          buf(data.key),
          data.blacklisted ? 1 : 0,
          msToNs(Date.now()),
        ]);
      } catch (e) {
        if (errno(e) === ER_DUP_ENTRY) throw new InvalidArgumentError(`client ${hex(id)} already exists`);
        throw e;
      }
      if (data.labels.length > 0) {
        await c.query("INSERT IGNORE INTO client_labels (client_id, service_name, label) VALUES ?", [
          data.labels.map((l) => [buf(id), l.serviceName, l.label]),
        ]);
      }
    });
  }

  async listClients(ids: Uint8Array[]): Promise<Client[]> {
    for (const id of ids) checkClientId(id);
    const cols =
      "client_id, blacklisted, last_contact_time, last_contact_address, last_contact_streaming_to, " +
      "last_clock_seconds, last_clock_nanos";
    let rows: (ClientDbRow & RowDataPacket)[];
    let labels: (LabelDbRow & RowDataPacket)[];
    if (ids.length === 0) {
      rows = await this.read("listClients", `SELECT ${cols} FROM clients`);
      labels = await this.read("listClients", "SELECT client_id, service_name, label FROM client_labels");
    } else {
      const list = [ids.map(buf)];
      rows = await this.readExpanded("listClients", `SELECT ${cols} FROM clients WHERE client_id IN (?)`, list);
      labels = await this.readExpanded(
        "listClients",
        "SELECT client_id, service_name, label FROM client_labels WHERE client_id IN (?)",
        list,
      );
    }
    const byClient = labelsByClient(labels);
    return rows.map((r) => clientFromRow(r, byClient.get(hex(r.client_id)) ?? []));
  }

  async streamClientIds(
    includeBlacklisted: boolean,
    lastContactAfterMs: number,
    onId: (id: Uint8Array) => void | Promise<void>,
  ): Promise<void> {
    const q = `SELECT client_id FROM clients WHERE client_id > ? AND last_contact_time > ?
      ${includeBlacklisted ? "" : "AND NOT blacklisted"} ORDER BY client_id LIMIT ${STREAM_PAGE}`;
    let after: Buffer = EMPTY;
    const afterNs = msToNs(lastContactAfterMs);
    for (;;) {
      const page = await this.read<({ client_id: Buffer } & RowDataPacket)[]>("streamClientIds", q, [after, afterNs]);
      for (const r of page) await onId(r.client_id);
      if (page.length < STREAM_PAGE) return;
      after = page[page.length - 1]!.client_id;
    }
  }

  async addClientLabel(id: Uint8Array, label: Label): Promise<void> {
    checkClientId(id);
    checkLabel(label);
    try {
      await this.write("addClientLabel", "INSERT INTO client_labels (client_id, service_name, label) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE label = label", [
        buf(id),
        label.serviceName,
        label.label,
      ]);
    } catch (e) {
      if (errno((e as Error).cause) === ER_NO_REFERENCED_ROW_2) throw new NotFoundError(`client ${hex(id)} not found`);
      throw e;
    }
  }

  async removeClientLabel(id: Uint8Array, label: Label): Promise<void> {
    checkClientId(id);
    await this.write("removeClientLabel", "DELETE FROM client_labels WHERE client_id = ? AND service_name = ? AND label = ?", [
      buf(id),
      label.serviceName,
      label.label,
    ]);
  }

  async blacklistClient(id: Uint8Array): Promise<void> {
    checkClientId(id);
    await this.write("blacklistClient", "UPDATE clients SET blacklisted = TRUE WHERE client_id = ?", [buf(id)]);
  }

  async recordClientContact(c: ContactRecord): Promise<string> {
    checkClientId(c.clientId);
    const id = buf(c.clientId);
    return this.tx("recordClientContact", async (conn) => {
      const now = msToNs(Date.now());
      const [upd] = await conn.execute<ResultSetHeader>(
        `UPDATE clients SET last_contact_time = ?, last_contact_address = ?, last_contact_streaming_to = ?,
           last_clock_seconds = ?, last_clock_nanos = ? WHERE client_id = ?`,
        [
          now,
          c.address,
          c.streamingTo ?? null,
          c.clientClock ? c.clientClock.seconds : null,
          c.clientClock ? c.clientClock.nanos : null,
          id,
        ],
      );
      if (upd.affectedRows === 0) throw new NotFoundError(`client ${hex(c.clientId)} not found`);
      const [ins] = await conn.execute<ResultSetHeader>(
        "INSERT INTO client_contacts (client_id, time, sent_nonce, received_nonce, address) VALUES (?, ?, ?, ?, ?)",
        [id, now, nonceToBytes(c.sentNonce), nonceToBytes(c.receivedNonce), c.address],
      );
      return contactIdToString(ins.insertId);
    });
  }

  async listClientContacts(id: Uint8Array): Promise<ClientContact[]> {
    checkClientId(id);
    const rows = await this.read<(ContactDbRow & RowDataPacket)[]>(
      "listClientContacts",
      "SELECT time, sent_nonce, received_nonce, address FROM client_contacts WHERE client_id = ? ORDER BY client_contact_id",
      [buf(id)],
    );
    return rows.map(contactFromRow);
  }

  async linkMessagesToContact(contactId: string, messageIds: Uint8Array[]): Promise<void> {
    const contact = contactIdFromString(contactId);
    for (const id of messageIds) checkId(id, 32, "message ID");
    if (messageIds.length === 0) return;
    await this.tx("linkMessagesToContact", (c) => this.link(c, contact, messageIds.map(buf)));
  }

  async recordResourceUsageData(id: Uint8Array, data: ResourceUsageData): Promise<void> {
    checkClientId(id);
    const values = resourceUsageValues(id, data, Date.now());
    try {
      await this.write(
        "recordResourceUsageData",
        `INSERT INTO client_resource_usage_records (${RESOURCE_USAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
        values,
      );
    } catch (e) {
      if (errno((e as Error).cause) === ER_NO_REFERENCED_ROW_2) throw new NotFoundError(`client ${hex(id)} not found`);
      throw e;
    }
  }

  async fetchResourceUsageRecords(id: Uint8Array, startMs: number, endMs: number): Promise<ClientResourceUsageRecord[]> {
    checkClientId(id);
    const rows = await this.read<(ResourceUsageDbRow & RowDataPacket)[]>(
      "fetchResourceUsageRecords",
      `SELECT ${RESOURCE_USAGE_COLUMNS} FROM client_resource_usage_records
       WHERE client_id = ? AND server_timestamp >= ? AND server_timestamp < ? ORDER BY server_timestamp`,
      [buf(id), msToNs(startMs), msToNs(endMs)],
    );
    return rows.map(resourceUsageFromRow);
  }

  // ---- broadcasts ----

  async createBroadcast(b: Broadcast, limit: bigint): Promise<void> {
    const values = broadcastValues(b, limit);
    await this.tx("createBroadcast", async (c) => {
      try {
        // sent and allocated are named: Fleetspeak's own schema gives them no default.
        await c.execute(`INSERT INTO broadcasts (${BROADCAST_COLUMNS}, sent, allocated) VALUES (?,?,?,?,?,?,?,?,?,0,0)`, values);
      } catch (e) {
        if (errno(e) === ER_DUP_ENTRY) throw new InvalidArgumentError(`broadcast ${hex(b.broadcastId)} already exists`);
        throw e;
      }
      if (b.requiredLabels.length > 0) {
        await c.query("INSERT IGNORE INTO broadcast_labels (broadcast_id, service_name, label) VALUES ?", [
          b.requiredLabels.map((l) => [values[0], l.serviceName, l.label]),
        ]);
      }
    });
  }

  async disableBroadcasts(ids: Uint8Array[]): Promise<void> {
    for (const id of ids) checkId(id, 8, "broadcast ID");
    if (ids.length === 0) return;
    await this.tx("disableBroadcasts", async (c) => {
      // Fleetspeak (Go) servers may hold allocations of these broadcasts: fold them in as they
      // would (their sends count, their reservations go), so that they can send no more.
      await foldAllocations(c, "broadcast_id IN (?)", [ids.map(buf)]);
      await c.query("UPDATE broadcasts SET message_limit = 0 WHERE broadcast_id IN (?)", [ids.map(buf)]);
    });
  }

  async listActiveBroadcasts(): Promise<ActiveBroadcast[]> {
    await this.foldFinishedAllocations();
    const rows = await this.read<(BroadcastDbRow & RowDataPacket)[]>(
      "listActiveBroadcasts",
      `SELECT ${BROADCAST_COLUMNS}, sent FROM broadcasts WHERE sent < message_limit AND ${NOT_EXPIRED_SQL}`,
      notExpiredParams(Date.now()),
    );
    if (rows.length === 0) return [];
    const labels = await this.readExpanded<(LabelDbRow & RowDataPacket)[]>(
      "listActiveBroadcasts",
      "SELECT broadcast_id AS client_id, service_name, label FROM broadcast_labels WHERE broadcast_id IN (?)",
      [rows.map((r) => r.broadcast_id)],
    );
    const byId = labelsByClient(labels);
    return rows.map((r) => ({
      broadcast: broadcastFromRow(r, byId.get(hex(r.broadcast_id)) ?? []),
      sent: BigInt(r.sent),
      limit: BigInt(r.message_limit),
    }));
  }

  async listSentBroadcasts(clientId: Uint8Array): Promise<Uint8Array[]> {
    checkClientId(clientId);
    const rows = await this.read<({ broadcast_id: Buffer } & RowDataPacket)[]>(
      "listSentBroadcasts",
      "SELECT broadcast_id FROM broadcast_sent WHERE client_id = ?",
      [buf(clientId)],
    );
    return rows.map((r) => r.broadcast_id);
  }

  async saveBroadcastMessage(msg: Message, broadcastId: Uint8Array, clientId: Uint8Array): Promise<boolean> {
    const now = Date.now();
    checkId(broadcastId, 8, "broadcast ID");
    checkClientId(clientId);
    const row = toMessageRow(msg, now);
    if (!row.destinationClientId.equals(buf(clientId))) {
      throw new InvalidArgumentError(
        `broadcast message ${hex(row.id)} is addressed to ${hex(row.destinationClientId)}, not to client ${hex(clientId)}`,
      );
    }
    return this.tx("saveBroadcastMessage", async (c) => {
      let sent: ResultSetHeader;
      try {
        [sent] = await c.execute<ResultSetHeader>(
          "INSERT IGNORE INTO broadcast_sent (broadcast_id, client_id) VALUES (?, ?)",
          [buf(broadcastId), buf(clientId)],
        );
      } catch (e) {
        if (errno(e) === ER_NO_REFERENCED_ROW_2) throw new Rollback(false);
        throw e;
      }
      if (sent.affectedRows === 0) throw new Rollback(false);
      const [counted] = await c.execute<ResultSetHeader>(
        `UPDATE broadcasts SET sent = sent + 1 WHERE broadcast_id = ? AND ${BROADCAST_HAS_ROOM_SQL} AND ${NOT_EXPIRED_SQL}`,
        [buf(broadcastId), ...notExpiredParams(now)],
      );
      if (counted.affectedRows === 0) throw new Rollback(false);
      await c.execute(`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, row.values);
      if (row.result === undefined) await this.insertPending(c, [row], () => msToUs(now));
      return true;
    });
  }

  /**
   * Folds into their broadcasts the allocations of Fleetspeak (Go) servers that can send no more,
   * as Go's own cleanup would (what they sent counts; what they reserved is free again):
   * - full ones (sent = limit: Go refuses to send under them), early: a Go server computes its
   *   next allocation from max(sent, allocated), before it cleans up the full one, and so can go
   *   past the limit by a whole allocation when the full one's sends are not in `sent` yet;
   * - expired ones that a server which died, or was replaced by this one, never cleaned up. A Go
   *   server neither keeps nor uses an allocation past its expiry; the margin covers clocks that
   *   differ between servers.
   * A Go server that later cleans up a folded allocation finds it gone, which it takes as done.
   */
  private async foldFinishedAllocations(): Promise<void> {
    const where = "(sent >= message_limit OR expiration_time_seconds < ?)";
    const cutoffS = Math.floor((Date.now() - ALLOCATION_EXPIRY_MARGIN_MS) / 1000);
    const [finished] = await this.readExpanded<({ n: DbInt } & RowDataPacket)[]>(
      "listActiveBroadcasts",
      `SELECT COUNT(*) AS n FROM broadcast_allocations WHERE ${where}`,
      [cutoffS],
    );
    if (num(finished!.n) === 0) return;
    await this.tx("listActiveBroadcasts", (c) => foldAllocations(c, where, [cutoffS]));
  }

  // ---- files ----

  async storeFile(service: string, name: string, data: Uint8Array): Promise<void> {
    checkName(service, "file service name");
    checkName(name, "file name");
    checkPayloadSize(data.length, `file ${service}/${name}`);
    await this.write("storeFile", "REPLACE INTO files (service, name, modified_time_nanos, data) VALUES (?, ?, ?, ?)", [
      service,
      name,
      msToNs(Date.now()),
      buf(data),
    ]);
  }

  async deleteFile(service: string, name: string): Promise<void> {
    await this.write("deleteFile", "DELETE FROM files WHERE service = ? AND name = ?", [service, name]);
  }

  async statFile(service: string, name: string): Promise<number | undefined> {
    const [row] = await this.read<({ t: DbInt } & RowDataPacket)[]>(
      "statFile",
      "SELECT modified_time_nanos AS t FROM files WHERE service = ? AND name = ?",
      [service, name],
    );
    return row ? nsToMs(row.t) : undefined;
  }

  async readFile(service: string, name: string): Promise<StoredFile | undefined> {
    const [row] = await this.read<({ t: DbInt; data: Buffer | null } & RowDataPacket)[]>(
      "readFile",
      "SELECT modified_time_nanos AS t, data FROM files WHERE service = ? AND name = ?",
      [service, name],
    );
    return row ? { data: row.data ?? new Uint8Array(0), modifiedMs: nsToMs(row.t) } : undefined;
  }

  // ---- console (SQL shared with SQLite: console-queries.ts) ----

  private readQuery<T>(op: string, q: () => Query): Promise<T[]> {
    let query: Query;
    try {
      query = q();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.read<(T & RowDataPacket)[]>(op, query.sql, query.params as Params);
  }

  async countClients(seenAfterMs: number[]): Promise<ClientCounts> {
    const rows = await this.readQuery<Record<string, DbInt | null>>("countClients", () => countClientsQuery(seenAfterMs));
    return clientCountsFromRow(rows[0]!, seenAfterMs.length);
  }

  async countClientsByLabel(max: number): Promise<LabelCount[]> {
    return (await this.readQuery<LabelDbRow & { n: DbInt }>("countClientsByLabel", () => labelCountsQuery(max))).map(
      labelCountFromRow,
    );
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
    const rows = await this.readQuery<Parameters<typeof serviceQueuesFromRows>[0][number]>("listServiceQueues", () =>
      serviceQueuesQuery(Date.now(), {
        sql: `(SELECT ${QUEUE_COLUMNS} FROM pending_messages LIMIT ${checkQueueRows(maxRows)})`,
        params: [],
      }),
    );
    return serviceQueuesFromRows(rows);
  }

  async recordServerHeartbeat(heartbeat: ServerHeartbeat): Promise<void> {
    await this.write("recordServerHeartbeat", UPSERT_HEARTBEAT_SQL, heartbeatValues(heartbeat));
  }

  listServerHeartbeats(afterMs: number): Promise<ServerHeartbeat[]> {
    return this.#reads.listServerHeartbeats(afterMs);
  }

  async pruneServerHeartbeats(beforeMs: number): Promise<number> {
    const { sql, params } = pruneHeartbeatsQuery(beforeMs);
    return (await this.write("pruneServerHeartbeats", sql, params as Params)).affectedRows;
  }

  // ---- lifecycle ----

  async ping(): Promise<void> {
    await this.read("ping", "SELECT 1");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
