// Bringing a MySQL/MariaDB database to the schema this server uses, and back to Fleetspeak's.
//
// Three kinds of database reach a starting server: an empty one, one this server made (it has a
// schema_version table), and one that Fleetspeak (Go) made: its tables, no version table (Go's
// server creates its tables with CREATE TABLE IF NOT EXISTS and never versions them). The last is
// adopted in place: every change our schema makes on top of Fleetspeak's is additive (columns
// with defaults, indexes, a trigger, tables), so Fleetspeak's servers keep running on the database
// during a rolling upgrade and after a rollback.
//
// Each step says how to recognise that it is done (a column, an index, a trigger), and is skipped
// then: a migration cut short (a crash, a killed process) is finished by the next start, and two
// servers that both think they hold the migration lock both get through. The lock keeps servers
// from changing the schema at the same moment: GET_LOCK on one MySQL/MariaDB server, a row of
// schema_migration_lock on a Galera cluster (where GET_LOCK reaches no other node).
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { PoolConnection, RowDataPacket } from "mysql2/promise";
import type { Logger } from "../../common/log.js";
import { SchemaVersionError, StoreUnavailableError } from "./errors.js";
import { latestVersion, pendingMigrations } from "./migrations.js";
import { FLEETSPEAK_TABLES } from "./fleetspeak-tables.js";
import { MYSQL_MIGRATIONS, OUR_ADDITIONS, REQUIRED_COLUMNS } from "./mysql-schema.js";

export interface ColumnInfo {
  type: string;
  nullable: boolean;
  collation: string | null;
}

/** What information_schema says about the database's tables, for the steps' done-tests. */
export class SchemaState {
  constructor(
    readonly tables: Set<string>,
    /** table → column → { type (e.g. "varbinary(16)"), nullable, collation (text columns) } */
    readonly columns: Map<string, Map<string, ColumnInfo>>,
    /** table → index name → its columns in order */
    readonly indexes: Map<string, Map<string, string[]>>,
    readonly triggers: Set<string>,
  ) {}

  column(table: string, column: string): ColumnInfo | undefined {
    return this.columns.get(table)?.get(column);
  }

  /** Whether some index of the table starts with exactly these columns. */
  hasIndexOn(table: string, columns: string[]): boolean {
    for (const cols of this.indexes.get(table)?.values() ?? []) {
      if (columns.every((c, i) => cols[i] === c)) return true;
    }
    return false;
  }

  hasIndex(table: string, name: string): boolean {
    return this.indexes.get(table)?.has(name) ?? false;
  }
}

export async function readSchema(conn: PoolConnection): Promise<SchemaState> {
  const [tables] = await conn.query<RowDataPacket[]>(
    "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = DATABASE()",
  );
  const [columns] = await conn.query<RowDataPacket[]>(
    `SELECT table_name AS t, column_name AS c, column_type AS type, is_nullable AS nullable, collation_name AS coll
     FROM information_schema.columns WHERE table_schema = DATABASE()`,
  );
  const [indexes] = await conn.query<RowDataPacket[]>(
    `SELECT table_name AS t, index_name AS i, column_name AS c FROM information_schema.statistics
     WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index`,
  );
  const [triggers] = await conn.query<RowDataPacket[]>(
    "SELECT trigger_name AS n FROM information_schema.triggers WHERE trigger_schema = DATABASE()",
  );
  const cols = new Map<string, Map<string, ColumnInfo>>();
  for (const r of columns) {
    const t = String(r.t);
    if (!cols.has(t)) cols.set(t, new Map());
    cols.get(t)!.set(String(r.c), {
      type: String(r.type).toLowerCase(),
      nullable: r.nullable === "YES",
      collation: r.coll === null ? null : String(r.coll),
    });
  }
  const idx = new Map<string, Map<string, string[]>>();
  for (const r of indexes) {
    const t = String(r.t);
    if (!idx.has(t)) idx.set(t, new Map());
    const byName = idx.get(t)!;
    const name = String(r.i);
    if (!byName.has(name)) byName.set(name, []);
    byName.get(name)!.push(String(r.c));
  }
  return new SchemaState(
    new Set(tables.map((r) => String(r.t))),
    cols,
    idx,
    new Set(triggers.map((r) => String(r.n))),
  );
}

type Query = (sql: string, values?: unknown[]) => Promise<unknown>;

