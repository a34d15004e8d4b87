// `migrate`: moves a datastore between Fleetspeak (Go) and this server, and back.
//   fleetspeak-server migrate [--components_config FILE]       adopt / bring up to date
//   fleetspeak-server migrate --to-fleetspeak [...]             hand the database back to Fleetspeak
// MySQL/MariaDB: a server adopts a database that Fleetspeak made on its own at start, additively
// (Fleetspeak keeps running on it); this command does the same without starting a server, and
// --to-fleetspeak removes what this server added. SQLite: Fleetspeak's own SQLite layout differs
// from ours, so the conversion is this command's (in one transaction either way), never implicit.
import { parseArgs } from "node:util";
import { goStyleArgs } from "../common/go-flags.js";
import { sqlitePathInDsn } from "../common/mysql-dsn.js";
import { DEFAULT_COMPONENTS_CONFIG, loadComponentsConfig } from "../server/config.js";
import { MysqlStore } from "../server/store/mysql-store.js";
import { SqliteStore } from "../server/store/sqlite-store.js";

const DEFAULT_SQLITE_PATH = "/var/lib/fleetspeak-server/fleetspeak.sqlite";

export const MIGRATE_USAGE = `usage: fleetspeak-server migrate [--to-fleetspeak] [--components_config FILE | --mysql_data_source_name DSN | --sqlite_path FILE]

Adopts a database that Fleetspeak (Go) made, or brings one of this server's up to date; with
--to-fleetspeak, hands it back to Fleetspeak (Go). Stop the servers of the deployment first for
SQLite; MySQL/MariaDB can stay in use.
  --components_config       read the datastore from this components config (default ${DEFAULT_COMPONENTS_CONFIG})
  --mysql_data_source_name  Go-style MySQL DSN, e.g. "user:pw@tcp(host:3306)/fleetspeak" ("sqlite:/path" names a SQLite file)
  --sqlite_path             SQLite file used when the components config names no MySQL database
                            (default $FLEETSPEAK_SQLITE_PATH or ${DEFAULT_SQLITE_PATH})
  --to-fleetspeak           MySQL: remove this server's trigger, columns, indexes and version table
                            (Fleetspeak also runs without this step). SQLite: convert the file to
                            Fleetspeak's own layout (required before Fleetspeak's server can use it).`;

export interface MigrateIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: MigrateIo = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
};

type Target = { mysql: string } | { sqlite: string };

function targetOf(values: Record<string, string | boolean | undefined>): Target {
  const dsn = values.mysql_data_source_name as string | undefined;
  const sqlitePath = values.sqlite_path as string | undefined;
  if (dsn !== undefined && sqlitePath !== undefined) {
    throw new Error("give at most one of --mysql_data_source_name and --sqlite_path");
  }
  const fromDsn = (d: string): Target => {
    const path = sqlitePathInDsn(d);
    return path === undefined ? { mysql: d } : { sqlite: path };
  };
  if (dsn) return fromDsn(dsn);
  if (sqlitePath) return { sqlite: sqlitePath };
  const cfg = loadComponentsConfig((values.components_config as string | undefined) ?? DEFAULT_COMPONENTS_CONFIG);
  if (cfg.mysqlDataSourceName) return fromDsn(cfg.mysqlDataSourceName);
  return { sqlite: process.env.FLEETSPEAK_SQLITE_PATH ?? DEFAULT_SQLITE_PATH };
}

/** Runs the migrate command; returns the process exit code (0 done, 1 failed, 2 bad usage). */
export async function runMigrate(argv: string[], io: MigrateIo = defaultIo): Promise<number> {
  let target: Target;
  let toFleetspeak: boolean;
  try {
    const { values } = parseArgs({
      args: goStyleArgs(argv).map((a) => a.replace(/^--to_fleetspeak\b/, "--to-fleetspeak")),
      options: {
        components_config: { type: "string" },
        mysql_data_source_name: { type: "string" },
        sqlite_path: { type: "string" },
        "to-fleetspeak": { type: "boolean", default: false },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      io.out(MIGRATE_USAGE);
      return 0;
    }
    toFleetspeak = values["to-fleetspeak"] === true;
    target = targetOf(values);
  } catch (e) {
    io.err(`migrate: ${(e as Error).message}`);
    io.err(MIGRATE_USAGE);
    return 2;
  }
  try {
    if ("sqlite" in target) {
      io.out(`migrate: ${await SqliteStore.migrateFile(target.sqlite, toFleetspeak)}`);
      return 0;
    }
    const store = await MysqlStore.fromDsn(target.mysql, { poolSize: 1, skipMigration: toFleetspeak });
    try {
      if (toFleetspeak) {
        const removed = await store.revertToFleetspeak();
        io.out(
          removed.length === 0
            ? "migrate: the database has nothing of this server's; Fleetspeak (Go) can run on it as it is"
            : `migrate: removed ${removed.join(", ")}; the schema is Fleetspeak's (Go) own again`,
        );
      } else {
        const said = {
          created: "created this server's schema in the empty database",
          adopted: "adopted a database made by Fleetspeak (Go): added this server's columns, indexes and trigger (Fleetspeak keeps working on it)",
          upgraded: "brought the schema up to date",
          current: "the schema is up to date; nothing to do",
        } as const;
        io.out(`migrate: ${said[store.origin]}`);
      }
    } finally {
      await store.close();
    }
    return 0;
  } catch (e) {
    io.err(`migrate: ${(e as Error).message}`);
    return 1;
  }
}
