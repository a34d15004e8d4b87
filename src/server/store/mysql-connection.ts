// How this server connects to MySQL/MariaDB from a parsed mysql_data_source_name: the options the
// store's pool uses, and a probe for `fleetspeak-server --check --connect` that asks the database
// what the store would ask at start (does it answer, may this user in, is the schema one this
// server can run on or adopt) without creating or migrating anything.
import mysql, { type ConnectionOptions, type PoolConnection, type RowDataPacket } from "mysql2/promise";
import type { MysqlConnectionOptions } from "../../common/mysql-dsn.js";
import { plannedMigration } from "./mysql-migrate.js";

/** Where the database is, for messages: "host:port" or "socket /path". */
export function mysqlWhere(c: MysqlConnectionOptions): string {
  return c.socketPath ? `socket ${c.socketPath}` : `${c.host ?? "127.0.0.1"}:${c.port ?? 3306}`;
}

/** The connection options every connection of ours uses (the pool adds its own). */
export function mysqlConnectionOptions(c: MysqlConnectionOptions): ConnectionOptions {
  const o: ConnectionOptions = {
    user: c.user,
    password: c.password,
    database: c.database,
    charset: c.charset ?? "utf8mb4",
    connectTimeout: c.connectTimeoutMs ?? 10_000,
  };
  if (c.socketPath) o.socketPath = c.socketPath;
  else {
    o.host = c.host ?? "127.0.0.1";
    o.port = c.port ?? 3306;
  }
  if (c.tls === "true") o.ssl = {};
  else if (c.tls === "skip-verify" || c.tls === "preferred") o.ssl = { rejectUnauthorized: false };
  return o;
}

/** Connects once and describes what a start would find; throws an Error saying what to fix. */
export async function probeMysql(c: MysqlConnectionOptions): Promise<string> {
  const where = `database ${c.database} at ${mysqlWhere(c)}`;
  const pool = mysql.createPool({ ...mysqlConnectionOptions(c), connectTimeout: c.connectTimeoutMs ?? 5000, connectionLimit: 1 });
  try {
    let conn: PoolConnection;
    try {
      conn = await pool.getConnection();
    } catch (e) {
      const err = e as { errno?: number; code?: string; message: string };
      const hint =
        err.errno === 1045 || err.errno === 1044
          ? "check the user and password in mysql_data_source_name and the user's grants"
          : err.errno === 1049
            ? `create it (CREATE DATABASE ${c.database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin) or fix mysql_data_source_name`
            : "check that the database server runs and that this machine may reach it";
      throw new Error(`${where} as ${JSON.stringify(c.user)}: ${err.code ?? "error"}: ${err.message}; ${hint}`);
    }
    try {
      const [[server]] = await conn.query<RowDataPacket[]>("SELECT VERSION() AS v");
      return `${where} answers (${server!.v}; ${await plannedMigration(conn, where)})`;
    } finally {
      conn.release();
    }
  } finally {
    await pool.end().catch(() => {});
  }
}