/** One change to the schema. */
export interface MysqlStep {
  /** What the step makes, for logs and errors. */
  what: string;
  /** True when the database has what the step makes already; the step is then skipped. */
  done?: (s: SchemaState) => boolean;
  /** The statements, in order. */
  sql?: string[];
  /** For steps that are more than statements (batched data changes). */
  run?: (query: Query) => Promise<void>;
  /**
   * Set when the database may refuse the step for want of a privilege without harm to what this
   * server does: the refusal is logged as a warning with this text, and the migration goes on.
   */
  optionalBecause?: string;
}

export interface MysqlMigration {
  version: number;
  steps: MysqlStep[];
}

const MIGRATION_LOCK_TIMEOUT_S = 120;

// Errors that say "you may not", not "this is wrong".
const PRIVILEGE_ERRNOS = new Set([
  1142, // ER_TABLEACCESS_DENIED_ERROR (no TRIGGER privilege)
  1227, // ER_SPECIFIC_ACCESS_DENIED_ERROR (needs SUPER)
  1419, // ER_BINLOG_CREATE_ROUTINE_NEED_SUPER (binary log on, log_bin_trust_function_creators off)
]);

interface MigrateContext {
  conn: PoolConnection;
  log: Logger;
  /** "database fleetspeak at db:3306", for messages. */
  where: string;
}

/**
 * Runs fn while holding the database-wide migration lock: GET_LOCK (per database name) on one
 * MySQL/MariaDB server; on a Galera node, where GET_LOCK reaches no other node, a row in
 * schema_migration_lock instead (see withClusterLock).
 */
async function withMigrationLock<T>(ctx: MigrateContext, fn: () => Promise<T>): Promise<T> {
  const { conn } = ctx;
  const [wsrep] = await conn.query<RowDataPacket[]>("SHOW VARIABLES LIKE 'wsrep_on'");
  if (String(wsrep[0]?.Value ?? "OFF").toUpperCase() === "ON") return withClusterLock(ctx, fn);
  const [[lock]] = await conn.query<RowDataPacket[]>(
    "SELECT GET_LOCK(CONCAT('fleetspeak_schema_', SHA1(DATABASE())), ?) AS got",
    [MIGRATION_LOCK_TIMEOUT_S],
  );
  if (Number(lock!.got) !== 1) throw lockTimeout(ctx);
  try {
    return await fn();
  } finally {
    await conn.query("SELECT RELEASE_LOCK(CONCAT('fleetspeak_schema_', SHA1(DATABASE())))").catch(() => {});
  }
}

function lockTimeout(ctx: MigrateContext): StoreUnavailableError {
  return new StoreUnavailableError(
    `waited ${MIGRATION_LOCK_TIMEOUT_S}s for another server to finish migrating the schema of ${ctx.where}; check for a stuck server process`,
  );
}

/** How long a cluster migration lock holds without being renewed (its holder may have died). */
const CLUSTER_LOCK_LEASE_MS = 5 * 60_000;

/**
 * The migration lock of a Galera cluster: the one row of schema_migration_lock. Inserting it is
 * taking the lock; Galera lets only one of several concurrent inserts commit (the others fail
 * certification, or find it there), on whichever nodes they run. The holder renews its lease
 * while it works; a lease that ran out (a server that died migrating) is taken over. Servers on
 * several nodes must not change the schema at the same moment: concurrent CREATE TRIGGER on two
 * nodes can stall both (seen with MariaDB 10.11), and one server at a time is simpler anyway.
 */
async function withClusterLock<T>(ctx: MigrateContext, fn: () => Promise<T>): Promise<T> {
  const { conn } = ctx;
  await conn.query(
    `CREATE TABLE IF NOT EXISTS schema_migration_lock (
       id INT NOT NULL, holder VARCHAR(128) NOT NULL, lease_until_ms BIGINT NOT NULL, PRIMARY KEY (id)
     ) ENGINE=InnoDB`,
  );
  const holder = `${hostname()}:${process.pid}:${randomBytes(6).toString("hex")}`;
  const deadline = Date.now() + MIGRATION_LOCK_TIMEOUT_S * 1000;
  for (let attempt = 0; ; attempt++) {
    try {
      await conn.query("INSERT INTO schema_migration_lock (id, holder, lease_until_ms) VALUES (1, ?, ?)", [
        holder,
        Date.now() + CLUSTER_LOCK_LEASE_MS,
      ]);
      break;
    } catch (e) {
      const errno = (e as { errno?: number }).errno;
      if (errno === ER_DUP_ENTRY) {
        await conn.query("DELETE FROM schema_migration_lock WHERE id = 1 AND lease_until_ms < ?", [Date.now()]);
      } else if (errno === undefined || !CONFLICT_ERRNOS.has(errno)) {
        throw e;
      }
      if (Date.now() > deadline) throw lockTimeout(ctx);
      await conflictPause(Math.min(attempt, 3));
    }
  }
  const renew = setInterval(() => {
    conn
      .query("UPDATE schema_migration_lock SET lease_until_ms = ? WHERE id = 1 AND holder = ?", [
        Date.now() + CLUSTER_LOCK_LEASE_MS,
        holder,
      ])
      .catch(() => {});
  }, CLUSTER_LOCK_LEASE_MS / 5);
  try {
    return await fn();
  } finally {
    clearInterval(renew);
    await conn.query("DELETE FROM schema_migration_lock WHERE id = 1 AND holder = ?", [holder]).catch(() => {});
  }
}

