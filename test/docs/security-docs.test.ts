// docs/security.md, followed to the letter: its shell blocks are run (OpenSSL makes the admin
// PKI, a shell function writes admin_config), servers are started from its config blocks, and
// they are called the ways the page says: Node, Python grpcio, fleetspeak-admin, GRR's plaintext
// connector through the page's HAProxy config, and notifications with and without the secret.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parseText } from "../../src/common/textproto/index.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { checkComponentsConfig } from "../../src/server/config.js";
import { DEFAULT_FRONTEND_LISTENER_LIMITS, frontendLimitsFromConfig } from "../../src/server/frontend/listener.js";
import { notificationAuthFromConfig } from "../../src/server/security/security-config.js";
import { freePort } from "../support/haproxy.js";
import { type ManagedProcess, startHaproxyProcess } from "../support/processes.js";
import { runPythonScript } from "../support/python-grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { testServerPki } from "../support/tls.js";
import { docBlock } from "../support/doc-blocks.js";

const ROOT = resolve(import.meta.dirname, "../..");
const run = promisify(execFile);

function block(title: string): string {
  return docBlock("security.md", title);
}

function components(title: string) {
  return parseText(ComponentsConfigSchema, block(`fleetspeak.components.Config: ${title}`), { fileName: "docs/security.md" });
}

