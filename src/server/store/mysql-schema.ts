// The MySQL/MariaDB schema, as an ordered list of migrations.
//
// It is Fleetspeak's MySQL schema (server/mysql/mysql.go in google/fleetspeak) with additions
// that Fleetspeak's servers do not see: a database made by Fleetspeak (Go) is adopted in place
// (mysql-migrate.ts), Fleetspeak (Go) servers can run on a database this server made or adopted,
// and both kinds can run on it at once during a rolling upgrade. Tables, column names and units
// are Fleetspeak's, so its documented pruning procedure (DB-PRUNING.md: delete clients / messages /
// broadcasts and let the ON DELETE CASCADE foreign keys clean up) stays valid:
//   clients.last_contact_time, client_contacts.time, files.modified_time_nanos and the resource
//   usage times are Unix nanoseconds; pending_messages.scheduled_time is Unix microseconds;
//   message and broadcast times are separate seconds + nanos columns; nonces are 8 bytes
//   little-endian; contact IDs are client_contact_id in hex.
// What this server adds, each for a reason (all of it additive: Fleetspeak's statements name
// their columns, so extra columns with defaults, indexes and a trigger do not disturb them):
// - pending_messages.destination_client_id (empty for server-bound messages) and
//   destination_service_name, with an index (destination_client_id, scheduled_time): claiming a
//   client's due messages, per-service quotas, the server backlog (destination_client_id = '')
//   and clientsWithDueMessages are index range scans without a join. Fleetspeak's servers insert
//   pending rows without them: a BEFORE INSERT trigger copies them from the message, and where the
//   database user may not create triggers, the frontends' sweeps fill them in (see
//   MysqlStore.fillPendingDestinations).
// - messages gets an index on creation_time_seconds (pruning), clients on last_contact_time,
//   client_resource_usage_records on (client_id, server_timestamp) and a primary key on an
//   invisible record_id (Galera wants one on every table; Fleetspeak inserts there without a
//   column list, which an invisible column does not disturb).
// - messages.source_message_id is VARBINARY(255) (Fleetspeak: 16); in databases this server
//   creates, client_contact_id is BIGINT UNSIGNED (Fleetspeak: INTEGER, which a large fleet of
//   streaming clients fills in months) and pending_messages' primary key is message_id alone
//   (Fleetspeak: (for_server, message_id)). Adopted databases keep Fleetspeak's types and keys.
// - Broadcast limits: saveBroadcastMessage counts in the broadcasts row
//   (sent = sent + 1 WHERE sent + allocated < message_limit), so the limit holds across servers
//   without leases of our own; Fleetspeak's servers take allocations (broadcast_allocations,
//   broadcasts.allocated), which that condition leaves room for, and a BEFORE INSERT trigger on
//   broadcast_allocations trims each to the room really left (Fleetspeak's own sizing can exceed
//   the limit).
// - Every table created here uses utf8mb4 with a binary collation (names and labels compare byte
//   for byte); in adopted tables the label and file-name keys are made binary too (Fleetspeak's
//   take the database default, usually case-insensitive, where labels differing in case collide).
// - schema_version records the version.
// Requirements: MySQL 8.0+ or MariaDB 10.6+ (FOR UPDATE SKIP LOCKED, JSON_TABLE). Sessions run
// at READ COMMITTED (see mysql-store.ts); with binary logging on, binlog_format must be ROW or
// MIXED (MariaDB's default), as MySQL requires for READ COMMITTED writes.
import type { MysqlMigration, MysqlStep, SchemaState } from "./mysql-migrate.js";

const TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

