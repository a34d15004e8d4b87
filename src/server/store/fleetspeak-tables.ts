// The tables of Fleetspeak's (Go) schema, the same in its MySQL and SQLite datastores, in an order
// where every table comes after those it refers to. Any of them without our schema_version table
// marks a database that Fleetspeak made.
export const FLEETSPEAK_TABLES: readonly string[] = [
  "clients",
  "client_labels",
  "client_contacts",
  "client_resource_usage_records",
  "messages",
  "pending_messages",
  "client_contact_messages",
  "broadcasts",
  "broadcast_labels",
  "broadcast_allocations",
  "broadcast_sent",
  "files",
];
