// Picks the backend from the configuration: MySQL/MariaDB when a mysql_data_source_name is given,
// otherwise the embedded SQLite file. Only the composition root and the command line (prune,
// --check --connect) call this; nothing else knows which backend runs.
import type { Logger } from "../../common/log.js";
import { parseMysqlDsn, sqlitePathInDsn } from "../../common/mysql-dsn.js";
import { probeMysql } from "./mysql-connection.js";
import { MysqlStore } from "./mysql-store.js";
import { SqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";

export interface StoreSettings {
  /**
   * Go-style DSN, e.g. "fleetspeak:pw@tcp(db:3306)/fleetspeak". Takes precedence when non-empty;
   * "sqlite:/path/file" names a SQLite file instead.
   */
  mysqlDataSourceName?: string;
  /** Connections per process for MySQL. Default 20. */
  mysqlPoolSize?: number;
  /** SQLite database file, used when there is no DSN. */
  sqlitePath: string;
  /** SQLite: who runs the WAL checkpoints (SqliteStoreOptions.checkpoints), and where that thread logs. */
  sqliteCheckpoints?: "auto" | "thread" | "elsewhere";
  logger?: Logger;
}

export function openStore(s: StoreSettings): Promise<Store> {
  const sqliteInDsn = s.mysqlDataSourceName ? sqlitePathInDsn(s.mysqlDataSourceName) : undefined;
  const sqlite = (path: string) =>
    SqliteStore.open({
      path,
      ...(s.sqliteCheckpoints ? { checkpoints: s.sqliteCheckpoints } : {}),
      ...(s.logger ? { logger: s.logger } : {}),
    });
  if (sqliteInDsn !== undefined) return sqlite(sqliteInDsn);
  if (s.mysqlDataSourceName) {
    return MysqlStore.fromDsn(s.mysqlDataSourceName, s.mysqlPoolSize === undefined ? {} : { poolSize: s.mysqlPoolSize });
  }
  return sqlite(s.sqlitePath);
}

/**
 * What `fleetspeak-server --check --connect` reports: for MySQL, whether the database answers and
 * its schema is one this server runs on (throws with what to fix); nothing for SQLite, a file.
 */
export async function probeStore(s: StoreSettings): Promise<string | undefined> {
  if (!s.mysqlDataSourceName || sqlitePathInDsn(s.mysqlDataSourceName) !== undefined) return undefined;
  return probeMysql(parseMysqlDsn(s.mysqlDataSourceName));
}