const VERSION_1: string[] = [
      `CREATE TABLE IF NOT EXISTS clients (
        client_id BINARY(8) NOT NULL,
        client_key BLOB,
        blacklisted BOOL NOT NULL,
        last_contact_time BIGINT NOT NULL,
        last_contact_address TEXT(64),
        last_contact_streaming_to TEXT(128),
        last_clock_seconds BIGINT UNSIGNED,
        last_clock_nanos INT UNSIGNED,
        PRIMARY KEY (client_id),
        KEY clients_last_contact_time (last_contact_time)
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS client_labels (
        client_id BINARY(8) NOT NULL,
        service_name VARCHAR(128) NOT NULL,
        label VARCHAR(128) NOT NULL,
        PRIMARY KEY (client_id, service_name, label),
        FOREIGN KEY (client_id) REFERENCES clients(client_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS client_contacts (
        client_contact_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        client_id BINARY(8) NOT NULL,
        time BIGINT NOT NULL,
        sent_nonce BINARY(8) NOT NULL,
        received_nonce BINARY(8) NOT NULL,
        address VARCHAR(64),
        PRIMARY KEY (client_contact_id),
        FOREIGN KEY (client_id) REFERENCES clients(client_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS client_resource_usage_records (
        client_id BINARY(8) NOT NULL,
        scope VARCHAR(128) NOT NULL,
        pid BIGINT,
        process_start_time BIGINT,
        client_timestamp BIGINT,
        server_timestamp BIGINT,
        process_terminated BOOL NOT NULL,
        mean_user_cpu_rate REAL,
        max_user_cpu_rate REAL,
        mean_system_cpu_rate REAL,
        max_system_cpu_rate REAL,
        mean_resident_memory_mib INT4,
        max_resident_memory_mib INT4,
        mean_num_fds INT,
        max_num_fds INT,
        KEY client_resource_usage_records_client (client_id, server_timestamp),
        FOREIGN KEY (client_id) REFERENCES clients(client_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS messages (
        message_id BINARY(32) NOT NULL,
        source_client_id BINARY(8),
        source_service_name VARCHAR(128) NOT NULL,
        source_message_id VARBINARY(255),
        destination_client_id BINARY(8),
        destination_service_name VARCHAR(128) NOT NULL,
        message_type VARCHAR(128),
        creation_time_seconds BIGINT NOT NULL,
        creation_time_nanos INT NOT NULL,
        processed_time_seconds BIGINT,
        processed_time_nanos INT,
        validation_info BLOB,
        failed INT1,
        failed_reason TEXT,
        annotations BLOB,
        PRIMARY KEY (message_id),
        KEY messages_creation_time (creation_time_seconds)
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS pending_messages (
        message_id BINARY(32) NOT NULL,
        for_server BOOL NOT NULL,
        destination_client_id VARBINARY(8) NOT NULL,
        destination_service_name VARCHAR(128) NOT NULL,
        retry_count INT NOT NULL,
        scheduled_time BIGINT NOT NULL,
        data_type_url TEXT,
        data_value MEDIUMBLOB,
        PRIMARY KEY (message_id),
        KEY pending_messages_due (destination_client_id, scheduled_time),
        FOREIGN KEY (message_id) REFERENCES messages(message_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS client_contact_messages (
        client_contact_id BIGINT UNSIGNED NOT NULL,
        message_id BINARY(32) NOT NULL,
        PRIMARY KEY (client_contact_id, message_id),
        FOREIGN KEY (client_contact_id) REFERENCES client_contacts(client_contact_id) ON DELETE CASCADE,
        FOREIGN KEY (message_id) REFERENCES messages(message_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS broadcasts (
        broadcast_id BINARY(8) NOT NULL,
        source_service_name VARCHAR(128) NOT NULL,
        destination_service_name VARCHAR(128),
        message_type VARCHAR(128) NOT NULL,
        expiration_time_seconds BIGINT,
        expiration_time_nanos INT,
        data_type_url TEXT,
        data_value MEDIUMBLOB,
        sent BIGINT UNSIGNED NOT NULL DEFAULT 0,
        allocated BIGINT UNSIGNED NOT NULL DEFAULT 0,
        message_limit BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (broadcast_id)
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS broadcast_labels (
        broadcast_id BINARY(8) NOT NULL,
        service_name VARCHAR(128) NOT NULL,
        label VARCHAR(128) NOT NULL,
        PRIMARY KEY (broadcast_id, service_name, label),
        FOREIGN KEY (broadcast_id) REFERENCES broadcasts(broadcast_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS broadcast_sent (
        broadcast_id BINARY(8) NOT NULL,
        client_id BINARY(8) NOT NULL,
        PRIMARY KEY (client_id, broadcast_id),
        FOREIGN KEY (client_id) REFERENCES clients(client_id) ON DELETE CASCADE,
        FOREIGN KEY (broadcast_id) REFERENCES broadcasts(broadcast_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS files (
        service VARCHAR(128) NOT NULL,
        name VARCHAR(128) NOT NULL,
        modified_time_nanos BIGINT NOT NULL,
        data MEDIUMBLOB,
        PRIMARY KEY (service, name)
      ) ${TABLE_OPTIONS}`,
];

