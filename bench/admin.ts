// Benchmark of the admin server and the server services (npm run bench -- admin [options]):
//  1. InsertMessage calls per second into one admin server process, from concurrent gRPC callers
//     running in a separate, lean load process (so that the figure is the server's, not the caller's),
//     each message for a known client whose stream is recorded (so the notify path runs);
//  2. messages per second that the service manager forwards to a Processor (GRPC factory, the
//     Processor in its own process) and stores with their result, fed as clients' contacts of
//     10 messages each.
// Both on SQLite and on MariaDB (127.0.0.1:3306 as root, a fresh database dropped afterwards).
//
// Options: --seconds N (per measurement, default 10), --concurrency N (InsertMessage calls in
// flight, default 64), --connections N (HTTP/2 connections of the load process, default 4),
// --contacts N (contacts in flight for forwarding, default 10: 100 messages, the service's
// default max_parallelism), --backend sqlite|mariadb|both, --measure insert|forward|both|keepalive
// (keepalive: empty KeepAlive calls instead of InsertMessage, the gRPC stack's cost alone),
// --grpc ours|grpc-js (which gRPC stack serves the admin API and calls the Processor: the
// project's own, or @grpc/grpc-js through bench/grpc-js.ts; default ours).
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomFillSync } from "node:crypto";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { pino } from "pino";
import { clientMessageId } from "../src/common/ids.js";
import { EmptyMessageSchema, type Message, MessageSchema } from "../src/gen/fleetspeak/common_pb.js";
import { ConfigSchema as GrpcConfigSchema, Processor } from "../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { ServiceConfigSchema } from "../src/gen/fleetspeak_server/services_pb.js";
import { Admin } from "../src/gen/fleetspeak_server/admin_pb.js";
import { ADMIN_MAX_RECEIVE_BYTES, startAdminServer } from "../src/server/admin/admin-server.js";
import { AdminService } from "../src/server/admin/admin-service.js";
import { ServiceManager } from "../src/server/services/manager.js";
import { defaultServiceFactories } from "../src/server/services/service-factories.js";
import type { Store } from "../src/server/store/store.js";
import { openBackend } from "../test/support/stores.js";
import { grpcJsUnaryClient, startGrpcJsServer } from "./grpc-js.js";

const THIS_FILE = fileURLToPath(import.meta.url);
const CLIENTS = 1000;
const PAYLOAD_BYTES = 1024;

interface Options {
  seconds: number;
  concurrency: number;
  connections: number;
  contacts: number;
  backends: ("sqlite" | "mariadb")[];
  measure: "insert" | "forward" | "both" | "keepalive";
  grpc: "ours" | "grpc-js";
}

function parseOptions(args: string[]): Options {
  const o: Options = {
    seconds: 10,
    concurrency: 64,
    connections: 4,
    contacts: 10,
    backends: ["sqlite", "mariadb"],
    measure: "both",
    grpc: "ours",
  };
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.replace(/^--?/, "");
    const value = args[++i];
    if (value === undefined) throw new Error(`bench admin: option --${name} needs a value`);
    if (name === "backend") {
      if (value === "both") o.backends = ["sqlite", "mariadb"];
      else if (value === "sqlite" || value === "mariadb") o.backends = [value];
      else throw new Error(`bench admin: --backend must be sqlite, mariadb or both, got ${JSON.stringify(value)}`);
    } else if (name === "measure") {
      if (value !== "insert" && value !== "forward" && value !== "both" && value !== "keepalive") {
        throw new Error(`bench admin: --measure must be insert, forward, both or keepalive, got ${JSON.stringify(value)}`);
      }
      o.measure = value;
    } else if (name === "grpc") {
      if (value !== "ours" && value !== "grpc-js") {
        throw new Error(`bench admin: --grpc must be ours or grpc-js, got ${JSON.stringify(value)}`);
      }
      o.grpc = value;
    } else if (name === "seconds" || name === "concurrency" || name === "connections" || name === "contacts") {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`bench admin: --${name} must be a positive number`);
      o[name] = n;
    } else {
      throw new Error(`bench admin: unknown option --${name} (known: --seconds --concurrency --connections --contacts --backend --measure --grpc)`);
    }
  }
  return o;
}

