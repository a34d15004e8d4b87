// Converting a SQLite file between Fleetspeak's (Go) own SQLite layout and ours, in place.
//
// Fleetspeak's SQLite datastore (server/sqlite in google/fleetspeak) keeps IDs as lowercase hex
// text, nonces as unpadded hex text, server-bound destinations as '' rather than NULL, and
// pending_messages without the destination columns this server's claims use; it has no cascading
// foreign keys and no version table. Our layout keeps IDs as bytes (see sqlite-schema.ts). The
// two cannot share a file the way the MySQL schemas do, so the switch is an explicit step:
// `fleetspeak-server migrate` converts Fleetspeak's file to ours, `fleetspeak-server migrate
// --to-fleetspeak` converts it back. Each runs in one transaction: a conversion cut short (a
// crash, a full disk) leaves the file as it was.
import type Database from "better-sqlite3";
import { FLEETSPEAK_TABLES } from "./fleetspeak-tables.js";
import { SQLITE_MIGRATIONS } from "./sqlite-schema.js";

/** Fleetspeak's SQLite schema, as its server creates it (the layout it reads). */
const FLEETSPEAK_SCHEMA = [
  `CREATE TABLE clients(
    client_id TEXT(16) PRIMARY KEY, client_key BLOB, blacklisted BOOLEAN NOT NULL, last_contact_time INT8 NOT NULL,
    last_contact_address TEXT(64), last_contact_streaming_to TEXT(128), last_clock_seconds INT8, last_clock_nanos INT4)`,
  `CREATE TABLE client_labels(
    client_id TEXT(16) NOT NULL, service_name TEXT(128) NOT NULL, label TEXT(128) NOT NULL,
    PRIMARY KEY (client_id, service_name, label), FOREIGN KEY (client_id) REFERENCES clients(client_id)) WITHOUT ROWID`,
  `CREATE TABLE client_contacts(
    client_contact_id INTEGER NOT NULL, client_id TEXT(16) NOT NULL, time INT8 NOT NULL, sent_nonce TEXT(16) NOT NULL,
    received_nonce TEXT(16) NOT NULL, address TEXT(64),
    PRIMARY KEY (client_contact_id), FOREIGN KEY (client_id) REFERENCES clients(client_id))`,
  `CREATE TABLE client_resource_usage_records(
    client_id TEXT(16) NOT NULL, scope TEXT(128) NOT NULL, pid INT8, process_start_time INT8, client_timestamp INT8,
    server_timestamp INT8, process_terminated BOOLEAN NOT NULL, mean_user_cpu_rate REAL, max_user_cpu_rate REAL,
    mean_system_cpu_rate REAL, max_system_cpu_rate REAL, mean_resident_memory_mib INT4, max_resident_memory_mib INT4,
    mean_num_fds INT4, max_num_fds INT4, FOREIGN KEY (client_id) REFERENCES clients(client_id))`,
  `CREATE TABLE messages(
    message_id TEXT(64) NOT NULL, source_client_id TEXT(16) NOT NULL, source_service_name TEXT(128) NOT NULL,
    source_message_id TEXT(32) NOT NULL, destination_client_id TEXT(16), destination_service_name TEXT(128) NOT NULL,
    message_type TEXT(128), creation_time_seconds INT8 NOT NULL, creation_time_nanos INT4 NOT NULL,
    processed_time_seconds INT8, processed_time_nanos INT4, validation_info BLOB, failed INT1, failed_reason TEXT,
    annotations BLOB, PRIMARY KEY (message_id))`,
  `CREATE TABLE pending_messages(
    message_id TEXT(64) NOT NULL, retry_count INT4 NOT NULL, scheduled_time INT8 NOT NULL, data_type_url TEXT,
    data_value BLOB, PRIMARY KEY (message_id), FOREIGN KEY (message_id) REFERENCES messages(message_id))`,
  `CREATE TABLE client_contact_messages(
    client_contact_id INTEGER NOT NULL, message_id TEXT(64) NOT NULL, PRIMARY KEY (client_contact_id, message_id),
    FOREIGN KEY (client_contact_id) REFERENCES client_contacts(client_contact_id),
    FOREIGN KEY (message_id) REFERENCES messages(message_id)) WITHOUT ROWID`,
  `CREATE TABLE broadcasts(
    broadcast_id TEXT(32) NOT NULL, source_service_name TEXT(128) NOT NULL, destination_service_name TEXT(128),
    message_type TEXT(128) NOT NULL, expiration_time_seconds INT8, expiration_time_nanos INT4, data_type_url TEXT,
    data_value BLOB, sent UINT8, allocated UINT8, message_limit UINT8, PRIMARY KEY (broadcast_id))`,
  `CREATE TABLE broadcast_labels(
    broadcast_id TEXT(32) NOT NULL, service_name TEXT(128) NOT NULL, label TEXT(128) NOT NULL,
    PRIMARY KEY (broadcast_id, service_name, label), FOREIGN KEY (broadcast_id) REFERENCES broadcasts(broadcast_id))
    WITHOUT ROWID`,
  `CREATE TABLE broadcast_allocations(
    broadcast_id TEXT(32) NOT NULL, allocation_id TEXT(16) NOT NULL, sent UINT8, message_limit UINT8,
    expiration_time_seconds INT8, expiration_time_nanos INT4, PRIMARY KEY (broadcast_id, allocation_id),
    FOREIGN KEY (broadcast_id) REFERENCES broadcasts(broadcast_id)) WITHOUT ROWID`,
  `CREATE TABLE broadcast_sent(
    broadcast_id TEXT(32) NOT NULL, client_id TEXT(16) NOT NULL, PRIMARY KEY (client_id, broadcast_id),
    FOREIGN KEY (broadcast_id) REFERENCES broadcasts(broadcast_id), FOREIGN KEY (client_id) REFERENCES clients(client_id))
    WITHOUT ROWID`,
  // TEST(256), not TEXT: Fleetspeak's declaration, typo included; it gives the column numeric
  // affinity, which decides how Fleetspeak finds files whose names look like numbers.
  `CREATE TABLE files(
    service TEXT(128) NOT NULL, name TEST(256) NOT NULL, modified_time_nanos INT8 NOT NULL, data BLOB,
    PRIMARY KEY (service, name))`,
];

