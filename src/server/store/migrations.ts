// Schema versions. Each backend keeps an ordered list of migrations; on start a store applies the
// ones above the version recorded in the database's schema_version table, and refuses to run
// against a database whose version is newer than the newest it knows.
import { SchemaVersionError } from "./errors.js";

export interface Versioned {
  version: number;
}

/** A migration made of idempotent statements (SQLite runs them in one transaction). */
export interface Migration extends Versioned {
  statements: string[];
}

export function latestVersion(migrations: Versioned[]): number {
  return migrations.length === 0 ? 0 : migrations[migrations.length - 1]!.version;
}

/**
 * The migrations still to apply to a database at `current`; throws if it is ahead of us.
 * `database` names it in the error ("database fleetspeak at db:3306").
 */
export function pendingMigrations<M extends Versioned>(migrations: M[], current: number, database: string): M[] {
  const known = latestVersion(migrations);
  if (current > known) {
    throw new SchemaVersionError(
      `${database} has schema version ${current} but this server knows up to ${known}; upgrade the server`,
    );
  }
  return migrations.filter((m) => m.version > current);
}
