// Test scaffolding for the client: Fleetspeak-format config directories, Python stubs for the test
// daemons, and the fleetspeak-client binary run as a real process.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import type { CertAndKey } from "../../../src/common/certs.js";
import type { Logger } from "../../../src/common/log.js";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const PYTHON = "/usr/bin/python3";
export const TEST_DAEMON = join(REPO, "test/client/python/test_daemon.py");

export function tempDir(prefix = "fsclient-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface ClientFiles {
  dir: string;
  configFile: string;
  configDir: string;
  stateFile: string;
}

export interface ClientConfigOptions {
  ca: CertAndKey;
  servers: string[];
  streaming?: boolean;
  labels?: string[];
  serverName?: string;
  certificateHeader?: string;
  /** Config field `proxy`: an http:// proxy URL. */
  proxy?: string;
  /** communicator.txt contents; default: fast failure retry for tests. */
  communicator?: string;
  /** textservices/<name> → text ClientServiceConfig. */
  textServices?: Record<string, string>;
  /** services/<name> → binary SignedClientServiceConfig. */
  signedServices?: Record<string, Uint8Array>;
}

function quote(s: string): string {
  return JSON.stringify(s);
}

/** Writes a Fleetspeak-style client config tree into a new temporary directory. */
export function writeClientConfig(opts: ClientConfigOptions, dir = tempDir()): ClientFiles {
  const configDir = join(dir, "etc");
  mkdirSync(join(configDir, "textservices"), { recursive: true });
  mkdirSync(join(configDir, "services"), { recursive: true });
  const stateFile = join(dir, "var", "fleetspeak-client.state");
  mkdirSync(dirname(stateFile), { recursive: true });
  const lines = [
    "# written by the client tests, in the format of fleetspeak-config's linux client config",
    `trusted_certs: ${quote(opts.ca.certPem)}`,
    ...opts.servers.map((s) => `server: ${quote(s)}`),
    ...(opts.labels ?? []).map((l) => `client_label: ${quote(l)}`),
    "filesystem_handler <",
    `  configuration_directory: ${quote(configDir)}`,
    `  state_file: ${quote(stateFile)}`,
    ">",
    `streaming: ${opts.streaming ?? true}`,
  ];
  if (opts.serverName) lines.push(`server_name: ${quote(opts.serverName)}`);
  if (opts.certificateHeader) lines.push(`client_certificate_header: ${quote(opts.certificateHeader)}`);
  if (opts.proxy) lines.push(`proxy: ${quote(opts.proxy)}`);
  const configFile = join(configDir, "client.config");
  writeFileSync(configFile, `${lines.join("\n")}\n`);
  writeFileSync(
    join(configDir, "communicator.txt"),
    opts.communicator ?? "min_failure_delay_seconds: 1\nmax_poll_delay_seconds: 1\nmax_buffer_delay_seconds: 1\n",
  );
  for (const [name, text] of Object.entries(opts.textServices ?? {})) {
    writeFileSync(join(configDir, "textservices", name), text);
  }
  for (const [name, bytes] of Object.entries(opts.signedServices ?? {})) {
    writeFileSync(join(configDir, "services", name), bytes);
  }
  return { dir, configFile, configDir, stateFile };
}

/** A text ClientServiceConfig for a Daemon service, as GRR and the sandboxes write them. */
export function daemonServiceText(name: string, argv: string[], extra = ""): string {
  return `name: ${quote(name)}
factory: "Daemon"
config: {
  [type.googleapis.com/fleetspeak.daemonservice.Config]: {
${argv.map((a) => `    argv: ${quote(a)}`).join("\n")}
${extra}
  }
}
`;
}

let stubs: string | undefined;

/** Generates the Python protobuf modules from our .proto files once; returns a PYTHONPATH. */
export function pythonPath(): string {
  if (!stubs) {
    const out = tempDir("fspy-");
    execFileSync(
      PYTHON,
      [
        "-m",
        "grpc_tools.protoc",
        "-Iproto",
        `--python_out=${out}`,
        "proto/fleetspeak/common.proto",
        "proto/fleetspeak/system.proto",
        "proto/fleetspeak_channel/channel.proto",
        "proto/fleetspeak_monitoring/resource.proto",
      ],
      { cwd: REPO, stdio: ["ignore", "ignore", "inherit"] },
    );
    stubs = `${out}:${join(REPO, "test/client/python")}`;
  }
  return stubs;
}

/** The daemon command line for a test-daemon mode. */
export function testDaemonArgv(mode: string, ...args: string[]): string[] {
  return ["/usr/bin/env", `PYTHONPATH=${pythonPath()}`, PYTHON, TEST_DAEMON, mode, ...args];
}

/** The fleetspeak-client binary running as a child process, its log lines collected. */
export class ClientProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  /**
   * `direct` runs the script itself (its shebang's node flags apply), as an installed binary runs.
   * `executable` runs that file instead, from its own directory, with `env` as its whole
   * environment (the single executable on a machine without Node.js).
   */
  constructor(args: string[], env: Record<string, string> = {}, direct = false, executable?: string) {
    const bin = join(REPO, "bin/fleetspeak-client.js");
    const testEnv = { ...process.env, FLEETSPEAK_LOG_LEVEL: "debug", FLEETSPEAK_DAEMON_RESPAWN_DELAY_MS: "500", ...env };
    this.child = executable
      ? spawn(executable, args, { cwd: dirname(executable), env, stdio: ["ignore", "inherit", "pipe"] })
      : spawn(direct ? bin : process.execPath, direct ? args : [bin, ...args], {
          cwd: tmpdir(),
          env: testEnv,
          stdio: ["ignore", "inherit", "pipe"],
        });
    let partial = "";
    this.child.stderr!.on("data", (b: Buffer) => {
      partial += b.toString("utf8");
      const parts = partial.split("\n");
      partial = parts.pop()!;
      this.lines.push(...parts);
      if (process.env.FS_TEST_VERBOSE) for (const p of parts) process.stderr.write(`client: ${p}\n`);
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid!;
  }

  kill(signal: NodeJS.Signals = "SIGTERM"): void {
    this.child.kill(signal);
  }

  /** Waits for a log line containing `text`; returns it. */
  async waitForLine(text: string | RegExp, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => (typeof text === "string" ? l.includes(text) : text.test(l)));
      if (hit) return hit;
      if (Date.now() > deadline) {
        throw new Error(`no log line matching ${text}; last lines:\n${this.lines.slice(-20).join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the client (SIGKILL if it is still there after the test). */
  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGTERM");
      const t = setTimeout(() => this.child.kill("SIGKILL"), 15_000);
      await this.exited;
      clearTimeout(t);
    }
  }
}

/** A pino logger whose lines (parsed JSON) a test can inspect. */
export function captureLogger(): { log: Logger; lines: Array<Record<string, unknown>>; text: () => string } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString("utf8").split("\n")) if (l) lines.push(JSON.parse(l));
      if (process.env.FS_TEST_VERBOSE) process.stderr.write(chunk);
      cb();
    },
  });
  const log = pino({ level: "debug" }, stream);
  return { log, lines, text: () => lines.map((l) => JSON.stringify(l)).join("\n") };
}

/** Waits until `pred` holds, checking every 50 ms. */
export async function until(pred: () => boolean, timeoutMs = 20_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