const OLD = "conversion_old_";

/** Byte IDs from hex text; Fleetspeak writes '' for "none", which becomes NULL. */
const idFromHex = (col: string) => `NULLIF(unhex(${col}), x'')`;
/** Lowercase hex text from byte IDs, as Fleetspeak's queries compare them; NULL becomes ''. */
const hexFromId = (col: string) => `IFNULL(lower(hex(${col})), '')`;

/** Fleetspeak's SQLite nonce (uint64 in unpadded hex) as ours (8 bytes little-endian), and back. */
function registerNonceFunctions(db: Database.Database): void {
  db.function("fs_nonce_to_bytes", { deterministic: true }, (s: unknown) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(`0x${String(s ?? "") || "0"}`)));
    return b;
  });
  db.function("fs_nonce_to_hex", { deterministic: true }, (b: unknown) =>
    Buffer.isBuffer(b) && b.length === 8 ? b.readBigUInt64LE(0).toString(16) : "0",
  );
}

export type SqliteLayout = "empty" | "ours" | "fleetspeak" | "unknown";

/** Which program made the file: none yet, this server, Fleetspeak (Go), or something else. */
export function sqliteLayout(db: Database.Database): SqliteLayout {
  const tables = new Set(
    (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name),
  );
  if (tables.has("schema_version")) return "ours";
  if (!FLEETSPEAK_TABLES.some((t) => tables.has(t))) return "empty";
  if (!tables.has("clients")) return "unknown";
  const idType = (db.prepare("SELECT type FROM pragma_table_info('clients') WHERE name = 'client_id'").get() as
    | { type: string }
    | undefined)?.type;
  const pendingHasForServer =
    db.prepare("SELECT 1 FROM pragma_table_info('pending_messages') WHERE name = 'for_server'").get() !== undefined;
  return idType?.toUpperCase().startsWith("TEXT") && !pendingHasForServer ? "fleetspeak" : "unknown";
}

/**
 * Runs fn in one IMMEDIATE transaction with foreign key enforcement off, then checks every key.
 * Returns false, doing nothing, when the file is no longer in the `from` layout once the
 * transaction holds it (another process converted it meanwhile).
 */
