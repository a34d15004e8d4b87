// roundtrip: the time from Admin.InsertMessage to the client's reply reaching the integrator.
// One server process (both components, SQLite), one fleetspeak-client process with a Python
// daemon service that echoes every message (as GRR's agent answers through Fleetspeak's Python
// connector), a Processor standing in for GRR. Messages are sent one at a time, so each figure is
// a latency, not a throughput. Fleetspeak (Go) takes ~2.1 s p50 for this on this kind of machine
// (1 s notification batching on the server, 1 s frame gathering on the client).
//   npm run bench -- roundtrip [--messages 200] [--record]
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin } from "../src/gen/fleetspeak_server/admin_pb.js";
import { randomMessageId } from "../src/common/ids.js";
import {
  ClientProcess,
  daemonServiceText,
  tempDir,
  testDaemonArgv,
  until,
  writeClientConfig,
} from "../test/client/support/client-env.js";
import { freePort } from "../test/support/haproxy.js";
import { startProcessor } from "../test/support/processor-server.js";
import { startServerProcess } from "../test/support/processes.js";
import { testServerPki } from "../test/support/tls.js";
import { appendResultRow, command, gitCommit, machine, printResult, rounded, summarize } from "./loadgen/report.js";

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { messages: { type: "string", default: "200" } },
  });
  const n = Number(values.messages);
  const pki = testServerPki();
  const dir = tempDir("fs-bench-rt-");
  const processor = await startProcessor();
  const frontendPort = await freePort();
  const adminPort = await freePort();
  const server = await startServerProcess({
    name: "server",
    components: `https_config { listen_address: "127.0.0.1:${frontendPort}" certificates: ${JSON.stringify(pki.certChainPem)} key: ${JSON.stringify(pki.keyPem)} }
admin_config { listen_address: "127.0.0.1:${adminPort}" }`,
    services: `services { name: "GRR" factory: "GRPC" config { [type.googleapis.com/fleetspeak.grpcservice.Config] { target: "${processor.address}" insecure: true } } }`,
    sqlitePath: join(dir, "fs.sqlite"),
    env: { FLEETSPEAK_LOG_LEVEL: "info" },
  });
  const files = writeClientConfig({
    ca: pki.ca,
    servers: [`localhost:${frontendPort}`],
    textServices: { "echo.service": daemonServiceText("EchoDaemon", testDaemonArgv("echo")) },
  });
  const client = new ClientProcess(["--config", files.configFile], { TEST_DAEMON_SERVER_SERVICE: "GRR", FLEETSPEAK_LOG_LEVEL: "warn" });
  const admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://127.0.0.1:${adminPort}` }));
  try {
    await until(() => processor.processed.some((m) => m.messageType === "Hello"), 30_000, "the daemon to start");
    const clientId = Buffer.from(processor.processed.find((m) => m.messageType === "Hello")!.source!.clientId);
    const text = (m: (typeof processor.processed)[number]) =>
      m.data ? Buffer.from(anyUnpack(m.data, BytesValueSchema)?.value ?? []).toString() : "";
    const delays: number[] = [];
    for (let i = 0; i < n + 10; i++) {
      const tag = `rt-${i}`;
      const start = performance.now();
      await admin.insertMessage({
        messageId: randomMessageId(),
        source: { serviceName: "GRR" },
        destination: { clientId, serviceName: "EchoDaemon" },
        messageType: "Ping",
        data: anyPack(BytesValueSchema, create(BytesValueSchema, { value: Buffer.from(tag) })),
      });
      // Event-driven wait (no polling interval in the figure): one reply per message, in order.
      for (let seen = processor.processed.length; ; seen++) {
        await processor.waitProcessed(seen + 1);
        const m = processor.processed[seen]!;
        if (m.messageType === "EchoReply" && text(m) === tag) break;
      }
      if (i >= 10) delays.push(performance.now() - start); // the first ten warm up
    }
    const p = rounded(summarize(delays));
    printResult({ scenario: "roundtrip", backend: "sqlite", ...p, fleetspeakP50Ms: 2100 });
    appendResultRow(
      "roundtrip: InsertMessage to the daemon's reply at the Processor (`npm run bench -- roundtrip`)",
      "One server process (both components, SQLite), one fleetspeak-client process with a Python echo daemon, a Processor standing in for GRR; one message at a time, the first ten not counted. Fleetspeak (Go) takes ~2,100 ms p50 here (1 s notification batching on the server, 1 s frame gathering on the client).",
      ["date", "commit", "machine", "command", "messages", "p50 ms", "p95 ms", "p99 ms", "max ms", "Fleetspeak p50 / ours"],
      [
        new Date().toISOString().slice(0, 16).replace("T", " "),
        gitCommit(),
        machine(),
        `\`${command("roundtrip", argv)}\``,
        String(p.n),
        String(p.p50),
        String(p.p95),
        String(p.p99),
        String(p.max),
        `${(2100 / p.p50).toFixed(0)}×`,
      ],
    );
  } finally {
    await client.close();
    await server.stop();
    await processor.close();
  }
}