/** Fleetspeak's columns that this server reads or writes, per table. */
export const REQUIRED_COLUMNS: Record<string, string[]> = {
  clients: [
    "client_id",
    "client_key",
    "blacklisted",
    "last_contact_time",
    "last_contact_address",
    "last_contact_streaming_to",
    "last_clock_seconds",
    "last_clock_nanos",
  ],
  client_labels: ["client_id", "service_name", "label"],
  client_contacts: ["client_contact_id", "client_id", "time", "sent_nonce", "received_nonce", "address"],
  client_resource_usage_records: [
    "client_id",
    "scope",
    "pid",
    "process_start_time",
    "client_timestamp",
    "server_timestamp",
    "process_terminated",
    "mean_user_cpu_rate",
    "max_user_cpu_rate",
    "mean_system_cpu_rate",
    "max_system_cpu_rate",
    "mean_resident_memory_mib",
    "max_resident_memory_mib",
    "mean_num_fds",
    "max_num_fds",
  ],
  messages: [
    "message_id",
    "source_client_id",
    "source_service_name",
    "source_message_id",
    "destination_client_id",
    "destination_service_name",
    "message_type",
    "creation_time_seconds",
    "creation_time_nanos",
    "processed_time_seconds",
    "processed_time_nanos",
    "validation_info",
    "failed",
    "failed_reason",
    "annotations",
  ],
  pending_messages: ["message_id", "for_server", "retry_count", "scheduled_time", "data_type_url", "data_value"],
  client_contact_messages: ["client_contact_id", "message_id"],
  broadcasts: [
    "broadcast_id",
    "source_service_name",
    "destination_service_name",
    "message_type",
    "expiration_time_seconds",
    "expiration_time_nanos",
    "data_type_url",
    "data_value",
    "sent",
    "allocated",
    "message_limit",
  ],
  broadcast_labels: ["broadcast_id", "service_name", "label"],
  broadcast_allocations: ["broadcast_id", "allocation_id", "sent", "message_limit"],
  broadcast_sent: ["broadcast_id", "client_id"],
  files: ["service", "name", "modified_time_nanos", "data"],
};

/** Adds a column, or makes an existing one nullable with no default (Fleetspeak's inserts omit it). */
function nullableColumn(table: string, column: string, type: string): MysqlStep {
  return {
    what: `${table}.${column} ${type} NULL`,
    done: (s) => s.column(table, column)?.nullable === true,
    run: async (query) => {
      const exists = await query(
        `SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?`,
        [table, column],
      );
      const verb = (exists as unknown[][])[0]!.length > 0 ? "MODIFY" : "ADD";
      await query(`ALTER TABLE ${table} ${verb} COLUMN ${column} ${type} NULL DEFAULT NULL`);
    },
  };
}

function index(table: string, name: string, columns: string[]): MysqlStep {
  return {
    what: `index ${name} on ${table} (${columns.join(", ")})`,
    done: (s) => s.hasIndex(table, name) || s.hasIndexOn(table, columns),
    sql: [`ALTER TABLE ${table} ADD INDEX ${name} (${columns.join(", ")})`],
  };
}