function convert(db: Database.Database, from: SqliteLayout, fn: () => void): boolean {
  registerNonceFunctions(db);
  db.pragma("foreign_keys = OFF");
  try {
    const converted = db.transaction(() => {
      if (sqliteLayout(db) !== from) return false;
      fn();
      const broken = db.pragma("foreign_key_check") as { table: string; parent: string }[];
      if (broken.length > 0) {
        const where = [...new Set(broken.map((b) => `${b.table} → ${b.parent}`))].join(", ");
        throw new Error(`${broken.length} rows refer to rows that do not exist (${where}); nothing was changed`);
      }
      return true;
    }).immediate();
    if (converted) db.pragma("wal_checkpoint(TRUNCATE)");
    return converted;
  } finally {
    db.pragma("foreign_keys = ON");
  }
}

function renameAway(db: Database.Database, tables: readonly string[]): void {
  for (const t of tables) db.exec(`ALTER TABLE ${t} RENAME TO ${OLD}${t}`);
}

/**
 * Checks that every row of the renamed tables made it into the new ones (a pending row whose
 * message is missing, say, would not): a conversion keeps everything or changes nothing.
 * `fewer` allows some tables to shrink by a given number of rows (rows merged on purpose).
 */
function checkEveryRowCopied(db: Database.Database, tables: string[], fewer: Record<string, number> = {}): void {
  const lost: string[] = [];
  for (const t of tables) {
    const count = (name: string) => Number((db.prepare(`SELECT COUNT(*) AS n FROM ${name}`).get() as { n: number | bigint }).n);
    const missing = count(`${OLD}${t}`) - (fewer[t] ?? 0) - count(t);
    if (missing > 0) lost.push(`${missing} of ${t}`);
  }
  if (lost.length > 0) {
    throw new Error(
      `rows that cannot be converted (they refer to rows that do not exist, or repeat a key): ${lost.join(", ")}; nothing was changed`,
    );
  }
}

function dropRenamed(db: Database.Database, tables: readonly string[]): void {
  for (const t of tables) db.exec(`DROP TABLE ${OLD}${t}`);
}

/**
 * Converts a file in Fleetspeak's (Go) layout to ours and records the newest schema version.
 * Broadcast allocations that a stopped Fleetspeak server left behind are folded into their
 * broadcasts (what they sent counts; what they reserved is free again). Returns undefined when
 * another process converted the file first; otherwise the stored files whose names Fleetspeak
 * kept as numbers ("service/name"): its files.name column is declared
 * `TEST(256)`, which gives it numeric affinity, so "0123" was stored as 123 and the original
 * spelling is lost (Fleetspeak served it under any spelling of the number; this server serves the
 * name as converted, "123").
 */
