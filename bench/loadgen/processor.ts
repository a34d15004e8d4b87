// A cheap fleetspeak.grpcservice.Processor for the ingest benchmark, in a process of its own: a
// bare node:http2 server that answers every unary call with an empty message and counts them.
// test/support/processor-server.ts (connect-node, recording every message) costs about one core
// at 2,600 calls/s on the 2-core bench machine, which would cap the figure at the Processor's
// speed rather than the server's; this one costs a fraction of that. It reports its count to the
// parent over IPC when asked, and exits with it.
import { fork } from "node:child_process";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
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
  const proc: BenchProcess = track("processor", child);
  const waiting: Array<(n: number) => void> = [];
  const address = await new Promise<string>((resolve, reject) => {
    child.on("message", (m: { type: string; address?: string; count?: number }) => {
      if (m.type === "listening") resolve(m.address!);
      else if (m.type === "count") waiting.shift()?.(m.count!);
    });
    void proc.exited.then((code) => reject(new Error(`processor exited (${code}): ${proc.output()}`)));
  });
  return {
    address,
    count: () =>
      new Promise((resolve) => {
        waiting.push(resolve);
        child.send({ type: "count" });
      }),
    stop: () => proc.stop(5000),
  };
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