function post(address: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolvePost, reject) => {
    const req = request(`http://${address}${path}`, { method: "POST", headers: { "content-length": "0", ...headers } }, (res) => {
      res.resume();
      resolvePost(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("docs/security.md: admin API mutual TLS, as the page does it", { timeout: 120_000 }, () => {
  let dir: string;
  let ts: TestServer;
  let haproxy: ManagedProcess | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-security-docs-"));
    await run("bash", ["-c", block("security.md: admin PKI")], { cwd: dir });
    await run("bash", ["-c", block("security.md: admin config")], { cwd: dir });
    const text = readFileSync(join(dir, "admin_config.textproto"), "utf8");
    const cfg = parseText(ComponentsConfigSchema, text, { fileName: "admin_config.textproto" });
    const check = checkComponentsConfig(cfg, "admin_config.textproto", "/tmp/unused.sqlite");
    assert.ok(check.summary.includes("admin API: mutual TLS (callers need a certificate from admin_config.client_ca_certificates)"));
    assert.deepEqual(check.warnings, []);
    cfg.adminConfig!.listenAddress = "127.0.0.1:0";
    ts = await startTestServer({ components: { adminConfig: cfg.adminConfig! } });
  });
  after(async () => {
    await haproxy?.stop();
    await ts?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const file = (name: string) => readFileSync(join(dir, name), "utf8");
  const adminUrl = () => `https://localhost:${ts.server.adminAddress!.split(":").pop()}`;

  it("serves a caller with the operator's certificate, refuses one without", async () => {
    const withCert = createClient(
      Admin,
      createGrpcTransport({ baseUrl: adminUrl(), nodeOptions: { ca: file("admin-ca.pem"), cert: file("operator.pem"), key: file("operator.key") } }),
    );
    await withCert.keepAlive({});
    const without = createClient(Admin, createGrpcTransport({ baseUrl: adminUrl(), nodeOptions: { ca: file("admin-ca.pem") } }));
    await assert.rejects(without.keepAlive({}), (e: unknown) => ConnectError.from(e).code === Code.Unauthenticated);
  });

  it("fleetspeak-admin with the page's flags lists the clients", async () => {
    const command = block("security.md: fleetspeak-admin")
      .replace(/^fleetspeak-admin /m, `"${process.execPath}" "${join(ROOT, "bin/fleetspeak-admin.js")}" `)
      .replace("admin.fleetspeak.internal:9091", ts.server.adminAddress!);
    // No clients yet: the call succeeds and lists none.
    await run("bash", ["-c", command], { cwd: dir });
    const refused = await run("bash", ["-c", command.replace(/--client_cert \S+ --client_key \S+ /, "")], { cwd: dir }).then(
      () => "",
      (e: { stderr: string }) => e.stderr,
    );
    assert.match(refused, /Unauthenticated: this admin server requires a client certificate/);
  });

  it("Python grpcio with GRR's certificate is served", async () => {
    const out = JSON.parse(
      await runPythonScript("admin_mtls_client.py", [ts.server.adminAddress!, join(dir, "admin-ca.pem"), join(dir, "grr.pem"), join(dir, "grr.key")]),
    );
    assert.deepEqual(out, { keep_alive: null, list_clients: null });
  });

  it("GRR's plaintext connector reaches the admin API through the page's HAProxy config, with GRR's certificate", async () => {
    writeFileSync(join(dir, "grr-with-key.pem"), file("grr.pem") + file("grr.key"));
    const local = await freePort();
    const config = block("security.md: GRR HAProxy")
      .replace("bind 127.0.0.1:9091", `bind 127.0.0.1:${local}`)
      .replace("admin.fleetspeak.internal:9091", ts.server.adminAddress!)
      .replaceAll("/etc/grr/fleetspeak/", `${dir}/`)
      .concat("\n");
    haproxy = await startHaproxyProcess("grr-haproxy", config, [local]);
    const out = JSON.parse(await runPythonScript("admin_mtls_client.py", [`127.0.0.1:${local}`, "-"]));
    assert.deepEqual(out, { keep_alive: null, list_clients: null });
    // Without the proxy, the same plaintext call gets nothing from the TLS port.
    const direct = JSON.parse(await runPythonScript("admin_mtls_client.py", [ts.server.adminAddress!, "-"]));
    assert.notEqual(direct.keep_alive, null);
  });
});

describe("docs/security.md: signed notifications, as the page configures them", { timeout: 60_000 }, () => {
  let ts: TestServer;

  before(async () => {
    const frontend = components("a frontend with signed notifications");
    const pki = testServerPki();
    frontend.mysqlDataSourceName = "";
    frontend.httpsConfig!.listenAddress = "127.0.0.1:0";
    frontend.httpsConfig!.certificates = pki.certChainPem;
    frontend.httpsConfig!.key = pki.keyPem;
    frontend.notificationListenAddress = "127.0.0.1:0";
    frontend.notificationPublicAddress = "";
    ts = await startTestServer({ components: frontend });
  });
  after(() => ts?.stop());

  it("the frontend refuses unsigned notifications and accepts the admin server's", async () => {
    const path = "/client/0123456789abcdef";
    assert.equal(await post(ts.server.notificationAddress!, path), 401);
    const admin = notificationAuthFromConfig(components("an admin server with signed notifications"));
    assert.ok(admin);
    assert.equal(await post(ts.server.notificationAddress!, path, { authorization: admin.signer.authorization("POST", path) }), 200);
  });
});

describe("docs/security.md: frontend limits", () => {
  it("the block shows the defaults", () => {
    const limits = frontendLimitsFromConfig(components("frontend limits (the defaults)").httpsConfig?.limits);
    const d = DEFAULT_FRONTEND_LISTENER_LIMITS;
    assert.deepEqual(limits, {
      maxConnections: d.maxConnections,
      maxPendingConnections: d.maxPendingConnections,
      maxBufferedRequestBytes: d.maxBufferedRequestBytes,
      maxStreamFramesPerSecond: d.maxStreamFramesPerSecond,
    });
  });

  it("the long fuzzing command names the variables the fuzz tests read", () => {
    assert.match(block("security.md: long fuzzing"), /FUZZ_RUNS=\d+ FUZZ_SEED=random node --import tsx --test test\/fuzz\/\*\.test\.ts/);
    const params = readFileSync(join(ROOT, "test/fuzz/fuzz-params.ts"), "utf8");
    assert.match(params, /process\.env\.FUZZ_RUNS/);
    assert.match(params, /process\.env\.FUZZ_SEED/);
  });
});
