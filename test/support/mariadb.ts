// Test databases on the MariaDB server the tests use: 127.0.0.1:3306 as root with an empty password,
// or FLEETSPEAK_TEST_MYSQL_DSN (a Go-style DSN; its database part is ignored). Each call creates a
// uniquely named database; drop() removes it. A missing server is a test failure, never a skip.
import { randomBytes } from "node:crypto";
import mysql, { type Connection } from "mysql2/promise";
import { parseMysqlDsn } from "../../src/common/mysql-dsn.js";

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

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `fstest_${process.pid}_${randomBytes(4).toString("hex")}`;
  const admin = await adminConnection();
  try {
    await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
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
