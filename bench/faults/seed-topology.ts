// The seed topology of docs/scaling.md, as real processes: 2 frontend-only servers (notification
// listeners, PROXY protocol), 2 admin-only servers (HTTP notifier), HAProxy in front of each tier
// with the example config's fail-over settings (redispatch of refused connections; frontends
// checked by TCP, admin servers by their health endpoint, which fails while their database does),
// on a database given as one DSN per server (Galera: servers on different nodes).
// Any server can be killed (SIGKILL) or stopped (SIGTERM) and started again on the same ports.
import { freePort } from "../../test/support/haproxy.js";
import { type ManagedProcess, startHaproxyProcess } from "../../test/support/processes.js";
import { type BenchServer, noopServices, type ServerSpec, startBenchServer } from "../loadgen/servers.js";

export const SERVER_NAMES = ["frontend-1", "frontend-2", "admin-1", "admin-2"] as const;
export type ServerName = (typeof SERVER_NAMES)[number];

export interface SeedTopologyOptions {
  /** The database each server uses, in SERVER_NAMES order; one DSN for all of them. */
  dsns: string | readonly string[];
  /** FLEETSPEAK_LOG_LEVEL of the servers (default info: fault runs want their warnings and drain lines). */
  logLevel?: string;
}

export class SeedTopology {
  private readonly running = new Map<ServerName, BenchServer>();
  private readonly specs = new Map<ServerName, ServerSpec>();
  private haproxy: ManagedProcess | undefined;
  clientPort = 0;
  adminPort = 0;

  private constructor(private readonly opts: SeedTopologyOptions) {}

  static async start(opts: SeedTopologyOptions): Promise<SeedTopology> {
    const t = new SeedTopology(opts);
    try {
      await t.startAll();
    } catch (e) {
      await t.stop();
      throw e;
    }
    return t;
  }

  private dsn(name: ServerName): string {
    const { dsns } = this.opts;
    return typeof dsns === "string" ? dsns : dsns[SERVER_NAMES.indexOf(name)]!;
  }

  private async startAll(): Promise<void> {
    const logLevel = this.opts.logLevel ?? "info";
    for (const name of SERVER_NAMES) {
      const frontend = name.startsWith("frontend");
      const spec: ServerSpec = {
        name,
        mysqlDsn: this.dsn(name),
        services: noopServices(),
        logLevel,
        ...(frontend
          ? { frontend: { proxyProtocol: true, port: await freePort() }, notifications: `127.0.0.1:${await freePort()}` }
          : {
              admin: true,
              adminAddress: `127.0.0.1:${await freePort()}`,
              httpNotifier: true,
              healthAddress: `127.0.0.1:${await freePort()}`,
            }),
      };
      this.specs.set(name, spec);
    }
    // Frontends and admin servers start one after the other: they migrate the schema under a lock.
    for (const name of SERVER_NAMES) this.running.set(name, await startBenchServer(this.specs.get(name)!));
    this.clientPort = await freePort();
    this.adminPort = await freePort();
    const frontends = SERVER_NAMES.filter((n) => n.startsWith("frontend"));
    const admins = SERVER_NAMES.filter((n) => n.startsWith("admin"));
    const cfg = [
      "global",
      "  maxconn 4000",
      "defaults",
      "  mode tcp",
      "  timeout connect 2s",
      "  timeout client 20m",
      "  timeout server 20m",
      "  retries 3",
      "  option redispatch 1",
      "frontend fleetspeak_clients",
      `  bind 127.0.0.1:${this.clientPort}`,
      "  default_backend fleetspeak_frontends",
      "backend fleetspeak_frontends",
      "  balance leastconn",
      ...frontends.map(
        (n) => `  server ${n} 127.0.0.1:${this.specs.get(n)!.frontend!.port} send-proxy-v2 check check-send-proxy inter 1s fall 2 rise 2`,
      ),
      "frontend fleetspeak_admin",
      `  bind 127.0.0.1:${this.adminPort}`,
      "  default_backend fleetspeak_admins",
      "backend fleetspeak_admins",
      "  balance roundrobin",
      // An admin server that cannot reach its database (a lost Galera node) is taken out.
      "  option httpchk",
      ...admins.map((n) => {
        const spec = this.specs.get(n)!;
        return `  server ${n} ${spec.adminAddress} check port ${spec.healthAddress!.split(":")[1]} inter 1s fall 2 rise 2`;
      }),
      "",
    ].join("\n");
    this.haproxy = await startHaproxyProcess("haproxy", cfg, [this.clientPort, this.adminPort]);
  }

  server(name: ServerName): BenchServer | undefined {
    return this.running.get(name);
  }

  get servers(): BenchServer[] {
    return [...this.running.values()];
  }

  /** Servers that should be running and exited by themselves. */
  crashed(): string[] {
    return this.servers.filter((s) => s.process.proc.exitCode !== null || s.process.proc.signalCode !== null).map((s) => s.name);
  }

  /** Ends a server with `signal` and waits for it to exit; its output is kept for the caller. */
  async stopServer(name: ServerName, signal: "SIGKILL" | "SIGTERM"): Promise<BenchServer> {
    const s = this.running.get(name);
    if (!s) throw new Error(`${name} is not running`);
    this.running.delete(name);
    const exited = s.process.exited;
    s.process.proc.kill(signal);
    const force = setTimeout(() => s.process.proc.kill("SIGKILL"), 40_000);
    await exited;
    clearTimeout(force);
    return s;
  }

  /** Starts a stopped server again, on the same ports. */
  async startServer(name: ServerName): Promise<void> {
    if (this.running.has(name)) throw new Error(`${name} is running`);
    this.running.set(name, await startBenchServer(this.specs.get(name)!));
  }

  async stop(): Promise<void> {
    await this.haproxy?.stop();
    await Promise.all([...this.running.values()].map((s) => s.stop()));
    this.running.clear();
  }
}