/** Starts this file in another process in one of its worker roles; resolves with its first line. */
function startWorker(args: string[]): Promise<{ child: ChildProcess; firstLine: string; lines: AsyncIterator<string> }> {
  const child = spawn(process.execPath, ["--import", "tsx", THIS_FILE, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return lines.next().then((first) => {
    if (first.done) throw new Error(`bench worker ${args[0]} exited before reporting`);
    return { child, firstLine: first.value, lines };
  });
}


async function addClients(store: Store): Promise<Uint8Array[]> {
  const ids: Uint8Array[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const id = randomBytes(8);
    await store.addClient(id, { key: randomBytes(91), labels: [], blacklisted: false });
    await store.recordClientContact({
      clientId: id,
      sentNonce: 1n,
      receivedNonce: 1n,
      address: "192.0.2.1:1",
      streamingTo: "local",
    });
    ids.push(id);
  }
  return ids;
}

async function benchInsertMessage(backend: "sqlite" | "mariadb", o: Options): Promise<string> {
  const { store, cleanup } = await openBackend(backend);
  const logger = pino({ level: "warn" });
  let notified = 0;
  const service = new AdminService({
    store,
    notifier: {
      newMessageForClient: async () => {
        notified++;
      },
    },
    logger,
  });
  const server =
    o.grpc === "grpc-js"
      ? await startGrpcJsServer(Admin, service, ADMIN_MAX_RECEIVE_BYTES)
      : await startAdminServer({ listenAddress: "127.0.0.1:0", service, logger });
  try {
    const ids = await addClients(store);
    const idsHex = ids.map((id) => Buffer.from(id).toString("hex")).join(",");
    const method = o.measure === "keepalive" ? "KeepAlive" : "InsertMessage";
    const cpu0 = process.cpuUsage();
    const worker = await startWorker([
      "--insert-load",
      method,
      server.address,
      String(o.seconds),
      String(o.concurrency),
      String(o.connections),
      idsHex,
    ]);
    const r = JSON.parse(worker.firstLine) as { calls: number; errors: number; seconds: number; p50: number; p99: number };
    const cpu = process.cpuUsage(cpu0);
    const cpuPerCall = (cpu.user + cpu.system) / Math.max(1, r.calls);
    const pending = await store.getPendingMessageCount(ids);
    const rate = r.calls / r.seconds;
    return (
      `${method} ${backend}: ${rate.toFixed(0)} calls/s (${r.calls} calls in ${r.seconds.toFixed(1)} s, ` +
      `${r.errors} errors, latency p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms, ` +
      `concurrency ${o.concurrency} over ${o.connections} connections; ${pending} stored, ${notified} notifications; ` +
      `admin process CPU ${cpuPerCall.toFixed(0)} µs/call; gRPC: ${o.grpc})`
    );
  } finally {
    await server.close();
    await cleanup();
  }
}

async function benchForwarding(backend: "sqlite" | "mariadb", o: Options): Promise<string> {
  const { store, cleanup } = await openBackend(backend);
  const processor = await startWorker(["--processor"]);
  const port = Number(processor.firstLine.replace("PORT ", ""));
  const manager = new ServiceManager({
    store,
    logger: pino({ level: "warn" }),
    lookupClient: (id) => store.getClientData(id),
    factories: defaultServiceFactories(o.grpc === "grpc-js" ? { grpc: { makeClient: grpcJsUnaryClient } } : {}),
  });
  try {
    await manager.installService(
      create(ServiceConfigSchema, {
        name: "GRR",
        factory: "GRPC",
        config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: `127.0.0.1:${port}`, insecure: true })),
      }),
    );
    const clients = await addClients(store);
    const contacts = await Promise.all(
      clients.map((clientId) =>
        store.recordClientContact({ clientId, sentNonce: 2n, receivedNonce: 2n, address: "192.0.2.1:1" }),
      ),
    );
    const payload = anyPack(BytesValueSchema, create(BytesValueSchema, { value: randomBytes(PAYLOAD_BYTES) }));
    const contactOf = (i: number): Message[] => {
      const clientId = clients[i % CLIENTS]!;
      return Array.from({ length: 10 }, () => {
        const sourceMessageId = randomBytes(16);
        return create(MessageSchema, {
          messageId: clientMessageId(clientId, "GRR", sourceMessageId),
          source: { clientId, serviceName: "GRR" },
          sourceMessageId,
          destination: { serviceName: "GRR" },
          messageType: "MessageList",
          data: payload,
        });
      });
    };
    const cpu0 = process.cpuUsage();
    let sent = 0;
    let forwarded = 0;
    let next = 0;
    const start = performance.now();
    const deadline = start + o.seconds * 1000;
    await Promise.all(
      Array.from({ length: o.contacts }, async () => {
        while (performance.now() < deadline) {
          const i = next++;
          const msgs = contactOf(i);
          await manager.handleClientMessages(msgs, contacts[i % CLIENTS]);
          sent += msgs.length;
          forwarded += msgs.filter((m) => m.result && !m.result.failed).length;
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return (
      `forwarding ${backend}: ${(forwarded / seconds).toFixed(0)} messages/s to a Processor and stored as processed ` +
      `(${forwarded} of ${sent} messages of ${PAYLOAD_BYTES} B in ${seconds.toFixed(1)} s, the rest left pending; ` +
      `${o.contacts} contacts of 10 in flight; server CPU ${((cpu.user + cpu.system) / Math.max(1, forwarded)).toFixed(0)} µs/message; gRPC: ${o.grpc})`
    );
  } finally {
    await manager.stop();
    processor.child.kill("SIGTERM");
    await cleanup();
  }
}

export async function run(args: string[]): Promise<void> {
  const o = parseOptions(args);
  for (const backend of o.backends) {
    if (o.measure !== "forward") console.log(await benchInsertMessage(backend, o));
    if (o.measure === "forward" || o.measure === "both") console.log(await benchForwarding(backend, o));
  }
}

/**
 * Worker role: InsertMessage (or KeepAlive) callers. A minimal gRPC client on raw HTTP/2 sessions (a full client
 * stack costs more CPU per call than the server under test, on the same machine). Each message is
 * a serialized template with a fresh random message_id (field 1, the first 34 bytes). Prints one
 * JSON line with the counts.
 */
async function insertLoad(
  method: "InsertMessage" | "KeepAlive",
  address: string,
  seconds: number,
  concurrency: number,
  connections: number,
  idsHex: string,
) {
  const keepAlive = method === "KeepAlive";
  const payload = anyPack(BytesValueSchema, create(BytesValueSchema, { value: randomBytes(PAYLOAD_BYTES) }));
  const templates = (keepAlive ? [] : idsHex.split(",")).map((h) => {
    const bytes = toBinary(
      MessageSchema,
      create(MessageSchema, {
        messageId: new Uint8Array(32),
        source: { serviceName: "GRR" },
        destination: { clientId: Buffer.from(h, "hex"), serviceName: "GRR" },
        messageType: "GrrMessage",
        data: payload,
      }),
    );
    const framed = Buffer.alloc(5 + bytes.length);
    framed.writeUInt32BE(bytes.length, 1);
    framed.set(bytes, 5);
    return framed;
  });
  if (keepAlive) templates.push(Buffer.alloc(5));
  const sessions = Array.from({ length: connections }, () => http2.connect(`http://${address}`));
  const headers = {
    ":method": "POST",
    ":path": `/fleetspeak.server.Admin/${method}`,
    "content-type": "application/grpc",
    te: "trailers",
  };
  const call = (session: http2.ClientHttp2Session, body: Buffer) =>
    new Promise<string>((resolve, reject) => {
      const req = session.request(headers);
      let status: string | undefined;
      req.on("response", (h) => {
        status ??= h["grpc-status"] as string | undefined;
      });
      req.on("trailers", (t) => {
        status ??= t["grpc-status"] as string | undefined;
      });
      req.on("data", () => {});
      req.on("error", reject);
      req.on("close", () => resolve(status ?? "no status"));
      req.end(body);
    });
  const latencies: number[] = [];
  let calls = 0;
  let errors = 0;
  let n = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      const session = sessions[w % connections]!;
      while (performance.now() < deadline) {
        const body = Buffer.from(templates[n++ % templates.length]!);
        if (!keepAlive) randomFillSync(body, 7, 32);
        const t = performance.now();
        const status = await call(session, body).catch((e: Error) => e.message);
        if (status === "0") {
          calls++;
          latencies.push(performance.now() - t);
        } else errors++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  for (const s of sessions) s.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
  console.log(JSON.stringify({ calls, errors, seconds: elapsed, p50: pct(0.5), p99: pct(0.99) }));
}

/** Worker role: a Processor that accepts everything. Prints "PORT <n>". */
async function processorWorker() {
  const handler = connectNodeAdapter({
    grpc: true,
    grpcWeb: false,
    connect: false,
    routes: (router) => router.service(Processor, { process: () => create(EmptyMessageSchema) }),
  });
  const server = http2.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  console.log(`PORT ${(server.address() as AddressInfo).port}`);
  process.on("SIGTERM", () => process.exit(0));
}

if (process.argv[1] === THIS_FILE) {
  const [role, ...rest] = process.argv.slice(2);
  if (role === "--insert-load") {
    const [method, address, seconds, concurrency, connections, ids] = rest;
    await insertLoad(method as "InsertMessage" | "KeepAlive", address!, Number(seconds), Number(concurrency), Number(connections), ids!);
    process.exit(0);
  } else if (role === "--processor") {
    await processorWorker();
  } else {
    await run(process.argv.slice(2));
  }
}
