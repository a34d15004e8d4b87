// Real processes for end-to-end tests: fleetspeak-server started from its binary with config
// files, and HAProxy with a given config. Every process started here is killed when the test
// process exits, even if a test forgets to stop it.
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseHostPort } from "../../src/common/net-address.js";
import { HAPROXY_BIN } from "./haproxy.js";

const ROOT = resolve(import.meta.dirname, "../..");
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

/** Output kept per process: the last MiB (a long benchmark run must not grow without bound). */
const KEEP = 1024 * 1024;

export interface ManagedProcess {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** What the process wrote to stdout and stderr so far (the last MiB of it). */
  output(): string;
  /** Resolves when the output matches; rejects if the process exits first or on timeout. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends a signal and waits for the exit (SIGKILL after `graceMs`). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

/**
 * Supervises a child process (tests and benchmarks share this): its output is kept for waitFor
 * and error messages, and it is killed when this process exits.
 */
export function manage(name: string, proc: ChildProcess): ManagedProcess {
  live.add(proc);
  let out = "";
  const waiters = new Set<() => void>();
  // FLEETSPEAK_TEST_PROCESS_LOGS=DIR: every supervised process's whole output also goes to a file
  // there, for looking into a failure past the tail that error messages quote.
  const logDir = process.env.FLEETSPEAK_TEST_PROCESS_LOGS;
  const logFile = logDir ? join(logDir, `${name.replace(/[^\w.-]+/g, "_")}-${proc.pid}.log`) : undefined;
  const onData = (d: Buffer) => {
    if (logFile) appendFileSync(logFile, d);
    out += d.toString();
    if (out.length > 2 * KEEP) out = out.slice(-KEEP);
    for (const w of waiters) w();
  };
  proc.stdout?.on("data", onData);
  proc.stderr?.on("data", onData);
  let done = false;
  const exited = new Promise<number | null>((res) => {
    proc.on("exit", (code, sig) => {
      live.delete(proc);
      done = true;
      for (const w of waiters) w();
      res(code ?? (sig ? -1 : null));
    });
  });
  return {
    name,
    proc,
    pid: proc.pid ?? -1,
    exited,
    output: () => out.slice(-KEEP),
    waitFor(re, timeoutMs = 20_000) {
      return new Promise((resolveWait, reject) => {
        const check = () => {
          const m = out.match(re);
          if (m) {
            cleanup();
            resolveWait(m);
          } else if (done) {
            cleanup();
            reject(new Error(`${name} exited before printing ${re}; output:\n${out.slice(-4000)}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`${name} did not print ${re} within ${timeoutMs} ms; output:\n${out.slice(-4000)}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async stop(signal = "SIGTERM", graceMs = 10_000) {
      if (done) return exited;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export interface ServerProcessOptions {
  name: string;
  components: string;
  services: string;
  sqlitePath?: string;
  env?: Record<string, string>;
}

/** Starts bin/fleetspeak-server.js with the given config texts; resolves once it has started. */
export async function startServerProcess(opts: ServerProcessOptions): Promise<ManagedProcess> {
  const dir = mkdtempSync(join(tmpdir(), `fs-${opts.name}-`));
  const comp = join(dir, "server.components.config");
  const svc = join(dir, "server.services.config");
  writeFileSync(comp, opts.components);
  writeFileSync(svc, opts.services);
  const args = [join(ROOT, "bin/fleetspeak-server.js"), "-components_config", comp, "-services_config", svc];
  args.push("-sqlite_path", opts.sqlitePath ?? join(dir, "fleetspeak.sqlite"));
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "info", ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const m = manage(opts.name, proc);
  await m.waitFor(/Fleetspeak server started/, 30_000);
  return m;
}

/**
 * Starts HAProxy in the foreground with a config text; resolves once it listens on every address
 * ("host:port", or a port on 127.0.0.1).
 */
export async function startHaproxyProcess(name: string, config: string, addresses: Array<number | string>): Promise<ManagedProcess> {
  const dir = mkdtempSync(join(tmpdir(), `fs-${name}-`));
  const cfg = join(dir, "haproxy.cfg");
  writeFileSync(cfg, config);
  if (!existsSync(HAPROXY_BIN)) {
    throw new Error(`${name}: ${HAPROXY_BIN} not found; install HAProxy (scripts/test-deps.sh installs it, as npm test does)`);
  }
  const proc = spawn(HAPROXY_BIN, ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
  const m = manage(name, proc);
  const net = await import("node:net");
  const deadline = Date.now() + 10_000;
  for (const address of addresses) {
    const { host, port } = typeof address === "number" ? { host: "127.0.0.1", port: address } : parseHostPort(address);
    for (;;) {
      const ok = await new Promise<boolean>((res) => {
        const s = net.connect(port, host);
        s.once("connect", () => {
          s.destroy();
          res(true);
        });
        s.once("error", () => res(false));
      });
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`${name} is not listening on ${host}:${port}; output:\n${m.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return m;
}
