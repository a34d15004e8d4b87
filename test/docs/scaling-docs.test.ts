// docs/scaling.md, followed: its configurator config goes through fleetspeak-config, and the
// files it writes are started as they are: two frontends, two admin servers, HAProxy in front of
// both tiers, a client from client/client.config. A message inserted through the admin balancer
// reaches the client and its answer reaches the Processor standing in for GRR; HAProxy's HTTP
// health checks pass against every server.
//
// The machines of the page become loopback addresses of a /24 picked at random (127.a.b.0), so
// the page's fixed ports do not collide with another run; each machine's listen_ip is its address.
// Besides those addresses, the test changes only what the page tells the operator to fill in:
// file paths, the database, GRR's address.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type RunningClient, startClient } from "../../src/client/main.js";
import { randomMessageId } from "../../src/common/ids.js";
import { parseText, printText } from "../../src/common/textproto/index.js";
import { ConfigSchema as ClientConfigSchema } from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { ConfigSchema as ConfiguratorConfigSchema } from "../../src/gen/fleetspeak_config/config_pb.js";
import { ConfigSchema as GrpcConfigSchema } from "../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { InputMessageSchema, OutputMessageSchema } from "../../src/gen/fleetspeak_stdinservice/messages_pb.js";
import { serverConfigRegistry } from "../../src/server/config.js";
import { docBlock } from "../support/doc-blocks.js";
import { createTestDatabase, type TestDatabase } from "../support/mariadb.js";
import { type ManagedProcess, startHaproxyProcess, startServerProcess } from "../support/processes.js";
import { startProcessor, type TestProcessor } from "../support/processor-server.js";

const ROOT = resolve(import.meta.dirname, "../..");

