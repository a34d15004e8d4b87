// The single-executable client (`npm run package:client`), as it runs on a managed machine without
// Node.js: the one file copied alone into an empty directory, started with an empty environment
// (so no PATH leads to a node), against a real fleetspeak-server; a message goes to a Daemon
// service and the daemon's answer reaches the Processor. A bad config or state file gives the
// same one-line errors as bin/fleetspeak-client.js.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomMessageId } from "../../src/common/ids.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import {
  ClientProcess,
  daemonServiceText,
  REPO,
  tempDir,
  testDaemonArgv,
  until,
  writeClientConfig,
} from "../client/support/client-env.js";
import { freePort } from "../support/haproxy.js";
import { type ManagedProcess, startServerProcess } from "../support/processes.js";
import { startProcessor, type TestProcessor } from "../support/processor-server.js";
import { testServerPki } from "../support/tls.js";

describe("the single-executable fleetspeak-client", { timeout: 300_000 }, () => {
  const pki = testServerPki();
  const work = tempDir("fs-sea-");
  const machine = join(work, "machine");
  const exe = join(machine, "fleetspeak-client");
  let processor: TestProcessor;
  let server: ManagedProcess;
  let client: ClientProcess | undefined;

  before(async () => {
    execFileSync(process.execPath, [join(REPO, "scripts/package-client.mjs"), "--out", join(work, "out")], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    mkdirSync(machine);
    copyFileSync(join(work, "out/fleetspeak-client"), exe);
    execFileSync("chmod", ["755", exe]);
    processor = await startProcessor();
  });

  after(async () => {
    await client?.close();
    await server?.stop();
    await processor?.close();
  });

  it("is one file", () => {
    assert.deepEqual(readdirSync(machine), ["fleetspeak-client"]);
    const r = spawnSync(exe, ["--help"], { cwd: machine, env: {}, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: fleetspeak-client --config FILE/);
  });

  it("runs a Daemon service against a real server with an empty environment: a message there and back", async () => {
    const frontendPort = await freePort();
    const adminPort = await freePort();
    server = await startServerProcess({
      name: "server",
      components: `https_config {
  listen_address: "127.0.0.1:${frontendPort}"
  certificates: ${JSON.stringify(pki.certChainPem)}
  key: ${JSON.stringify(pki.keyPem)}
}
admin_config { listen_address: "127.0.0.1:${adminPort}" }
`,
      services: `services {
  name: "TestService"
  factory: "GRPC"
  config { [type.googleapis.com/fleetspeak.grpcservice.Config] { target: "${processor.address}" insecure: true } }
}
`,
    });
    const files = writeClientConfig(
      {
        ca: pki.ca,
        servers: [`localhost:${frontendPort}`],
        textServices: { "echo.service": daemonServiceText("EchoDaemon", testDaemonArgv("echo")) },
      },
      join(work, "config"),
    );
    client = new ClientProcess(["--config", files.configFile], {}, false, exe);

    const bytesOf = (m: TestProcessor["processed"][number]) =>
      m.data ? Buffer.from(anyUnpack(m.data, BytesValueSchema)?.value ?? []).toString() : "";
    await until(() => processor.processed.some((m) => m.messageType === "Hello"), 60_000, "the daemon's Hello");
    const clientId = processor.processed.find((m) => m.messageType === "Hello")!.source!.clientId;
    const admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://127.0.0.1:${adminPort}` }));
    await admin.insertMessage({
      messageId: randomMessageId(),
      source: { serviceName: "TestService" },
      destination: { clientId, serviceName: "EchoDaemon" },
      messageType: "Ping",
      data: anyPack(BytesValueSchema, create(BytesValueSchema, { value: Buffer.from("to the executable") })),
    });
    await until(
      () => processor.processed.some((m) => m.messageType === "EchoReply" && bytesOf(m) === "to the executable"),
      30_000,
      "the daemon's echo",
    );
  });

  it("refuses a missing config file and a corrupt state file with one line each", () => {
    const run = (args: string[]) => spawnSync(exe, args, { cwd: machine, env: {}, encoding: "utf8", timeout: 30_000 });
    const missing = run(["--config", join(work, "no-such.config")]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^fleetspeak-client: cannot read the client config .*no-such\.config: ENOENT[^\n]*\n$/);

    const files = writeClientConfig({ ca: pki.ca, servers: ["localhost:1"] }, join(work, "corrupt"));
    writeFileSync(files.stateFile, "not a state file");
    const corrupt = run(["--config", files.configFile]);
    assert.equal(corrupt.status, 1);
    assert.equal(corrupt.stderr.split("\n").filter(Boolean).length, 1, corrupt.stderr);
    assert.match(corrupt.stderr, /^fleetspeak-client: .*fleetspeak-client\.state/);
  });
});
