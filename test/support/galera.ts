// A 3-node MariaDB Galera cluster on this machine, for tests and benchmarks: three mariadbd
// processes on 127.0.0.1, each with its own data directory and ports (SQL, group communication,
// IST, SST), replicating through Debian's Galera 4 provider (package galera-4, which .ci/run
// installs). Node 1 bootstraps the cluster; the others join it by state transfer (rsync). Any node
// can be killed and started again: it rejoins by IST (or SST) and the test can wait until it is
// synced. Failure detection is tuned down to seconds so that tests do not wait for the defaults.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import mysql, { type RowDataPacket } from "mysql2/promise";
import { freePort } from "./haproxy.js";
import { installMariadbDatadir, privateMariadbdArgs } from "./mariadb-instance.js";

const exec = promisify(execFile);

export const GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so";

export interface GaleraNode {
  readonly name: string;
  /** SQL port on 127.0.0.1. */
  readonly port: number;
  /** Go-style DSN for database `name` on this node (root, no password). */
  dsn(database: string): string;
  /** The node's wsrep status: local state ("Synced", "Joining", …), cluster size, readiness. */
  status(): Promise<{ state: string; clusterSize: number; ready: boolean }>;
  /** Crashes the node (SIGKILL). */
  kill(): Promise<void>;
  /** Starts a stopped node again: it rejoins the cluster. Resolves once it is synced. */
  start(): Promise<void>;
  readonly running: boolean;
  /** The node's error log, for diagnostics. */
  log(): string;
  /**
   * An HTTP health check on 127.0.0.1:healthPort: 200 while the node is synced and ready, 503
   * otherwise (what Galera's clustercheck script answers), for HAProxy's httpchk.
   */
  readonly healthPort: number;
}

export interface GaleraCluster {
  readonly nodes: readonly GaleraNode[];
  /** Creates a database (replicated to every node). */
  createDatabase(name: string): Promise<void>;
  /** Resolves once every running node is synced and sees them all. */
  waitSynced(timeoutMs?: number): Promise<void>;
  /**
   * An HAProxy `listen` section on 127.0.0.1:port in front of the cluster in single-writer mode:
   * node 1 takes every connection while it is healthy, the others are backups.
   */
  haproxySingleWriter(port: number): string;
  destroy(): Promise<void>;
}