describe("docs/scaling.md, followed with fleetspeak-config", { timeout: 180_000 }, () => {
  const net = `127.${randomInt(1, 255)}.${randomInt(0, 256)}`;
  const ip = { lb: `${net}.1`, "frontend-1": `${net}.2`, "frontend-2": `${net}.3`, "admin-1": `${net}.4`, "admin-2": `${net}.5` };
  let dir: string;
  let out: string;
  let db: TestDatabase;
  let processor: TestProcessor;
  let configOutput: { status: number | null; stdout: string };
  const servers: ManagedProcess[] = [];
  let haproxy: ManagedProcess | undefined;
  let client: RunningClient | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-scaling-docs-"));
    out = join(dir, "distributed");
    db = await createTestDatabase();
    processor = await startProcessor();

    const cfg = parseText(ConfiguratorConfigSchema, docBlock("scaling.md", "fleetspeak.config.Config: distributed"), {
      fileName: "docs/scaling.md",
      registry: serverConfigRegistry,
    });
    cfg.trustedCertFile = join(dir, "ca.pem");
    cfg.trustedCertKeyFile = join(dir, "ca-key.pem");
    cfg.serverCertFile = join(dir, "server.pem");
    cfg.serverCertKeyFile = join(dir, "server-key.pem");
    cfg.publicHostPort = cfg.publicHostPort.map((hp) => hp.replace("fleetspeak.example.com", ip.lb));
    cfg.componentsConfig!.mysqlDataSourceName = db.dsn;
    const d = cfg.distributed!;
    d.outputDirectory = out;
    d.clientsBalancerAddress = `${ip.lb}:4443`;
    d.adminBalancerAddress = `${ip.lb}:4444`;
    for (const m of [...d.frontend, ...d.adminServer]) {
      m.host = ip[m.name as keyof typeof ip];
      assert.ok(m.host, `docs/scaling.md names a machine ${m.name} this test does not know`);
      m.listenIp = m.host;
    }
    d.servicesConfig!.services[0]!.config = anyPack(
      GrpcConfigSchema,
      create(GrpcConfigSchema, { target: processor.address, insecure: true }),
    );
    const path = join(dir, "distributed.config");
    writeFileSync(path, printText(ConfiguratorConfigSchema, cfg, { registry: serverConfigRegistry }));
    const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-config.js"), "--config", path], { encoding: "utf8" });
    configOutput = { status: r.status, stdout: r.stdout };
    assert.equal(r.status, 0, r.stderr);

    for (const name of ["frontend-1", "frontend-2", "admin-1", "admin-2"]) {
      servers.push(
        await startServerProcess({
          name,
          components: readFileSync(join(out, name, "server.components.config"), "utf8"),
          services: readFileSync(join(out, name, "server.services.config"), "utf8"),
        }),
      );
    }
    haproxy = await startHaproxyProcess("haproxy", readFileSync(join(out, "load-balancer/haproxy.cfg"), "utf8"), [
      `${ip.lb}:4443`,
      `${ip.lb}:4444`,
    ]);

    // The client config as written, with its files moved out of /etc and /var, and a service
    // that answers each input with its argument (GRR's agent stands in the same place).
    const clientCfg = parseText(ClientConfigSchema, readFileSync(join(out, "client/client.config"), "utf8"));
    assert.equal(clientCfg.persistenceHandler.case, "filesystemHandler");
    const fsHandler = clientCfg.persistenceHandler.value!;
    fsHandler.configurationDirectory = join(dir, "client-etc");
    fsHandler.stateFile = join(dir, "client.state");
    mkdirSync(join(fsHandler.configurationDirectory, "textservices"), { recursive: true });
    writeFileSync(
      join(fsHandler.configurationDirectory, "textservices", "grr.service"),
      `name: "GRR"
factory: "Stdin"
config {
  [type.googleapis.com/fleetspeak.stdinservice.Config] {
    cmd: "/bin/echo"
  }
}
`,
    );
    writeFileSync(join(fsHandler.configurationDirectory, "communicator.txt"), "min_failure_delay_seconds: 1\n");
    const clientConfigFile = join(fsHandler.configurationDirectory, "client.config");
    writeFileSync(clientConfigFile, printText(ClientConfigSchema, clientCfg));
    client = await startClient({ configFile: clientConfigFile });
  });

  after(async () => {
    await client?.stop();
    await haproxy?.stop();
    await Promise.all(servers.map((s) => s.stop()));
    await processor?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("fleetspeak-config writes one folder per machine, the server key readable by its owner only", () => {
    for (const name of ["frontend-1", "frontend-2", "admin-1", "admin-2"]) {
      assert.equal(statSync(join(out, name, "server.components.config")).mode & 0o777, 0o600);
      assert.match(configOutput.stdout, new RegExp(`wrote ${out}/${name}/: .*copy both files to ${ip[name as keyof typeof ip]}:/etc/fleetspeak-server/`));
    }
    assert.match(configOutput.stdout, /load-balancer\/haproxy\.cfg; copy it to the load balancer's \/etc\/haproxy\/haproxy\.cfg/);
    assert.match(configOutput.stdout, /client\/client\.config; copy it to \/etc\/fleetspeak-client\/client\.config/);
  });

  it("gives frontends the certificate, PROXY protocol and their own notification address; admin servers the HTTP notifier", () => {
    const fe = parseText(ComponentsConfigSchema, readFileSync(join(out, "frontend-2/server.components.config"), "utf8"));
    assert.match(fe.httpsConfig!.certificates, /^-----BEGIN CERTIFICATE-----\n/);
    assert.equal(fe.proxyProtocol, true);
    assert.equal(fe.adminConfig, undefined);
    assert.equal(fe.notificationPublicAddress, `${ip["frontend-2"]}:10000`);
    const admin = parseText(ComponentsConfigSchema, readFileSync(join(out, "admin-1/server.components.config"), "utf8"));
    assert.equal(admin.httpsConfig, undefined);
    assert.equal(admin.notificationUseHttpNotifier, true);
    assert.equal(admin.adminConfig!.listenAddress, `${ip["admin-1"]}:4444`);
  });

  it("carries a message from the admin balancer to the client and its answer back to GRR", async () => {
    const admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://${ip.lb}:4444` }));
    const deadline = Date.now() + 30_000;
    while ((await admin.listClients({})).clients.length === 0) {
      assert.ok(Date.now() < deadline, "the client did not register through HAProxy within 30 s");
      await new Promise((r) => setTimeout(r, 200));
    }
    const [listed] = (await admin.listClients({})).clients;
    // Recorded with the client's own address (PROXY protocol), at one of the two frontends.
    assert.match(listed!.lastContactAddress, /^127\.0\.0\.1:\d+$/);
    assert.ok(
      [`${ip["frontend-1"]}:10000`, `${ip["frontend-2"]}:10000`].includes(listed!.lastContactStreamingTo),
      listed!.lastContactStreamingTo,
    );
    await admin.insertMessage({
      messageId: randomMessageId(),
      source: { serviceName: "GRR" },
      destination: { clientId: listed!.clientId, serviceName: "GRR" },
      messageType: "StdinServiceInputMessage",
      data: anyPack(InputMessageSchema, create(InputMessageSchema, { args: ["through-the-balancers"] })),
    });
    await processor.waitProcessed(1);
    const answer = processor.processed.find((m) => m.messageType === "StdinServiceOutputMessage");
    assert.ok(answer?.data, "no StdinServiceOutputMessage reached the Processor");
    assert.equal(Buffer.from(fromBinary(OutputMessageSchema, answer.data.value).stdout).toString(), "through-the-balancers\n");
  });

  it("HAProxy's HTTP health checks pass against every frontend and admin server", async () => {
    for (const server of ["fleetspeak_frontends/frontend-1", "fleetspeak_frontends/frontend-2", "fleetspeak_admins/admin-1", "fleetspeak_admins/admin-2"]) {
      await haproxy!.waitFor(new RegExp(`Health check for server ${server} succeeded, reason: Layer7 check passed, code: 200`), 15_000);
    }
  });
});
