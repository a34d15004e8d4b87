// Python gRPC (Debian's python3-grpcio, the stack GRR's connector uses) as an independent peer for
// interop tests: stubs generated from our proto/ at test time, and helpers to run the scripts in
// test/support/python/ with them.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

/** The system interpreter: Debian's python3-grpcio lives there, not in a pyenv on PATH. */
export const PYTHON = "/usr/bin/python3";
const PROTO_ROOT = "proto";
const SCRIPTS = join(import.meta.dirname, "python");
const run = promisify(execFile);

let stubs: Promise<string> | undefined;

function protoFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...protoFiles(path));
    else if (name.endsWith(".proto")) out.push(relative(PROTO_ROOT, path));
  }
  return out;
}

/**
 * Generates Python modules (`fleetspeak/common_pb2.py`, `fleetspeak_server/admin_pb2_grpc.py`, …)
 * for every file in proto/ into a temporary directory, once per process, and returns it.
 */
export function pythonStubs(): Promise<string> {
  stubs ??= (async () => {
    const out = mkdtempSync(join(tmpdir(), "fs-pystubs-"));
    const files = protoFiles(PROTO_ROOT);
    try {
      await run(PYTHON, [
        "-m",
        "grpc_tools.protoc",
        `-I${PROTO_ROOT}`,
        `--python_out=${out}`,
        `--grpc_python_out=${out}`,
        ...files,
      ]);
    } catch (e) {
      const err = e as Error & { stderr?: string };
      throw new Error(
        `generating Python stubs from ${PROTO_ROOT}/ failed (is python3-grpc-tools installed?): ${err.stderr || err.message}`,
      );
    }
    return out;
  })();
  return stubs;
}

async function pythonEnv(): Promise<NodeJS.ProcessEnv> {
  return { ...process.env, PYTHONPATH: await pythonStubs(), PYTHONUNBUFFERED: "1" };
}

/** Runs a script of test/support/python/ to completion and returns its standard output. */
export async function runPythonScript(script: string, args: string[], timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await run(PYTHON, [join(SCRIPTS, script), ...args], {
      env: await pythonEnv(),
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string; stdout?: string };
    throw new Error(`${script} failed: ${err.message}\nstdout: ${err.stdout}\nstderr: ${err.stderr}`);
  }
}

export interface PythonProcess {
  readonly child: ChildProcess;
  /** Lines the script printed, as they arrive. */
  readonly lines: string[];
  /** Resolves with the first line matching, waiting for it if needed. */
  waitLine(match: (line: string) => boolean): Promise<string>;
  stop(): Promise<void>;
}

/** Starts a long-running script of test/support/python/ (a server), collecting its output lines. */
export async function startPythonScript(script: string, args: string[]): Promise<PythonProcess> {
  const child = spawn(PYTHON, [join(SCRIPTS, script), ...args], {
    env: await pythonEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters: { match: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(line);
    for (const w of waiters.filter((w) => w.match(line))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(line);
    }
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    child,
    lines,
    waitLine(match) {
      const found = lines.find(match);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        waiters.push({ match, resolve });
        exited.then(() => reject(new Error(`${script} exited before printing the expected line; stderr:\n${stderr}`)));
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}
