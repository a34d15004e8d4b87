// A cheap fleetspeak.grpcservice.Processor for the ingest benchmark, in a process of its own: a
// bare node:http2 server that answers every unary call with an empty message and counts them.
// test/support/processor-server.ts (connect-node, recording every message) costs about one core
// at 2,600 calls/s on the 2-core bench machine, which would cap the figure at the Processor's
// speed rather than the server's; this one costs a fraction of that. It reports its count to the
// parent over IPC when asked, and exits with it.
// startGoProcessor: the same in Go (go-processor/main.go), cheaper still per call; the default of
// the ingest benchmark, because on a 2-core machine every µs the stand-in for GRR spends is taken
// from the server being measured.
import { execFileSync, fork, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fleetspeakGo } from "../../test/support/fleetspeak-go.js";
import { type BenchProcess, track } from "./processes.js";

/** A gRPC length-prefixed message frame holding an empty protobuf (EmptyMessage). */
const EMPTY_REPLY = Buffer.from([0, 0, 0, 0, 0]);
const PROCESS_PATH = "/fleetspeak.grpcservice.Processor/Process";

export interface CountingProcessor {
  address: string;
  /** Calls answered so far. */
  count(): Promise<number>;
  stop(): Promise<void>;
}

export async function startCountingProcessor(): Promise<CountingProcessor> {
  const child = fork(import.meta.filename, ["--serve"], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  return countingProcessor(
    track("processor", child),
    (report) => child.on("message", (m: { type: "listening" | "count"; address?: string; count?: number }) => report(m.type, m.type === "listening" ? m.address! : String(m.count))),
    () => child.send({ type: "count" }),
  );
}

/**
 * The benchmark's side of a counting Processor process, whatever its channel: `listen` passes on
 * what it reports ("listening" with its address, once; "count" with the calls answered, once per
 * `ask`).
 */
async function countingProcessor(
  proc: BenchProcess,
  listen: (report: (what: "listening" | "count", value: string) => void) => void,
  ask: () => void,
): Promise<CountingProcessor> {
  const waiting: Array<(n: number) => void> = [];
  const address = await new Promise<string>((resolve, reject) => {
    listen((what, value) => {
      if (what === "listening") resolve(value);
      else waiting.shift()?.(Number(value));
    });
    void proc.exited.then((code) => reject(new Error(`${proc.name} exited (${code}): ${proc.output()}`)));
  });
  return {
    address,
    count: () =>
      new Promise((resolve) => {
        waiting.push(resolve);
        ask();
      }),
    stop: () => proc.stop(5000),
  };
}

const GO_SOURCE = join(import.meta.dirname, "go-processor/main.go");

/** Debian's Go toolchain, as ../../shared/fleetspeak-go/build.sh installs it. */
function goTool(): string {
  for (const v of ["1.24", "1.23", "1.22"]) {
    const go = `/usr/lib/go-${v}/bin/go`;
    if (existsSync(go)) return go;
  }
  throw new Error("no Go toolchain in /usr/lib/go-1.2x: run scripts/test-deps.sh (it builds Fleetspeak with Go), or use --processor node");
}

/** go-processor/main.go built (once per version of its source) in GOPATH mode against Debian's Go libraries. */
function goProcessorBinary(): string {
  const source = readFileSync(GO_SOURCE);
  const dir = join("/tmp", `fs-bench-go-processor-${createHash("sha256").update(source).digest("hex").slice(0, 12)}`);
  const bin = join(dir, "go-processor");
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const gopath = join(fleetspeakGo().bin, "../gopath");
  execFileSync(goTool(), ["build", "-o", bin, GO_SOURCE], {
    env: { ...process.env, GOPATH: `${gopath}:/usr/share/gocode`, GO111MODULE: "off", GOFLAGS: "", GOCACHE: join(dir, "cache") },
    stdio: ["ignore", "inherit", "inherit"],
  });
  return bin;
}

/** The Go counting Processor (go-processor/main.go) in a process of its own. */
export async function startGoProcessor(): Promise<CountingProcessor> {
  const child = spawn(goProcessorBinary(), [], { stdio: ["pipe", "pipe", "pipe"] });
  return countingProcessor(
    track("go-processor", child),
    (report) =>
      createInterface({ input: child.stdout! }).on("line", (line) => {
        const [what, value] = line.split(" ");
        if (what === "listening" || what === "count") report(what, value!);
      }),
    () => child.stdin!.write("count\n"),
  );
}

function serve(): void {
  let calls = 0;
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    stream.on("data", () => {});
    stream.on("end", () => {
      if (headers[":path"] !== PROCESS_PATH) {
        stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
        return;
      }
      calls++;
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(EMPTY_REPLY);
    });
    stream.on("error", () => {});
  });
  server.listen(0, "127.0.0.1", () => {
    process.send!({ type: "listening", address: `127.0.0.1:${(server.address() as AddressInfo).port}` });
  });
  process.on("message", (m: { type: string }) => {
    if (m.type === "count") process.send!({ type: "count", count: calls });
  });
  process.on("disconnect", () => process.exit(0));
}

if (process.argv.includes("--serve") && process.send) serve();