/**
 * Makes text key columns compare byte for byte, as in the tables this server creates. Fleetspeak's
 * tables take the database's default collation, usually a case-insensitive one, under which the
 * labels "Linux" and "linux" of one client collide; binary keeps every row a case-insensitive
 * collation kept apart, so nothing can clash.
 */
function binaryCollation(table: string, columns: [name: string, type: string][]): MysqlStep {
  return {
    what: `${table} (${columns.map(([c]) => c).join(", ")}) compared byte for byte`,
    done: (s) => columns.every(([c]) => s.column(table, c)?.collation === "utf8mb4_bin"),
    sql: [
      `ALTER TABLE ${table} ${columns
        .map(([c, type]) => `MODIFY COLUMN ${c} ${type} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL`)
        .join(", ")}`,
    ],
  };
}

const FILL_BATCH = 5000;

/**
 * Copies each pending row's destination from its message where it is missing: rows inserted by
 * Fleetspeak (Go) servers, which do not know the columns. In batches, so that a large backlog
 * does not hold one huge transaction.
 */
export const FILL_PENDING_DESTINATIONS = `UPDATE pending_messages p JOIN messages m ON m.message_id = p.message_id
  SET p.destination_client_id = IFNULL(m.destination_client_id, ''), p.destination_service_name = m.destination_service_name
  WHERE p.message_id IN (?)`;
export const PENDING_WITHOUT_DESTINATION = "SELECT message_id FROM pending_messages WHERE destination_client_id IS NULL LIMIT ?";

export const PENDING_DESTINATION_TRIGGER = "pending_messages_destination";
const ALLOCATION_TRIGGER = "broadcast_allocations_within_limit";
const NO_TRIGGER_PRIVILEGE =
  "grant TRIGGER (and, with binary logging on, set log_bin_trust_function_creators = 1) and restart to fix";

