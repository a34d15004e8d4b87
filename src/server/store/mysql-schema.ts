// The MySQL/MariaDB schema, as an ordered list of migrations.
//
// Tables and column names follow Fleetspeak's MySQL schema (server/mysql/mysql.go) so that its
// documented pruning procedure (DB-PRUNING.md: delete clients / messages / broadcasts and let the
// ON DELETE CASCADE foreign keys clean up) stays valid. Units are Fleetspeak's:
//   clients.last_contact_time, client_contacts.time, files.modified_time_nanos and the resource
//   usage times are Unix nanoseconds; pending_messages.scheduled_time is Unix microseconds;
//   message and broadcast times are separate seconds + nanos columns; nonces are 8 bytes
//   little-endian; contact IDs are client_contact_id in hex.
// Differences, each for a reason:
// - pending_messages carries destination_client_id (empty for server-bound messages) and
//   destination_service_name, with an index (destination_client_id, scheduled_time): claiming a
//   client's due messages, per-service quotas, the server backlog (destination_client_id = '')
//   and clientsWithDueMessages are index range scans without a join. Its primary key is
//   message_id alone (Fleetspeak: (for_server, message_id)) so that lookups by message ID use it.
// - No broadcast_allocations table: saveBroadcastMessage counts atomically in the broadcasts row
//   (UPDATE … SET sent = sent + 1 WHERE sent < message_limit), so the limit holds across servers
//   without leases. The allocated column is kept (always 0) for readers of Fleetspeak's schema.
// - messages has an index on creation_time_seconds for pruning; no index on
//   destination_client_id (pending lookups go through pending_messages).
// - source_message_id is VARBINARY(255) instead of VARBINARY(16), client_contact_id BIGINT.
// - Every table uses utf8mb4 with a binary collation: names and labels compare byte for byte.
// - schema_version records the version, and migrations are applied under GET_LOCK.
// Requirements: MySQL 8.0+ or MariaDB 10.6+ (FOR UPDATE SKIP LOCKED, JSON_TABLE). Sessions run
// at READ COMMITTED (see mysql-store.ts); with binary logging on, binlog_format must be ROW or
// MIXED (MariaDB's default), as MySQL requires for READ COMMITTED writes.
import type { Migration } from "./migrations.js";

const TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

export const MYSQL_MIGRATIONS: Migration[] = [
  {
    version: 1,
    statements: [
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
    ],
  },
  {
    // The operator console: one row per server process, rewritten by its heartbeat
    // (last_seen_time in Unix nanoseconds, report a JSON text). Fleetspeak's Go server ignores it.
    version: 10,
    statements: [
      `CREATE TABLE IF NOT EXISTS server_heartbeats (
        server_id VARCHAR(255) NOT NULL,
        last_seen_time BIGINT NOT NULL,
        report MEDIUMTEXT NOT NULL,
        PRIMARY KEY (server_id)
      ) ${TABLE_OPTIONS}`,
    ],
  },
];