export function convertFromFleetspeak(db: Database.Database): string[] | undefined {
  const o = (t: string) => `${OLD}${t}`;
  let numericNames: string[] = [];
  const converted = convert(db, "fleetspeak", () => {
    numericNames = (
      db.prepare("SELECT service, name FROM files WHERE typeof(name) <> 'text'").all() as { service: string; name: unknown }[]
    ).map((r) => `${r.service}/${String(r.name)}`);
    const present = FLEETSPEAK_TABLES.filter((t) => db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(t));
    renameAway(db, present);
    // A table an older Fleetspeak did not create yet is copied from as an empty one.
    FLEETSPEAK_TABLES.forEach((t, i) => {
      if (!present.includes(t)) db.exec(FLEETSPEAK_SCHEMA[i]!.replace(/^CREATE TABLE (\w+)/, `CREATE TABLE ${OLD}$1`));
    });
    db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
    for (const m of SQLITE_MIGRATIONS) for (const s of m.statements) db.exec(s);
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1]!.version);
    db.exec(`
      INSERT INTO clients (client_id, client_key, blacklisted, last_contact_time, last_contact_address,
          last_contact_streaming_to, last_clock_seconds, last_clock_nanos)
        SELECT unhex(client_id), client_key, blacklisted, last_contact_time, last_contact_address,
          last_contact_streaming_to, last_clock_seconds, last_clock_nanos FROM ${o("clients")};
      INSERT INTO client_labels (client_id, service_name, label)
        SELECT unhex(client_id), service_name, label FROM ${o("client_labels")};
      INSERT INTO client_contacts (client_contact_id, client_id, time, sent_nonce, received_nonce, address)
        SELECT client_contact_id, unhex(client_id), time, fs_nonce_to_bytes(sent_nonce), fs_nonce_to_bytes(received_nonce),
          address FROM ${o("client_contacts")};
      INSERT INTO client_resource_usage_records (client_id, scope, pid, process_start_time, client_timestamp,
          server_timestamp, process_terminated, mean_user_cpu_rate, max_user_cpu_rate, mean_system_cpu_rate,
          max_system_cpu_rate, mean_resident_memory_mib, max_resident_memory_mib, mean_num_fds, max_num_fds)
        SELECT unhex(client_id), scope, pid, process_start_time, client_timestamp, server_timestamp, process_terminated,
          mean_user_cpu_rate, max_user_cpu_rate, mean_system_cpu_rate, max_system_cpu_rate, mean_resident_memory_mib,
          max_resident_memory_mib, mean_num_fds, max_num_fds FROM ${o("client_resource_usage_records")};
      INSERT INTO messages (message_id, source_client_id, source_service_name, source_message_id, destination_client_id,
          destination_service_name, message_type, creation_time_seconds, creation_time_nanos, processed_time_seconds,
          processed_time_nanos, validation_info, failed, failed_reason, annotations)
        SELECT unhex(message_id), ${idFromHex("source_client_id")}, source_service_name, ${idFromHex("source_message_id")},
          ${idFromHex("destination_client_id")}, destination_service_name, message_type, creation_time_seconds,
          creation_time_nanos, processed_time_seconds, processed_time_nanos, validation_info, failed, failed_reason,
          annotations FROM ${o("messages")};
      INSERT INTO pending_messages (message_id, for_server, destination_client_id, destination_service_name, retry_count,
          scheduled_time, data_type_url, data_value)
        SELECT unhex(p.message_id), IFNULL(m.destination_client_id, '') = '', IFNULL(unhex(m.destination_client_id), x''),
          m.destination_service_name, p.retry_count, p.scheduled_time, p.data_type_url, p.data_value
        FROM ${o("pending_messages")} p JOIN ${o("messages")} m ON m.message_id = p.message_id;
      INSERT INTO client_contact_messages (client_contact_id, message_id)
        SELECT client_contact_id, unhex(message_id) FROM ${o("client_contact_messages")};
      INSERT INTO broadcasts (broadcast_id, source_service_name, destination_service_name, message_type,
          expiration_time_seconds, expiration_time_nanos, data_type_url, data_value, sent, allocated, message_limit)
        SELECT unhex(b.broadcast_id), b.source_service_name, b.destination_service_name, b.message_type,
          b.expiration_time_seconds, b.expiration_time_nanos, b.data_type_url, b.data_value,
          IFNULL(b.sent, 0) + IFNULL((SELECT SUM(IFNULL(a.sent, 0)) FROM ${o("broadcast_allocations")} a
                                      WHERE a.broadcast_id = b.broadcast_id), 0),
          0, IFNULL(b.message_limit, 0)
        FROM ${o("broadcasts")} b;
      INSERT INTO broadcast_labels (broadcast_id, service_name, label)
        SELECT unhex(broadcast_id), service_name, label FROM ${o("broadcast_labels")};
      INSERT INTO broadcast_sent (broadcast_id, client_id)
        SELECT unhex(broadcast_id), unhex(client_id) FROM ${o("broadcast_sent")};
      INSERT INTO files (service, name, modified_time_nanos, data)
        SELECT service, name, modified_time_nanos, data FROM ${o("files")};
    `);
    checkEveryRowCopied(
      db,
      FLEETSPEAK_TABLES.filter((t) => t !== "broadcast_allocations"),
    );
    dropRenamed(db, FLEETSPEAK_TABLES);
  });
  return converted ? numericNames : undefined;
}

/** Tables our migrations create that Fleetspeak's layout does not have. */
function ourOwnTables(): string[] {
  const names = SQLITE_MIGRATIONS.flatMap((m) =>
    m.statements.flatMap((s) => /^\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+)/.exec(s)?.[1] ?? []),
  );
  return [...new Set(names)].filter((t) => !FLEETSPEAK_TABLES.includes(t));
}

/**
 * Converts a file in our layout back to Fleetspeak's (Go), which then runs on it as before.
 * Returns undefined when another process converted the file first; otherwise the stored files
 * that Fleetspeak's layout cannot keep apart ("service/name"): names that
 * are spellings of one number ("0123" and "123") become one row there (see convertFromFleetspeak);
 * the most recently stored of them is kept.
 */