const VERSION_2: MysqlStep[] = [
  {
    what: "table broadcast_allocations (Fleetspeak's)",
    done: (s) => s.tables.has("broadcast_allocations"),
    sql: [
      `CREATE TABLE IF NOT EXISTS broadcast_allocations (
        broadcast_id BINARY(8) NOT NULL,
        allocation_id BINARY(8) NOT NULL,
        sent BIGINT UNSIGNED,
        message_limit BIGINT UNSIGNED,
        expiration_time_seconds BIGINT,
        expiration_time_nanos INT,
        PRIMARY KEY (broadcast_id, allocation_id),
        FOREIGN KEY (broadcast_id) REFERENCES broadcasts(broadcast_id) ON DELETE CASCADE
      ) ${TABLE_OPTIONS}`,
    ],
  },
  nullableColumn("pending_messages", "destination_client_id", "VARBINARY(8)"),
  nullableColumn("pending_messages", "destination_service_name", "VARCHAR(128)"),
  index("pending_messages", "pending_messages_due", ["destination_client_id", "scheduled_time"]),
  {
    what: "pending_messages destinations filled in from their messages",
    run: async (query) => {
      for (;;) {
        const [rows] = (await query(PENDING_WITHOUT_DESTINATION, [FILL_BATCH])) as [{ message_id: Buffer }[]];
        if (rows.length === 0) return;
        await query(FILL_PENDING_DESTINATIONS, [rows.map((r) => r.message_id)]);
        if (rows.length < FILL_BATCH) return;
      }
    },
  },
  {
    what: `trigger ${PENDING_DESTINATION_TRIGGER}`,
    done: (s) => s.triggers.has(PENDING_DESTINATION_TRIGGER),
    sql: [
      `CREATE TRIGGER ${PENDING_DESTINATION_TRIGGER} BEFORE INSERT ON pending_messages FOR EACH ROW
       BEGIN
         IF NEW.destination_client_id IS NULL THEN
           SET NEW.destination_client_id =
                 (SELECT IFNULL(m.destination_client_id, '') FROM messages m WHERE m.message_id = NEW.message_id),
               NEW.destination_service_name =
                 (SELECT m.destination_service_name FROM messages m WHERE m.message_id = NEW.message_id);
         END IF;
       END`,
    ],
    optionalBecause: `the database user may not create triggers: messages that Fleetspeak (Go) admin servers insert while they run beside this server reach its frontends by the 5 s sweep, not at once; ${NO_TRIGGER_PRIVILEGE}`,
  },
  {
    // Fleetspeak's servers size a new allocation from max(sent, allocated), before they fold the
    // allocation they used up into `sent`: they can go past a broadcast's limit by a whole
    // allocation, alone or beside this server. This trims each new allocation to the room really
    // left (limit - sent - what the other allocations reserve) and keeps `allocated` their sum; a
    // Fleetspeak server refuses to send beyond its allocation's stored limit.
    what: `trigger ${ALLOCATION_TRIGGER}`,
    done: (s) => s.triggers.has(ALLOCATION_TRIGGER),
    sql: [
      `CREATE TRIGGER ${ALLOCATION_TRIGGER} BEFORE INSERT ON broadcast_allocations FOR EACH ROW
       BEGIN
         DECLARE reserved BIGINT;
         DECLARE room BIGINT;
         SET reserved = (SELECT IFNULL(SUM(a.message_limit), 0) FROM broadcast_allocations a
                         WHERE a.broadcast_id = NEW.broadcast_id);
         SET room = (SELECT CAST(b.message_limit AS SIGNED) - CAST(IFNULL(b.sent, 0) AS SIGNED) - reserved
                     FROM broadcasts b WHERE b.broadcast_id = NEW.broadcast_id);
         IF room IS NOT NULL AND NEW.message_limit > GREATEST(room, 0) THEN
           SET NEW.message_limit = GREATEST(room, 0);
         END IF;
         UPDATE broadcasts SET allocated = reserved + NEW.message_limit WHERE broadcast_id = NEW.broadcast_id;
       END`,
    ],
    optionalBecause: `the database user may not create triggers: broadcast limits can be exceeded by Fleetspeak (Go) servers running on this database (as among Fleetspeak servers alone); ${NO_TRIGGER_PRIVILEGE}`,
  },
  index("messages", "messages_destination_client_id", ["destination_client_id"]),
  index("messages", "messages_creation_time", ["creation_time_seconds"]),
  {
    what: "messages.source_message_id VARBINARY(255)",
    done: (s) => s.column("messages", "source_message_id")?.type === "varbinary(255)",
    sql: ["ALTER TABLE messages MODIFY COLUMN source_message_id VARBINARY(255) NULL"],
  },
  index("clients", "clients_last_contact_time", ["last_contact_time"]),
  index("client_resource_usage_records", "client_resource_usage_records_client", ["client_id", "server_timestamp"]),
  {
    // Galera replicates rows by primary key and wants one on every table; Fleetspeak's
    // INSERT without a column list does not see an invisible column.
    what: "client_resource_usage_records primary key (invisible record_id)",
    done: (s) => s.column("client_resource_usage_records", "record_id") !== undefined,
    sql: [
      `ALTER TABLE client_resource_usage_records
         ADD COLUMN record_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT INVISIBLE, ADD PRIMARY KEY (record_id)`,
    ],
  },
  binaryCollation("client_labels", [
    ["service_name", "VARCHAR(128)"],
    ["label", "VARCHAR(128)"],
  ]),
  binaryCollation("broadcast_labels", [
    ["service_name", "VARCHAR(128)"],
    ["label", "VARCHAR(128)"],
  ]),
  binaryCollation("files", [
    ["service", "VARCHAR(128)"],
    ["name", "VARCHAR(128)"],
  ]),
];

