// Where a benchmark's database comes from: made by our server on its first start (--schema ours),
// or made by the real Fleetspeak (Go) server and then adopted by ours (--schema fleetspeak: the
// MySQL database adopted in place at start, the SQLite file converted by `migrate`), so that the
// figures of a deployment that switched from Fleetspeak can be set beside those of a new one.
import { join } from "node:path";
import { SqliteStore } from "../../src/server/store/sqlite-store.js";
import { createGoSchema } from "../../test/support/go-server.js";

export const SCHEMA_ORIGINS = ["ours", "fleetspeak"] as const;
export type SchemaOrigin = (typeof SCHEMA_ORIGINS)[number];

export function parseSchemaOrigin(value: string): SchemaOrigin {
  if (!(SCHEMA_ORIGINS as readonly string[]).includes(value)) {
    throw new Error(`--schema ${value}: choose ours or fleetspeak`);
  }
  return value as SchemaOrigin;
}

/**
 * Prepares the database a bench server is about to open: nothing for "ours"; for "fleetspeak",
 * Fleetspeak's server creates its schema there first (the SQLite file a bench server in `dir`
 * uses is converted as an operator would).
 */
export async function prepareDatabase(origin: SchemaOrigin, target: { mysqlDsn: string } | { dir: string }): Promise<void> {
  if (origin === "ours") return;
  if ("mysqlDsn" in target) {
    await createGoSchema(target.mysqlDsn);
    return;
  }
  const path = join(target.dir, "fleetspeak.sqlite");
  await createGoSchema(`sqlite:${path}`);
  await SqliteStore.migrateFile(path, false);
}
