// Test databases on the MariaDB server the tests use: 127.0.0.1:3306 as root with an empty password,
// or FLEETSPEAK_TEST_MYSQL_DSN (a Go-style DSN; its database part is ignored). Each call creates a
// uniquely named database; drop() removes it. A missing server is a test failure, never a skip.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { chownSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mysql, { type Connection } from "mysql2/promise";
import { parseMysqlDsn } from "../../src/common/mysql-dsn.js";
import { freePort } from "./haproxy.js";
import { installMariadbDatadir, privateMariadbdArgs } from "./mariadb-instance.js";

const DEFAULT_DSN = "root@tcp(127.0.0.1:3306)/";

export interface TestDatabase {
  /** Go-style DSN naming the new database, for mysql_data_source_name or MysqlStore.fromDsn. */
  dsn: string;
  name: string;
  drop(): Promise<void>;
}

function baseDsn(): string {
  return process.env.FLEETSPEAK_TEST_MYSQL_DSN ?? DEFAULT_DSN;
}

/** The DSN with its database replaced by `name`, parameters kept. */
export function dsnForDatabase(dsn: string, name: string): string {
  const slash = dsn.lastIndexOf("/");
  const q = dsn.indexOf("?", slash);
  return `${dsn.slice(0, slash + 1)}${name}${q >= 0 ? dsn.slice(q) : ""}`;
}

/** A connection to the test server with no database selected (for CREATE/DROP DATABASE, KILL…). */
export async function adminConnection(): Promise<Connection> {
  const dsn = baseDsn();
  const o = parseMysqlDsn(dsnForDatabase(dsn, ""));
  try {
    return await mysql.createConnection({
      ...(o.socketPath ? { socketPath: o.socketPath } : { host: o.host, port: o.port }),
      user: o.user,
      password: o.password,
      connectTimeout: 5000,
    });
  } catch (e) {
    throw new Error(
      `cannot reach the test MariaDB at ${o.socketPath ?? `${o.host}:${o.port}`} as ${o.user} ` +
        `(${(e as Error).message}). Start it with: ` +
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql " +
        "(or set FLEETSPEAK_TEST_MYSQL_DSN to a server you can use, e.g. root@tcp(127.0.0.1:3306)/)",
      { cause: e },
    );
  }
}

export interface TestDatabaseOptions {
  /**
   * The database's default collation; null leaves the server's default, as an operator's plain
   * CREATE DATABASE does (what Fleetspeak's Go server then creates its tables with).
   */
  collation?: string | null;
}

export async function createTestDatabase(opts: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const name = `fstest_${process.pid}_${randomBytes(4).toString("hex")}`;
  const collation = opts.collation === undefined ? "utf8mb4_bin" : opts.collation;
  const admin = await adminConnection();
  try {
    await admin.query(`CREATE DATABASE \`${name}\`${collation === null ? "" : ` COLLATE ${collation}`}`);
  } finally {
    await admin.end();
  }
  return {
    dsn: dsnForDatabase(baseDsn(), name),
    name,
    async drop() {
      const c = await adminConnection();
      try {
        await c.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * A private mariadbd on its own port and data directory, for tests that stop, crash and restart
 * the database server (the shared one on 3306 is never touched). Needs root (mariadbd runs as the
 * mysql user) and the mariadb-server package.
 */
export interface ThrowawayMariadb {
  port: number;
  /** Go-style DSN for a database on this server (user fs, password fspw). */
  dsn(database: string): string;
  /** An admin connection (user fs, all privileges). */
  connect(): Promise<Connection>;
  /** Crashes the server (SIGKILL). */
  kill(): Promise<void>;
  /** Starts it again on the same data directory and port. */
  start(): Promise<void>;
  /** Stops it and removes its data directory. */
  destroy(): Promise<void>;
}

export async function startThrowawayMariadb(): Promise<ThrowawayMariadb> {
  const uid = Number(execFileSync("id", ["-u", "mysql"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "mysql"]).toString().trim());
  const dir = mkdtempSync(join(tmpdir(), "fs-mariadb-"));
  chownSync(dir, uid, gid);
  await installMariadbDatadir(join(dir, "data"), "socket");
  const port = await freePort();
  const socket = join(dir, "mysqld.sock");
  let proc: ChildProcess | undefined;

  const connectAs = (user: string, password: string) =>
    mysql.createConnection({ host: "127.0.0.1", port, user, password, connectTimeout: 2000 });

  async function start(): Promise<void> {
    proc = spawn(
      "/usr/sbin/mariadbd",
      [
        ...privateMariadbdArgs({ data: join(dir, "data"), runDir: dir, port, errorLog: join(dir, "err.log") }),
        "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=16M",
        "--skip-log-bin",
      ],
      { stdio: "ignore" },
    );
    for (let i = 0; i < 150; i++) {
      try {
        execFileSync("mariadb-admin", [`--socket=${socket}`, "--silent", "ping"], { stdio: "ignore" });
        return;
      } catch {
        if (proc.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`throwaway mariadbd on port ${port} did not start; see ${join(dir, "err.log")}`);
  }

  async function kill(): Promise<void> {
    if (!proc || proc.exitCode !== null) return;
    const exited = once(proc, "exit");
    proc.kill("SIGKILL");
    await exited;
  }

  await start();
  execFileSync("mariadb", [
    `--socket=${socket}`,
    "-e",
    "CREATE USER 'fs'@'127.0.0.1' IDENTIFIED BY 'fspw'; GRANT ALL ON *.* TO 'fs'@'127.0.0.1'",
  ]);

  return {
    port,
    dsn: (database) => `fs:fspw@tcp(127.0.0.1:${port})/${database}`,
    connect: () => connectAs("fs", "fspw"),
    kill,
    start,
    async destroy() {
      if (proc && proc.exitCode === null) {
        const exited = once(proc, "exit");
        proc.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