// Conflicts with another server doing the same at the same moment (a deadlock, a lock wait, a
// Galera certification failure, which MariaDB reports as a deadlock or an error during COMMIT):
// the step is looked at again and, if still needed, run again after a growing, jittered pause.
// Servers starting together on several nodes of a Galera cluster meet here while the cluster lock
// itself is taken, so the budget is generous.
const CONFLICT_ERRNOS = new Set([1180, 1205, 1213]);
const ER_DUP_ENTRY = 1062;
const CONFLICT_RETRIES = 20;

function conflictPause(attempt: number): Promise<void> {
  const ms = Math.min(2000, 50 * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random());
  return new Promise((r) => setTimeout(r, ms));
}

async function runStep(ctx: MigrateContext, step: MysqlStep): Promise<"ran" | "skipped" | "refused"> {
  const { conn, log } = ctx;
  for (let attempt = 0; ; attempt++) {
    if (step.done?.(await readSchema(conn))) return "skipped";
    const query: Query = (sql, values) => conn.query(sql, values);
    try {
      for (const sql of step.sql ?? []) await conn.query(sql);
      if (step.run) await step.run(query);
      return "ran";
    } catch (e) {
      // Another server (on another Galera node, say) may have made the same change meanwhile.
      if (step.done?.(await readSchema(conn))) return "skipped";
      const errno = (e as { errno?: number }).errno;
      if (errno !== undefined && CONFLICT_ERRNOS.has(errno) && attempt < CONFLICT_RETRIES) {
        await conflictPause(attempt);
        continue;
      }
      if (step.optionalBecause !== undefined && errno !== undefined && PRIVILEGE_ERRNOS.has(errno)) {
        log.warn({ step: step.what, err: (e as Error).message }, step.optionalBecause);
        return "refused";
      }
      throw new Error(`schema migration of ${ctx.where} failed at "${step.what}": ${(e as Error).message}`, { cause: e });
    }
  }
}

/** The version recorded in schema_version, 0 for none. */
async function recordedVersion(conn: PoolConnection): Promise<number> {
  const [[row]] = await conn.query<RowDataPacket[]>("SELECT MAX(version) AS v FROM schema_version");
  return row!.v === null ? 0 : Number(row!.v);
}

/** Records the version unless a server migrating at the same time recorded it (or a later one). */
async function recordVersion(conn: PoolConnection, version: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await conn.beginTransaction();
      await conn.query("DELETE FROM schema_version");
      await conn.query("INSERT INTO schema_version (version) VALUES (?)", [version]);
      await conn.commit();
      return;
    } catch (e) {
      await conn.rollback().catch(() => {});
      if ((await recordedVersion(conn)) >= version) return;
      const errno = (e as { errno?: number }).errno;
      if (errno === undefined || !CONFLICT_ERRNOS.has(errno) || attempt >= CONFLICT_RETRIES) throw e;
      await conflictPause(attempt);
    }
  }
}

/**
 * Tables of Fleetspeak's schema that lack columns this server reads: the database is neither
 * Fleetspeak's nor ours. With `presentOnly`, tables that do not exist yet are not counted.
 */
function missingColumns(s: SchemaState, presentOnly = false): string[] {
  const out: string[] = [];
  for (const [table, columns] of Object.entries(REQUIRED_COLUMNS)) {
    if (presentOnly && !s.tables.has(table)) continue;
    const missing = columns.filter((c) => !s.column(table, c));
    if (missing.length > 0) out.push(`${table} (${missing.join(", ")})`);
  }
  return out;
}

