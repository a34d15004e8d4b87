// The SQLite schema, as an ordered list of migrations. Same tables, columns and units as the MySQL
// schema (see mysql-schema.ts for the notes on choices); IDs are BLOBs rather than the hex TEXT of
// Fleetspeak's own SQLite backend, since no other program reads this file.
import type { Migration } from "./migrations.js";

export const SQLITE_MIGRATIONS: Migration[] = [
  {
    version: 1,
    statements: [
      `CREATE TABLE clients (
        client_id BLOB NOT NULL PRIMARY KEY,
        client_key BLOB,
        blacklisted INTEGER NOT NULL,
        last_contact_time INTEGER NOT NULL,
        last_contact_address TEXT,
        last_contact_streaming_to TEXT,
        last_clock_seconds INTEGER,
        last_clock_nanos INTEGER
      ) WITHOUT ROWID`,
      "CREATE INDEX clients_last_contact_time ON clients(last_contact_time)",
      `CREATE TABLE client_labels (
        client_id BLOB NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        service_name TEXT NOT NULL,
        label TEXT NOT NULL,
        PRIMARY KEY (client_id, service_name, label)
      ) WITHOUT ROWID`,
      `CREATE TABLE client_contacts (
        client_contact_id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id BLOB NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        time INTEGER NOT NULL,
        sent_nonce BLOB NOT NULL,
        received_nonce BLOB NOT NULL,
        address TEXT
      )`,
      "CREATE INDEX client_contacts_client_id ON client_contacts(client_id)",
      `CREATE TABLE client_resource_usage_records (
        client_id BLOB NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        scope TEXT NOT NULL,
        pid INTEGER,
        process_start_time INTEGER,
        client_timestamp INTEGER,
        server_timestamp INTEGER,
        process_terminated INTEGER NOT NULL,
        mean_user_cpu_rate REAL,
        max_user_cpu_rate REAL,
        mean_system_cpu_rate REAL,
        max_system_cpu_rate REAL,
        mean_resident_memory_mib INTEGER,
        max_resident_memory_mib INTEGER,
        mean_num_fds INTEGER,
        max_num_fds INTEGER
      )`,
      "CREATE INDEX client_resource_usage_records_client ON client_resource_usage_records(client_id, server_timestamp)",
      `CREATE TABLE messages (
        message_id BLOB NOT NULL PRIMARY KEY,
        source_client_id BLOB,
        source_service_name TEXT NOT NULL,
        source_message_id BLOB,
        destination_client_id BLOB,
        destination_service_name TEXT NOT NULL,
        message_type TEXT,
        creation_time_seconds INTEGER NOT NULL,
        creation_time_nanos INTEGER NOT NULL,
        processed_time_seconds INTEGER,
        processed_time_nanos INTEGER,
        validation_info BLOB,
        failed INTEGER,
        failed_reason TEXT,
        annotations BLOB
      )`,
      "CREATE INDEX messages_creation_time ON messages(creation_time_seconds)",
      `CREATE TABLE pending_messages (
        message_id BLOB NOT NULL PRIMARY KEY REFERENCES messages(message_id) ON DELETE CASCADE,
        for_server INTEGER NOT NULL,
        destination_client_id BLOB NOT NULL,
        destination_service_name TEXT NOT NULL,
        retry_count INTEGER NOT NULL,
        scheduled_time INTEGER NOT NULL,
        data_type_url TEXT,
        data_value BLOB
      )`,
      "CREATE INDEX pending_messages_due ON pending_messages(destination_client_id, scheduled_time)",
      `CREATE TABLE client_contact_messages (
        client_contact_id INTEGER NOT NULL REFERENCES client_contacts(client_contact_id) ON DELETE CASCADE,
        message_id BLOB NOT NULL REFERENCES messages(message_id) ON DELETE CASCADE,
        PRIMARY KEY (client_contact_id, message_id)
      ) WITHOUT ROWID`,
      "CREATE INDEX client_contact_messages_message_id ON client_contact_messages(message_id)",
      `CREATE TABLE broadcasts (
        broadcast_id BLOB NOT NULL PRIMARY KEY,
        source_service_name TEXT NOT NULL,
        destination_service_name TEXT,
        message_type TEXT NOT NULL,
        expiration_time_seconds INTEGER,
        expiration_time_nanos INTEGER,
        data_type_url TEXT,
        data_value BLOB,
        sent INTEGER NOT NULL DEFAULT 0,
        allocated INTEGER NOT NULL DEFAULT 0,
        message_limit INTEGER NOT NULL
      )`,
      `CREATE TABLE broadcast_labels (
        broadcast_id BLOB NOT NULL REFERENCES broadcasts(broadcast_id) ON DELETE CASCADE,
        service_name TEXT NOT NULL,
        label TEXT NOT NULL,
        PRIMARY KEY (broadcast_id, service_name, label)
      ) WITHOUT ROWID`,
      `CREATE TABLE broadcast_sent (
        broadcast_id BLOB NOT NULL REFERENCES broadcasts(broadcast_id) ON DELETE CASCADE,
        client_id BLOB NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        PRIMARY KEY (client_id, broadcast_id)
      ) WITHOUT ROWID`,
      "CREATE INDEX broadcast_sent_broadcast_id ON broadcast_sent(broadcast_id)",
      `CREATE TABLE files (
        service TEXT NOT NULL,
        name TEXT NOT NULL,
        modified_time_nanos INTEGER NOT NULL,
        data BLOB,
        PRIMARY KEY (service, name)
      )`,
    ],
  },
  {
    // The operator console: one row per server process, rewritten by its heartbeat, and an index
    // for its label counts and searches.
    version: 2,
    statements: [
      "CREATE INDEX IF NOT EXISTS client_labels_label ON client_labels(service_name, label)",
      `CREATE TABLE IF NOT EXISTS server_heartbeats (
        server_id TEXT NOT NULL PRIMARY KEY,
        last_seen_time INTEGER NOT NULL,
        report TEXT NOT NULL
      )`,
    ],
  },
];
