// A private MariaDB server for tests that stop and restart the database mid-run: its own data
// directory and port, so the shared instance on 3306 (which other tests use) is never touched.
// Needs the mariadb-server package (mariadb-install-db, mariadbd), as .ci/run installs.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chownSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import mysql from "mysql2/promise";
import { freePort } from "./haproxy.js";

const exec = promisify(execFile);

export interface MariadbInstance {
  port: number;
  /** Go-style DSN for database `name` (created by createDatabase). */
  dsn(name: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and deletes its data directory. */
  destroy(): Promise<void>;
}

function logTail(path: string): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-15).join("\n");
  } catch (e) {
    return `(cannot read ${path}: ${(e as Error).message})`;
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * Initialises an empty MariaDB data directory (owned by the mysql user). mariadb-install-db now
 * and then fails on a machine busy with other tests' servers; it is tried twice, and its own
 * output is in the error.
 */
export async function installMariadbDatadir(data: string, rootAuth: "normal" | "socket"): Promise<void> {
  const args = ["--no-defaults", "--user=mysql", `--datadir=${data}`, `--auth-root-authentication-method=${rootAuth}`, "--skip-test-db"];
  for (let attempt = 1; ; attempt++) {
    try {
      await exec("mariadb-install-db", args);
      return;
    } catch (e) {
      const err = e as Error & { stderr?: string; stdout?: string };
      if (attempt < 2) {
        rmSync(data, { recursive: true, force: true });
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      const output = `${err.stderr ?? ""}${err.stdout ?? ""}`.trim().split("\n").slice(-10).join("\n");
      throw new Error(
        `cannot initialise a MariaDB data directory in ${data} (is the mariadb-server package installed? scripts/test-deps.sh installs it): ${err.message.split("\n")[0]}\n${output}`,
      );
    }
  }
}

/**
 * The arguments every private mariadbd of the tests starts with: its data directory, and a run
 * directory (owned by the mysql user) for its socket (`mysqld.sock`), pid file and temporary
 * files. The temporary files must not go to the shared /tmp: a mariadbd starting up removes the
 * temporary-table files it finds in its tmpdir, which there belong to other tests' running servers.
 */
export function privateMariadbdArgs(o: { data: string; runDir: string; port: number; errorLog: string }): string[] {
  return [
    "--no-defaults",
    "--user=mysql",
    `--datadir=${o.data}`,
    `--socket=${join(o.runDir, "mysqld.sock")}`,
    `--port=${o.port}`,
    "--bind-address=127.0.0.1",
    `--tmpdir=${o.runDir}`,
    `--pid-file=${join(o.runDir, "mysqld.pid")}`,
    `--log-error=${o.errorLog}`,
  ];
}

export async function startMariadbInstance(): Promise<MariadbInstance> {
  const dir = mkdtempSync(join(tmpdir(), "fs-mariadb-"));
  const data = join(dir, "data");
  const uid = Number((await exec("id", ["-u", "mysql"])).stdout.trim());
  const gid = Number((await exec("id", ["-g", "mysql"])).stdout.trim());
  chownSync(dir, uid, gid);
  await installMariadbDatadir(data, "normal");
  const port = await freePort();
  let proc: ChildProcess | undefined;

  const start = async () => {
    proc = spawn(
      "/usr/sbin/mariadbd",
      [
        ...privateMariadbdArgs({ data, runDir: dir, port, errorLog: join(dir, "error.log") }),
        "--innodb-buffer-pool-size=64M",
        "--skip-name-resolve",
      ],
      { stdio: "ignore" },
    );
    const started = proc;
    const deadline = Date.now() + 60_000;
    while (!(await canConnect(port))) {
      const why = started.exitCode !== null ? `exited with ${started.exitCode}` : Date.now() > deadline ? "not listening after 60 s" : "";
      if (why) throw new Error(`private MariaDB did not start on port ${port} (${why}); its log:\n${logTail(join(dir, "error.log"))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const stop = async () => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(t);
  };
  process.on("exit", () => proc?.kill("SIGKILL"));
  await start();

  return {
    port,
    dsn: (name) => `root@tcp(127.0.0.1:${port})/${name}`,
    async createDatabase(name) {
      const c = await mysql.createConnection({ host: "127.0.0.1", port, user: "root", password: "" });
      try {
        await c.query(`CREATE DATABASE IF NOT EXISTS \`${name}\``);
      } finally {
        await c.end();
      }
    },
    start,
    stop,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