export function convertToFleetspeak(db: Database.Database): string[] | undefined {
  const o = (t: string) => `${OLD}${t}`;
  let merged: string[] = [];
  const converted = convert(db, "ours", () => {
    const ours = FLEETSPEAK_TABLES.filter((t) => t !== "broadcast_allocations");
    renameAway(db, ours);
    for (const s of FLEETSPEAK_SCHEMA) db.exec(s);
    db.exec(`
      INSERT INTO clients (client_id, client_key, blacklisted, last_contact_time, last_contact_address,
          last_contact_streaming_to, last_clock_seconds, last_clock_nanos)
        SELECT lower(hex(client_id)), client_key, blacklisted, last_contact_time, last_contact_address,
          last_contact_streaming_to, last_clock_seconds, last_clock_nanos FROM ${o("clients")};
      INSERT INTO client_labels (client_id, service_name, label)
        SELECT lower(hex(client_id)), service_name, label FROM ${o("client_labels")};
      INSERT INTO client_contacts (client_contact_id, client_id, time, sent_nonce, received_nonce, address)
        SELECT client_contact_id, lower(hex(client_id)), time, fs_nonce_to_hex(sent_nonce), fs_nonce_to_hex(received_nonce),
          address FROM ${o("client_contacts")};
      INSERT INTO client_resource_usage_records (client_id, scope, pid, process_start_time, client_timestamp,
          server_timestamp, process_terminated, mean_user_cpu_rate, max_user_cpu_rate, mean_system_cpu_rate,
          max_system_cpu_rate, mean_resident_memory_mib, max_resident_memory_mib, mean_num_fds, max_num_fds)
        SELECT lower(hex(client_id)), scope, pid, process_start_time, client_timestamp, server_timestamp,
          process_terminated, mean_user_cpu_rate, max_user_cpu_rate, mean_system_cpu_rate, max_system_cpu_rate,
          mean_resident_memory_mib, max_resident_memory_mib, mean_num_fds, max_num_fds
        FROM ${o("client_resource_usage_records")};
      INSERT INTO messages (message_id, source_client_id, source_service_name, source_message_id, destination_client_id,
          destination_service_name, message_type, creation_time_seconds, creation_time_nanos, processed_time_seconds,
          processed_time_nanos, validation_info, failed, failed_reason, annotations)
        SELECT lower(hex(message_id)), ${hexFromId("source_client_id")}, source_service_name,
          ${hexFromId("source_message_id")}, ${hexFromId("destination_client_id")}, destination_service_name,
          message_type, creation_time_seconds, creation_time_nanos, processed_time_seconds, processed_time_nanos,
          validation_info, failed, failed_reason, annotations FROM ${o("messages")};
      INSERT INTO pending_messages (message_id, retry_count, scheduled_time, data_type_url, data_value)
        SELECT lower(hex(message_id)), retry_count, scheduled_time, data_type_url, data_value FROM ${o("pending_messages")};
      INSERT INTO client_contact_messages (client_contact_id, message_id)
        SELECT client_contact_id, lower(hex(message_id)) FROM ${o("client_contact_messages")};
      INSERT INTO broadcasts (broadcast_id, source_service_name, destination_service_name, message_type,
          expiration_time_seconds, expiration_time_nanos, data_type_url, data_value, sent, allocated, message_limit)
        SELECT lower(hex(broadcast_id)), source_service_name, destination_service_name, message_type,
          expiration_time_seconds, expiration_time_nanos, data_type_url, data_value, sent, 0, message_limit
        FROM ${o("broadcasts")};
      INSERT INTO broadcast_labels (broadcast_id, service_name, label)
        SELECT lower(hex(broadcast_id)), service_name, label FROM ${o("broadcast_labels")};
      INSERT INTO broadcast_sent (broadcast_id, client_id)
        SELECT lower(hex(broadcast_id)), lower(hex(client_id)) FROM ${o("broadcast_sent")};
      INSERT OR REPLACE INTO files (service, name, modified_time_nanos, data)
        SELECT service, name, modified_time_nanos, data FROM ${o("files")} ORDER BY modified_time_nanos;
    `);
    merged = (
      db
        .prepare(
          `SELECT o.service, o.name FROM ${o("files")} o WHERE NOT EXISTS (SELECT 1 FROM files f
             WHERE f.service = o.service AND f.name = o.name AND f.modified_time_nanos = o.modified_time_nanos)`,
        )
        .all() as { service: string; name: string }[]
    ).map((r) => `${r.service}/${r.name}`);
    checkEveryRowCopied(db, ours, { files: merged.length });
    dropRenamed(db, ours);
    for (const t of [...ourOwnTables(), "schema_version"]) db.exec(`DROP TABLE IF EXISTS ${t}`);
  });
  return converted ? merged : undefined;
}
