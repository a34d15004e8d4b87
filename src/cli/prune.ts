// `prune`: deletes processed and failed messages older than a given age from the datastore, in
// bounded batches so that a running deployment keeps working meanwhile. Pending messages are never
// touched. Meant to run from cron or a systemd timer, e.g.
//   fleetspeak-server prune -mysql_data_source_name 'fs:pw@tcp(db:3306)/fleetspeak' -older_than 720h
import { parseArgs } from "node:util";
import { goStyleArgs } from "../common/go-flags.js";
import { parseGoDuration } from "../common/mysql-dsn.js";
import { openStore } from "../server/store/open-store.js";

const USAGE = `usage: fleetspeak-server prune (-mysql_data_source_name DSN | -sqlite_path FILE) [-older_than 720h] [-batch_size 1000]
  -mysql_data_source_name  Go-style MySQL DSN of the shared database, e.g. "user:pw@tcp(host:3306)/fleetspeak"
  -sqlite_path             the SQLite database file of a single-machine server
  -older_than              delete messages created longer ago than this Go duration (default 720h)
  -batch_size              messages deleted per transaction (default 1000)
`;

export interface PruneIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: PruneIo = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
};

/** Runs the prune command; returns the process exit code (0 done, 1 failed, 2 bad usage). */
export async function runPrune(argv: string[], io: PruneIo = defaultIo): Promise<number> {
  let dsn: string | undefined;
  let sqlitePath: string | undefined;
  let olderThanMs: number;
  let batchSize: number;
  try {
    const { values } = parseArgs({
      args: goStyleArgs(argv),
      options: {
        mysql_data_source_name: { type: "string" },
        sqlite_path: { type: "string" },
        older_than: { type: "string", default: "720h" },
        batch_size: { type: "string", default: "1000" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      io.out(USAGE);
      return 0;
    }
    dsn = values.mysql_data_source_name || undefined;
    sqlitePath = values.sqlite_path || undefined;
    if ((dsn === undefined) === (sqlitePath === undefined)) {
      throw new Error("give exactly one of -mysql_data_source_name and -sqlite_path");
    }
    olderThanMs = parseGoDuration(values.older_than);
    if (!(olderThanMs > 0)) throw new Error(`-older_than must be a positive duration, got ${values.older_than}`);
    batchSize = Number(values.batch_size);
    if (!Number.isInteger(batchSize) || batchSize <= 0) {
      throw new Error(`-batch_size must be a positive integer, got ${values.batch_size}`);
    }
  } catch (e) {
    io.err(`prune: ${(e as Error).message}`);
    io.err(USAGE);
    return 2;
  }

  const cutoff = Date.now() - olderThanMs;
  let store: Awaited<ReturnType<typeof openStore>> | undefined;
  try {
    store = await openStore(dsn ? { mysqlDataSourceName: dsn, mysqlPoolSize: 1, sqlitePath: "" } : { sqlitePath: sqlitePath! });
    const n = await store.pruneMessages(cutoff, batchSize);
    io.out(`prune: deleted ${n} processed or failed messages created before ${new Date(cutoff).toISOString()}`);
    return 0;
  } catch (e) {
    io.err(`prune: ${(e as Error).message}`);
    return 1;
  } finally {
    await store?.close();
  }
}
