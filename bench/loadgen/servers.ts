// Fleetspeak servers for the benchmarks: the real binary (bin/fleetspeak-server.js) started as its
// own process from config files written here, so that its memory and CPU can be read from /proc
// and profiled (node flags such as --cpu-prof go before the script).
import { mkdtempSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, freePortRange } from "../../test/support/haproxy.js";
import { benchPki } from "./identities.js";
import { type BenchProcess, start } from "./processes.js";

const ROOT = resolve(import.meta.dirname, "../..");
/** The server binary; BENCH_SERVER_BIN points at another tree's for A/B comparisons of a change. */
const SERVER_BIN = process.env.BENCH_SERVER_BIN ?? join(ROOT, "bin/fleetspeak-server.js");

export interface ServerSpec {
  name: string;
  /** A frontend listening on 127.0.0.1 (on `port`, to restart one where a load balancer expects it; a free port by default). */
  frontend?: { proxyProtocol?: boolean; port?: number };
  admin?: boolean;
  /** host:port for the admin server (to restart one where a load balancer expects it); free port by default. */
  adminAddress?: string;
  /** Open a notification listener (frontends of a split setup), on this host:port if given. */
  notifications?: boolean | string;
  /** With notifications and several workers: worker_notification_port, each worker notified directly. */
  workerNotificationPorts?: boolean;
  /** notification_use_http_notifier (admin servers of a split setup). */
  httpNotifier?: boolean;
  /** health_check_config on this host:port (200 while the database answers, 503 otherwise). */
  healthAddress?: string;
  /** Go-style DSN; SQLite in the run's directory otherwise. */
  mysqlDsn?: string;
  /** Services config text. */
  services: string;
  nodeFlags?: string[];
  /** Where the process runs (CPU profiles and heap snapshots land here); a temp dir by default. */
  dir?: string;
  /** FLEETSPEAK_LOG_LEVEL; default warn (the benchmarks measure the server, not its logging). */
  logLevel?: string;
  /** --workers: the server's worker processes (default: the binary's, one per CPU). */
  workers?: number;
}

export interface BenchServer {
  readonly name: string;
  readonly process: BenchProcess;
  readonly pid: number;
  readonly dir: string;
  frontendPort?: number;
  adminAddress?: string;
  notificationAddress?: string;
  /** worker_notification_port, when the spec asked for it. */
  workerNotificationPort?: number;
  metricsAddress: string;
  stop(): Promise<void>;
}

/** A services config with one NOOP service (the server needs no service for messages to clients). */
export function noopServices(name = "TestService"): string {
  return `services {\n  name: "${name}"\n  factory: "NOOP"\n}\n`;
}

/** A services config forwarding `name` to a Processor, as GRR's frontend does. */
export function grpcServices(name: string, target: string, maxParallelism = 0): string {
  return `services {
  name: "${name}"
  factory: "GRPC"
${maxParallelism > 0 ? `  max_parallelism: ${maxParallelism}\n` : ""}  config {
    [type.googleapis.com/fleetspeak.grpcservice.Config] {
      target: "${target}"
      insecure: true
    }
  }
}
`;
}

export async function startBenchServer(spec: ServerSpec): Promise<BenchServer> {
  const dir = spec.dir ?? mkdtempSync(join(tmpdir(), `fs-bench-${spec.name}-`));
  const pki = benchPki();
  const lines: string[] = [];
  const server: Partial<BenchServer> & { name: string; dir: string } = { name: spec.name, dir };
  if (spec.mysqlDsn) lines.push(`mysql_data_source_name: ${JSON.stringify(spec.mysqlDsn)}`);
  if (spec.frontend) {
    server.frontendPort = spec.frontend.port ?? (await freePort());
    lines.push(
      "https_config: <",
      `  listen_address: "127.0.0.1:${server.frontendPort}"`,
      `  certificates: ${JSON.stringify(pki.chainPem)}`,
      `  key: ${JSON.stringify(pki.serverKeyPem)}`,
      ">",
    );
    if (spec.frontend.proxyProtocol) lines.push("proxy_protocol: true");
  }
  if (spec.admin) {
    server.adminAddress = spec.adminAddress ?? `127.0.0.1:${await freePort()}`;
    lines.push(`admin_config: < listen_address: "${server.adminAddress}" >`);
  }
  if (spec.notifications) {
    server.notificationAddress = typeof spec.notifications === "string" ? spec.notifications : `127.0.0.1:${await freePort()}`;
    lines.push(`notification_listen_address: "${server.notificationAddress}"`);
    lines.push(`notification_public_address: "${server.notificationAddress}"`);
    if (spec.workerNotificationPorts) {
      server.workerNotificationPort = await freePortRange(spec.workers ?? availableParallelism());
      lines.push(`worker_notification_port: ${server.workerNotificationPort}`);
    }
  }
  if (spec.httpNotifier) lines.push("notification_use_http_notifier: true");
  if (spec.healthAddress) lines.push(`health_check_config: < listen_address: "${spec.healthAddress}" >`);
  server.metricsAddress = `127.0.0.1:${await freePort()}`;
  lines.push(`stats_config: < address: "${server.metricsAddress}" >`);

  const comp = join(dir, "server.components.config");
  const svc = join(dir, "server.services.config");
  writeFileSync(comp, `${lines.join("\n")}\n`);
  writeFileSync(svc, spec.services);
  const args = [
    ...(spec.nodeFlags ?? []),
    SERVER_BIN,
    "-components_config",
    comp,
    "-services_config",
    svc,
    "-sqlite_path",
    join(dir, "fleetspeak.sqlite"),
    ...(spec.workers !== undefined ? ["--workers", String(spec.workers)] : []),
  ];
  const proc = start(spec.name, process.execPath, args, {
    cwd: dir,
    env: { ...process.env, FLEETSPEAK_LOG_LEVEL: spec.logLevel ?? "warn" },
  });
  // The metrics listener is the last thing a server starts; it answering means the server is up.
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.proc.exitCode !== null) throw new Error(`${spec.name} exited while starting; output:\n${proc.output()}`);
    try {
      if ((await fetch(`http://${server.metricsAddress}/metrics`)).ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${spec.name} did not start within 60 s; output:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    ...server,
    metricsAddress: server.metricsAddress,
    process: proc,
    pid: proc.pid,
    stop: () => proc.stop(30_000),
  };
}

/** Reads a few gauges from a server's /metrics (Prometheus text). */
export async function readMetrics(address: string, names: string[]): Promise<Record<string, number>> {
  let text: string;
  try {
    text = await (await fetch(`http://${address}/metrics`)).text();
  } catch {
    // E.g. the process is out of file descriptors for one more connection.
    return {};
  }
  const out: Record<string, number> = {};
  for (const name of names) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "m").exec(text);
    if (m) out[name] = Number(m[1]);
  }
  return out;
}

/** The server's log lines at warn level or above seen so far (the last `n`), for diagnostics. */
export function warnings(server: BenchServer, n = 5): string[] {
  const lines = server.process.output().split("\n").filter((l) => /"level":(40|50|60)/.test(l));
  return lines.slice(-n).map((l) => l.slice(0, 400));
}