interface NodePorts {
  sql: number;
  group: number;
  ist: number;
  sst: number;
  health: number;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

async function connect(port: number) {
  return mysql.createConnection({ host: "127.0.0.1", port, user: "root", password: "", connectTimeout: 3000 });
}

export async function startGaleraCluster(size = 3): Promise<GaleraCluster> {
  if (!existsSync(GALERA_PROVIDER)) {
    throw new Error(`${GALERA_PROVIDER} is missing: install Debian's galera-4 package (.ci/run installs it)`);
  }
  const dir = mkdtempSync(join(tmpdir(), "fs-galera-"));
  const uid = Number((await exec("id", ["-u", "mysql"])).stdout.trim());
  const gid = Number((await exec("id", ["-g", "mysql"])).stdout.trim());
  chownSync(dir, uid, gid);
  const ports: NodePorts[] = [];
  for (let i = 0; i < size; i++) {
    ports.push({ sql: await freePort(), group: await freePort(), ist: await freePort(), sst: await freePort(), health: 0 });
  }
  const clusterAddress = `gcomm://${ports.map((p) => `127.0.0.1:${p.group}`).join(",")}`;

  const nodes: GaleraNode[] = [];
  const cluster: GaleraCluster = {
    nodes,
    async createDatabase(name) {
      const running = nodes.filter((n) => n.running);
      const c = await connect(running[0]!.port);
      try {
        await c.query(`CREATE DATABASE IF NOT EXISTS \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
      } finally {
        await c.end();
      }
      // DDL replicates in total order, but the other nodes may apply it a moment later.
      for (const n of running.slice(1)) {
        const other = await connect(n.port);
        try {
          for (let i = 0; ; i++) {
            const [rows] = await other.query<RowDataPacket[]>("SHOW DATABASES LIKE ?", [name]);
            if (rows.length > 0) break;
            if (i > 200) throw new Error(`database ${name} did not reach Galera ${n.name}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        } finally {
          await other.end();
        }
      }
    },
    async waitSynced(timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const running = nodes.filter((n) => n.running);
        const states = await Promise.all(running.map((n) => n.status().catch(() => undefined)));
        if (states.every((s) => s?.state === "Synced" && s.ready && s.clusterSize === running.length)) return;
        if (Date.now() > deadline) {
          throw new Error(`Galera cluster not synced within ${timeoutMs} ms: ${JSON.stringify(states)}; logs in ${dir}`);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    haproxySingleWriter: (port) =>
      [
        "listen galera",
        `  bind 127.0.0.1:${port}`,
        "  mode tcp",
        "  timeout connect 1s",
        "  timeout client 20m",
        "  timeout server 20m",
        "  option httpchk",
        // A writer that fails its check has its sessions cut, so that the pools reconnect to the
        // new writer at once; when it is back, the backups' sessions are cut (one writer again).
        "  default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions",
        ...nodes.map((n, i) => `  server ${n.name} 127.0.0.1:${n.port} check port ${n.healthPort}${i === 0 ? "" : " backup"}`),
        "",
      ].join("\n"),
    async destroy() {
      await Promise.all(nodes.map((n) => n.kill()));
      await Promise.all(health.map((h) => new Promise((r) => h.close(r))));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const health: Server[] = [];

  for (let i = 0; i < size; i++) {
    const name = `node${i + 1}`;
    const data = join(dir, name);
    mkdirSync(data);
    chownSync(data, uid, gid);
    mkdirSync(join(dir, `${name}-run`));
    chownSync(join(dir, `${name}-run`), uid, gid);
    if (i === 0) {
      await installMariadbDatadir(data, "normal");
    }
    // A rejoining node copies its state (SST) from the last node (the last but one for that one),
    // and only from another when that one cannot: rsync blocks its donor while it copies, and with
    // HAProxy in single-writer mode the first nodes are the writers.
    const donor = `node${i + 1 === size ? size - 1 : size},`;
    const node = galeraNode(name, dir, data, ports[i]!, clusterAddress, i === 0, donor);
    nodes.push(node);
    const check = await startHealthCheck(node);
    ports[i]!.health = check.port;
    health.push(check.server);
  }
  try {
    // One at a time: a joiner needs a donor that is synced.
    for (const n of nodes) await n.start();
    await cluster.waitSynced();
  } catch (e) {
    await cluster.destroy().catch(() => {});
    throw e;
  }
  return cluster;
}

function galeraNode(
  name: string,
  dir: string,
  data: string,
  p: NodePorts,
  clusterAddress: string,
  bootstrap: boolean,
  sstDonor: string,
): GaleraNode {
  let proc: ChildProcess | undefined;
  let firstStart = true;
  const errorLog = join(dir, `${name}.err`);
  const node: GaleraNode = {
    name,
    port: p.sql,
    get healthPort() {
      return p.health;
    },
    get running() {
      return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    },
    dsn: (database) => `root@tcp(127.0.0.1:${p.sql})/${database}`,
    async status() {
      const c = await connect(p.sql);
      try {
        const [rows] = await c.query<RowDataPacket[]>(
          "SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_ready')",
        );
        const v = new Map(rows.map((r) => [String(r.Variable_name), String(r.Value)]));
        return {
          state: v.get("wsrep_local_state_comment") ?? "",
          clusterSize: Number(v.get("wsrep_cluster_size") ?? 0),
          ready: v.get("wsrep_ready") === "ON",
        };
      } finally {
        await c.end();
      }
    },
    async kill() {
      const running = proc;
      if (!running || !node.running) return;
      const exited = new Promise((r) => running.once("exit", r));
      running.kill("SIGKILL");
      await exited;
    },
    async start() {
      const args = [
        ...privateMariadbdArgs({ data, runDir: join(dir, `${name}-run`), port: p.sql, errorLog }),
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=64M",
        // Durability comes from replication to the other nodes, as in most Galera deployments.
        "--innodb-flush-log-at-trx-commit=2",
        "--binlog-format=ROW",
        "--default-storage-engine=InnoDB",
        "--innodb-autoinc-lock-mode=2",
        "--wsrep-on=ON",
        `--wsrep-provider=${GALERA_PROVIDER}`,
        "--wsrep-cluster-name=fleetspeak-test",
        `--wsrep-node-name=${name}`,
        `--wsrep-node-address=127.0.0.1:${p.group}`,
        `--wsrep-cluster-address=${clusterAddress}`,
        [
          "--wsrep-provider-options=",
          `gmcast.listen_addr=tcp://127.0.0.1:${p.group};ist.recv_addr=127.0.0.1:${p.ist};gcache.size=128M;`,
          // A dead node is noticed in seconds (defaults: 5 s suspect, 15 s inactive).
          "evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.inactive_check_period=PT0.5S;evs.keepalive_period=PT0.5S",
        ].join(""),
        "--wsrep-sst-method=rsync",
        `--wsrep-sst-donor=${sstDonor}`,
        `--wsrep-sst-receive-address=127.0.0.1:${p.sst}`,
        // Reads wait until this node has applied what other nodes committed before them.
        "--wsrep-sync-wait=1",
        ...(bootstrap && firstStart ? ["--wsrep-new-cluster"] : []),
      ];
      firstStart = false;
      const started = spawn("/usr/sbin/mariadbd", args, { stdio: "ignore" });
      proc = started;
      live.add(started);
      started.once("exit", () => live.delete(started));
      const deadline = Date.now() + 120_000;
      for (;;) {
        if (!node.running) throw new Error(`Galera ${name} exited while starting; see ${errorLog}:\n${node.log().slice(-3000)}`);
        const s = await node.status().catch(() => undefined);
        if (s?.state === "Synced" && s.ready) return;
        if (Date.now() > deadline) throw new Error(`Galera ${name} not synced within 120 s; see ${errorLog}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    log: () => (existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""),
  };
  return node;
}

/** The node's clustercheck-style HTTP health check, on a free port. */
async function startHealthCheck(node: GaleraNode): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => {
    const answer = (ok: boolean, text: string) => {
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
      res.end(`${text}\n`);
    };
    if (!node.running) return answer(false, "not running");
    node.status().then(
      (s) => answer(s.state === "Synced" && s.ready, s.state),
      (e: Error) => answer(false, e.message),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}