/** Where a database's schema came from: this server (it has schema_version), Fleetspeak (Go), or nowhere yet. */
function schemaOrigin(s: SchemaState): "ours" | "fleetspeak" | "empty" {
  if (s.tables.has("schema_version")) return "ours";
  return FLEETSPEAK_TABLES.some((t) => s.tables.has(t)) ? "fleetspeak" : "empty";
}

/** A database without our version table must hold Fleetspeak's tables as Fleetspeak made them. */
function checkFleetspeakTables(s: SchemaState, where: string): void {
  const missing = missingColumns(s, true);
  if (missing.length > 0) {
    throw new SchemaVersionError(
      `${where} holds tables named like Fleetspeak's that are not Fleetspeak's: missing columns in ${missing.join("; ")}. ` +
        "Point mysql_data_source_name at a database that Fleetspeak or this server made, or at a new, empty one",
    );
  }
}

/**
 * What a start would do to the database, changing nothing (`fleetspeak-server --check --connect`);
 * throws SchemaVersionError where the start would refuse.
 */
export async function plannedMigration(conn: PoolConnection, where: string): Promise<string> {
  const s = await readSchema(conn);
  const latest = latestVersion(MYSQL_MIGRATIONS);
  switch (schemaOrigin(s)) {
    case "empty":
      return `empty, schema version ${latest} created at start`;
    case "fleetspeak":
      checkFleetspeakTables(s, where);
      return `made by Fleetspeak (Go), adopted at start (additions only; Fleetspeak keeps working on it)`;
    case "ours": {
      const current = await recordedVersion(conn);
      const todo = pendingMigrations(MYSQL_MIGRATIONS, current, where);
      return todo.length === 0 ? `schema version ${current}` : `schema version ${current}, migrated to ${latest} at start`;
    }
  }
}

/**
 * Brings the database up to the newest schema: creates it when empty, adopts a database made by
 * Fleetspeak (Go), applies what a database of ours lacks. Returns how the database started out.
 */
export async function migrateMysql(ctx: MigrateContext): Promise<"created" | "adopted" | "upgraded" | "current"> {
  return withMigrationLock(ctx, async () => {
    const { conn, log } = ctx;
    const before = await readSchema(conn);
    const origin = schemaOrigin(before);
    if (origin === "fleetspeak") {
      checkFleetspeakTables(before, ctx.where);
      log.warn(
        { database: ctx.where, tables: FLEETSPEAK_TABLES.filter((t) => before.tables.has(t)).length },
        "adopting a database made by Fleetspeak (Go): adding this server's columns, indexes and trigger (all additive; Fleetspeak keeps working on it)",
      );
    }
    await conn.query("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL, PRIMARY KEY (version)) ENGINE=InnoDB");
    const current = await recordedVersion(conn);
    const todo = pendingMigrations(MYSQL_MIGRATIONS, current, ctx.where);
    for (const m of todo) {
      let ran = 0;
      for (const step of m.steps) if ((await runStep(ctx, step)) === "ran") ran++;
      await recordVersion(conn, m.version);
      log.info({ database: ctx.where, version: m.version, steps: ran }, "database schema migrated");
    }
    const missing = missingColumns(await readSchema(conn));
    if (missing.length > 0) {
      throw new SchemaVersionError(
        `${ctx.where} lacks columns this server needs: ${missing.join("; ")}; was the schema changed by hand?`,
      );
    }
    if (origin === "empty") return "created";
    if (origin === "fleetspeak") return "adopted";
    return todo.length > 0 ? "upgraded" : "current";
  });
}

/**
 * Removes what this server added on top of Fleetspeak's schema (trigger, columns, indexes, the
 * version table), for `fleetspeak-server migrate --to-fleetspeak`. Fleetspeak runs on the database
 * without this; it leaves the schema as Fleetspeak's own server would have made it. Widened
 * columns stay wide (Fleetspeak reads and writes them as before).
 */
export async function revertMysqlToFleetspeak(ctx: MigrateContext): Promise<string[]> {
  return withMigrationLock(ctx, async () => {
    const done: string[] = [];
    for (const step of OUR_ADDITIONS) {
      const s = await readSchema(ctx.conn);
      if (!step.present(s)) continue;
      for (const sql of step.drop(s)) await ctx.conn.query(sql);
      done.push(step.what);
    }
    return done;
  });
}
