// A real HAProxy (Debian's /usr/sbin/haproxy) in TCP mode in front of a test server, one
// frontend per PROXY protocol version. Each instance has its own temp dir, pid file and ports, so
// tests may run several at once. HAProxy cannot bind port 0, so free ports are found by binding
// and closing a socket first; if another process takes one in between, HAProxy fails to bind
// and we retry with new ports. A process that exits without stop() still kills its HAProxy.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

export const HAPROXY_BIN = process.env.HAPROXY_BIN ?? "/usr/sbin/haproxy";

export interface HaproxyFrontendSpec {
  name: string;
  /** send-proxy (v1) or send-proxy-v2 on the way to the backend. */
  proxyVersion: 1 | 2;
  /** Adds `check inter <ms>`: HAProxy's health checks, sent with a LOCAL header under v2. */
  checkIntervalMs?: number;
}

export interface RunningHaproxy {
  /** Frontend port by name. */
  port(name: string): number;
  stop(): Promise<void>;
}

/**
 * The ports the kernel hands out as source ports of outgoing connections. A port found free in
 * that range can be taken by some test's outgoing connection before the peer that was meant to
 * listen on it binds (tests with hundreds of clients made this happen), so free ports are drawn
 * from the range just below it, at random, and checked by binding.
 */
function ephemeralLow(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}
const EPHEMERAL_LOW = ephemeralLow();
const handedOut = new Set<number>();

function bindable(port: number, host: string): Promise<number | undefined> {
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once("error", () => resolve(undefined));
    server.listen(port, host, () => {
      const { port: bound } = server.address() as net.AddressInfo;
      server.close(() => resolve(bound));
    });
  });
}

/** A port free on `host` now, outside the kernel's ephemeral range where the machine allows it. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const span = Math.min(16_000, EPHEMERAL_LOW - 10_000);
  for (let i = 0; span > 1000 && i < 50; i++) {
    const port = EPHEMERAL_LOW - 1 - Math.floor(Math.random() * span);
    if (handedOut.has(port)) continue;
    if ((await bindable(port, host)) === port) {
      handedOut.add(port);
      return port;
    }
  }
  const port = await bindable(0, host);
  if (port === undefined) throw new Error(`cannot find a free port on ${host}`);
  return port;
}

/** The first of `n` consecutive ports free on `host` now (below the ephemeral range, as freePort). */
export async function freePortRange(n: number, host = "127.0.0.1"): Promise<number> {
  const span = Math.min(16_000, EPHEMERAL_LOW - 10_000) - n;
  for (let i = 0; span > 1000 && i < 100; i++) {
    const first = EPHEMERAL_LOW - n - Math.floor(Math.random() * span);
    let all = true;
    for (let p = first; all && p < first + n; p++) all = !handedOut.has(p) && (await bindable(p, host)) === p;
    if (all) {
      for (let p = first; p < first + n; p++) handedOut.add(p);
      return first;
    }
  }
  throw new Error(`cannot find ${n} consecutive free ports on ${host}`);
}

function renderConfig(backend: string, frontends: Array<HaproxyFrontendSpec & { port: number }>): string {
  const lines = [
    "global",
    "  maxconn 1000",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 60s",
    "  timeout server 60s",
  ];
  for (const f of frontends) {
    const check = f.checkIntervalMs ? ` check inter ${f.checkIntervalMs}` : "";
    lines.push(
      `frontend fe_${f.name}`,
      `  bind 127.0.0.1:${f.port}`,
      `  default_backend be_${f.name}`,
      `backend be_${f.name}`,
      `  server backend1 ${backend} ${f.proxyVersion === 2 ? "send-proxy-v2" : "send-proxy"}${check}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** Starts HAProxy forwarding every frontend to `backend` ("127.0.0.1:port"). */
export async function startHaproxy(backend: string, frontends: HaproxyFrontendSpec[]): Promise<RunningHaproxy> {
  const dir = await mkdtemp(join(tmpdir(), "fs-haproxy-"));
  const configPath = join(dir, "haproxy.cfg");
  const pidPath = join(dir, "haproxy.pid");
  let lastError = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const withPorts: Array<HaproxyFrontendSpec & { port: number }> = [];
    for (const f of frontends) withPorts.push({ ...f, port: await freePort() });
    await writeFile(configPath, renderConfig(backend, withPorts));
    try {
      await run(["-c", "-q", "-f", configPath]);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw new Error(`haproxy rejected the generated config ${configPath}: ${(e as Error).message}`);
    }
    try {
      // In daemon mode the launcher exits only after the listening sockets are bound.
      await run(["-D", "-f", configPath, "-p", pidPath]);
    } catch (e) {
      lastError = (e as Error).message;
      continue;
    }
    const pid = Number((await readFile(pidPath, "utf8")).trim());
    const killOnExit = () => signal(pid, "SIGKILL");
    process.once("exit", killOnExit);
    return {
      port: (name) => {
        const f = withPorts.find((x) => x.name === name);
        if (!f) throw new Error(`no haproxy frontend named ${name}`);
        return f.port;
      },
      stop: async () => {
        process.removeListener("exit", killOnExit);
        signal(pid, "SIGTERM");
        const deadline = Date.now() + 5000;
        while (isAlive(pid)) {
          if (Date.now() > deadline) signal(pid, "SIGKILL");
          await new Promise((r) => setTimeout(r, 20));
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`haproxy did not start after 5 attempts; last error:\n${lastError}`);
}

async function run(args: string[]): Promise<void> {
  try {
    await promisify(execFile)(HAPROXY_BIN, args);
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${HAPROXY_BIN} ${args.join(" ")}: ${err.stderr?.trim() || err.message}`);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
