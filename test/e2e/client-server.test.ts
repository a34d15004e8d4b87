// Our client and our server together, as separate processes: the client binary, configured with
// Fleetspeak-format files, connects over mutual TLS, runs a Python daemon (speaking Fleetspeak's
// channel protocol as its Python connector does) that exchanges messages with a Processor
// through the server, survives a server restart, and restarts a crashing daemon.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { randomMessageId } from "../../src/common/ids.js";
import {
  ClientProcess,
  daemonServiceText,
  tempDir,
  testDaemonArgv,
  until,
  writeClientConfig,
} from "../client/support/client-env.js";
import { freePort } from "../support/haproxy.js";
import { type TestProcessor, startProcessor } from "../support/processor-server.js";
import { type ManagedProcess, startServerProcess } from "../support/processes.js";
import { testServerPki } from "../support/tls.js";

describe("fleetspeak-client with fleetspeak-server", { timeout: 120_000 }, () => {
  const pki = testServerPki();
  const dir = tempDir("fs-e2e-cs-");
  let processor: TestProcessor;
  let server: ManagedProcess;
  let client: ClientProcess;
  let frontendPort: number;
  let adminPort: number;
  let components: string;
  let services: string;
  let admin: ReturnType<typeof createClient<typeof Admin>>;
  let clientId: Buffer;

  const start = () =>
    startServerProcess({ name: "server", components, services, sqlitePath: join(dir, "fleetspeak.sqlite") });

  const bytesOf = (m: TestProcessor["processed"][number]) =>
    m.data ? Buffer.from(anyUnpack(m.data, BytesValueSchema)?.value ?? []).toString() : "";

  before(async () => {
    processor = await startProcessor();
    frontendPort = await freePort();
    adminPort = await freePort();
    components = `https_config {
  listen_address: "127.0.0.1:${frontendPort}"
  certificates: ${JSON.stringify(pki.certChainPem)}
  key: ${JSON.stringify(pki.keyPem)}
}
admin_config { listen_address: "127.0.0.1:${adminPort}" }
`;
    services = `services {
  name: "TestService"
  factory: "GRPC"
  config { [type.googleapis.com/fleetspeak.grpcservice.Config] { target: "${processor.address}" insecure: true } }
}
`;
    server = await start();
    admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://127.0.0.1:${adminPort}` }));
    const files = writeClientConfig({
      ca: pki.ca,
      servers: [`localhost:${frontendPort}`],
      labels: ["e2e"],
      textServices: {
        "echo.service": daemonServiceText("EchoDaemon", testDaemonArgv("echo")),
        "crash.service": daemonServiceText("Crasher", testDaemonArgv("crash")),
      },
    });
    client = new ClientProcess(["-config", files.configFile], {
      TEST_DAEMON_SERVER_SERVICE: "TestService",
      FLEETSPEAK_DAEMON_RESPAWN_DELAY_MS: "500",
    });
  });

  after(async () => {
    await client?.close();
    await server?.stop();
    await processor?.close();
  });

  it("connects over mutual TLS and is known by the key in its state file", async () => {
    await until(() => processor.processed.some((m) => m.messageType === "Hello"), 30_000, "the daemon's Hello");
    const hello = processor.processed.find((m) => m.messageType === "Hello")!;
    clientId = Buffer.from(hello.source!.clientId);
    // The daemon saw FLEETSPEAK_CLIENT_ID, and the server derived the same ID from the TLS key.
    assert.equal(bytesOf(hello).split(" ")[0], clientId.toString("hex"));
    const { clients } = await admin.listClients({ clientIds: [clientId] });
    assert.equal(clients.length, 1);
    assert.ok(clients[0]!.labels.some((l) => l.serviceName === "client" && l.label === "e2e"));
  });

  async function roundTrip(text: string): Promise<void> {
    await admin.insertMessage({
      messageId: randomMessageId(),
      source: { serviceName: "TestService" },
      destination: { clientId, serviceName: "EchoDaemon" },
      messageType: "Ping",
      data: anyPack(BytesValueSchema, create(BytesValueSchema, { value: Buffer.from(text) })),
    });
    await until(
      () => processor.processed.some((m) => m.messageType === "EchoReply" && bytesOf(m) === text),
      30_000,
      `the daemon's echo of ${text}`,
    );
  }

  it("delivers a message to the Python daemon and its answer to the Processor", async () => {
    await roundTrip("ping-1");
  });

  it("survives a server restart: the client reconnects and messages flow again", async () => {
    await server.stop();
    server = await start();
    await roundTrip("ping-after-restart");
  });

  it("restarts a crashing daemon", async () => {
    const crasherHellos = () => processor.processed.filter((m) => m.messageType === "Hello" && m.source?.serviceName === "Crasher");
    await until(() => crasherHellos().length >= 3, 60_000, "three starts of the crashing daemon");
    const pids = new Set(crasherHellos().map((m) => bytesOf(m).split(" ")[1]));
    assert.ok(pids.size >= 3, "each start is a new process");
  });
});