export const MYSQL_MIGRATIONS: MysqlMigration[] = [
  {
    version: 1,
    steps: VERSION_1.map((sql) => {
      const table = /CREATE TABLE IF NOT EXISTS (\w+)/.exec(sql)![1]!;
      return { what: `table ${table}`, done: (s: SchemaState) => s.tables.has(table), sql: [sql] };
    }),
  },
  { version: 2, steps: VERSION_2 },
  {
    // The operator console: one row per server process, rewritten by its heartbeat
    // (last_seen_time in Unix nanoseconds, report a JSON text), and an index for its label counts
    // and searches. Fleetspeak's Go server ignores both.
    version: 3,
    steps: [
      {
        // Galera wants a primary key on every table; version tables made before had none.
        what: "schema_version primary key",
        done: (s) => s.hasIndex("schema_version", "PRIMARY"),
        sql: ["ALTER TABLE schema_version ADD PRIMARY KEY (version)"],
      },
      index("client_labels", "client_labels_label", ["service_name", "label"]),
      {
        what: "table server_heartbeats",
        done: (s) => s.tables.has("server_heartbeats"),
        sql: [
          `CREATE TABLE IF NOT EXISTS server_heartbeats (
            server_id VARCHAR(255) NOT NULL,
            last_seen_time BIGINT NOT NULL,
            report MEDIUMTEXT NOT NULL,
            PRIMARY KEY (server_id)
          ) ${TABLE_OPTIONS}`,
        ],
      },
    ],
  },
];

/** What `migrate --to-fleetspeak` removes: this server's additions, newest first. */
export const OUR_ADDITIONS: { what: string; present: (s: SchemaState) => boolean; drop: (s: SchemaState) => string[] }[] = [
  {
    what: "table server_heartbeats",
    present: (s) => s.tables.has("server_heartbeats"),
    drop: () => ["DROP TABLE server_heartbeats"],
  },
  ...[PENDING_DESTINATION_TRIGGER, ALLOCATION_TRIGGER].map((name) => ({
    what: `trigger ${name}`,
    present: (s: SchemaState) => s.triggers.has(name),
    drop: () => [`DROP TRIGGER ${name}`],
  })),
  ...(
    [
      ["pending_messages", "pending_messages_due"],
      ["messages", "messages_creation_time"],
      ["clients", "clients_last_contact_time"],
      ["client_resource_usage_records", "client_resource_usage_records_client"],
      ["client_labels", "client_labels_label"],
    ] as const
  ).map(([table, name]) => ({
    what: `index ${name}`,
    present: (s: SchemaState) => s.hasIndex(table, name),
    // The index may be the one that serves a foreign key on its first column (MySQL drops its own
    // index for the key once another can serve it): give the key a plain one before dropping it.
    drop: (s: SchemaState) => {
      const first = s.indexes.get(table)!.get(name)![0]!;
      const others = [...s.indexes.get(table)!.entries()].filter(([n, cols]) => n !== name && cols[0] === first);
      const keep = others.length === 0 && first === "client_id" ? [`ALTER TABLE ${table} ADD INDEX (${first})`] : [];
      return [...keep, `ALTER TABLE ${table} DROP INDEX ${name}`];
    },
  })),
  {
    what: "column client_resource_usage_records.record_id",
    present: (s) => s.column("client_resource_usage_records", "record_id") !== undefined,
    drop: () => ["ALTER TABLE client_resource_usage_records DROP COLUMN record_id"],
  },
  ...["destination_client_id", "destination_service_name"].map((column) => ({
    what: `column pending_messages.${column}`,
    present: (s: SchemaState) => s.column("pending_messages", column) !== undefined,
    drop: () => [`ALTER TABLE pending_messages DROP COLUMN ${column}`],
  })),
  ...["schema_version", "schema_migration_lock"].map((table) => ({
    what: `table ${table}`,
    present: (s: SchemaState) => s.tables.has(table),
    drop: () => [`DROP TABLE ${table}`],
  })),
];
