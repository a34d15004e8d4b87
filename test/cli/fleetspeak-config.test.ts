// fleetspeak-config from the example in deploy/examples to files, and from those files to a running
// server that a client trusting the generated CA reaches, and that our client connects to.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { clone, create } from "@bufbuild/protobuf";
import { subjectDer } from "../../src/common/certs.js";
import { parseText, printText } from "../../src/common/textproto/index.js";
import { ConfigSchema as ClientConfigSchema } from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import { type Config, ConfigSchema } from "../../src/gen/fleetspeak_config/config_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { loadComponentsConfig } from "../../src/server/config.js";
import { type RunningServer, startServer } from "../../src/server/main.js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { loadConfiguratorConfig } from "../../src/cli/configurator.js";
import { startClient } from "../../src/client/main.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { RawClient } from "../support/raw-client.js";

const ROOT = resolve(import.meta.dirname, "../..");
const EXAMPLE = join(ROOT, "deploy/examples/configurator.config");

function runConfig(...args: string[]) {
  const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-config.js"), ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const mode = (path: string) => statSync(path).mode & 0o777;

/** The example with every path moved into `dir`, SQLite instead of MySQL, and local ports. */
function exampleIn(dir: string, port: number): Config {
  const cfg = loadConfiguratorConfig(EXAMPLE);
  const move = (p: string) => join(dir, p.split("/").pop()!);
  cfg.trustedCertFile = move(cfg.trustedCertFile);
  cfg.trustedCertKeyFile = move(cfg.trustedCertKeyFile);
  cfg.serverCertFile = move(cfg.serverCertFile);
  cfg.serverCertKeyFile = move(cfg.serverCertKeyFile);
  cfg.serverComponentConfigurationFile = move(cfg.serverComponentConfigurationFile);
  cfg.linuxClientConfigurationFile = move(cfg.linuxClientConfigurationFile);
  cfg.darwinClientConfigurationFile = join(dir, "darwin_client.config");
  cfg.windowsClientConfigurationFile = join(dir, "windows_client.config");
  cfg.publicHostPort = [`localhost:${port}`, `127.0.0.1:${port}`];
  const cc = cfg.componentsConfig!;
  cc.mysqlDataSourceName = "";
  cc.httpsConfig!.listenAddress = `127.0.0.1:${port}`;
  cc.adminConfig!.listenAddress = "127.0.0.1:0";
  cc.healthCheckConfig!.listenAddress = "127.0.0.1:0";
  cc.statsConfig!.address = "127.0.0.1:0";
  return cfg;
}

describe("fleetspeak-config", () => {
  let dir: string;
  let port: number;
  let cfg: Config;
  let cfgPath: string;
  let server: RunningServer | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-config-"));
    port = await freePort();
    cfg = exampleIn(dir, port);
    cfgPath = join(dir, "configurator.config");
    writeFileSync(cfgPath, printText(ConfigSchema, cfg));
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates the CA, the server certificate and every config the example names", () => {
    const r = runConfig("-config", cfgPath);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, /created CA certificate .*ca\.pem/);
    assert.match(r.stdout, /created server certificate .*server\.pem for localhost, 127\.0\.0\.1/);
    assert.match(r.stdout, /wrote server components config .*server\.components\.config \(mode 0600\)/);
    assert.match(r.stdout, /wrote Linux client config/);
    assert.match(r.stdout, /wrote Darwin client config/);
    assert.match(r.stdout, /wrote Windows client config/);

    assert.equal(mode(cfg.trustedCertFile), 0o644);
    assert.equal(mode(cfg.trustedCertKeyFile), 0o600);
    assert.equal(mode(cfg.serverCertKeyFile), 0o600);
    assert.equal(mode(cfg.serverComponentConfigurationFile), 0o600);
    assert.equal(mode(cfg.linuxClientConfigurationFile), 0o644);
    assert.match(readFileSync(cfg.trustedCertKeyFile, "utf8"), /^-----BEGIN EC PRIVATE KEY-----/);

    const ca = new X509Certificate(readFileSync(cfg.trustedCertFile));
    assert.equal(ca.subject, "CN=Example Fleetspeak CA");
    assert.equal(ca.ca, true);
    assert.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    const years = (Date.parse(ca.validTo) - Date.now()) / (365 * 24 * 3600 * 1000);
    assert.ok(years > 9.9 && years < 10.1, `CA valid for ${years} years`);

    const cert = new X509Certificate(readFileSync(cfg.serverCertFile));
    assert.equal(cert.subject, "CN=Example Fleetspeak Server");
    assert.equal(cert.checkHost("localhost"), "localhost");
    assert.equal(cert.checkIP("127.0.0.1"), "127.0.0.1");
    assert.ok(cert.verify(ca.publicKey));
  });

  it("writes the components template with the certificate and key filled in", () => {
    const written = loadComponentsConfig(cfg.serverComponentConfigurationFile);
    assert.equal(written.httpsConfig!.certificates, readFileSync(cfg.serverCertFile, "utf8"));
    assert.equal(written.httpsConfig!.key, readFileSync(cfg.serverCertKeyFile, "utf8"));
    const expected = clone(ConfigSchema, cfg).componentsConfig!;
    expected.httpsConfig!.certificates = written.httpsConfig!.certificates;
    expected.httpsConfig!.key = written.httpsConfig!.key;
    assert.equal(printText(ConfigSchema, create(ConfigSchema, { componentsConfig: written })),
      printText(ConfigSchema, create(ConfigSchema, { componentsConfig: expected })));
  });

  it("writes client configs that trust the CA, without an empty client_label", () => {
    const caPem = readFileSync(cfg.trustedCertFile, "utf8");
    const read = (p: string) => parseText(ClientConfigSchema, readFileSync(p, "utf8"), { fileName: p });
    const linux = read(cfg.linuxClientConfigurationFile);
    assert.equal(linux.trustedCerts, caPem);
    assert.deepEqual(linux.server, [`localhost:${port}`, `127.0.0.1:${port}`]);
    assert.deepEqual(linux.clientLabel, []);
    assert.equal(linux.streaming, true);
    assert.deepEqual(linux.persistenceHandler, {
      case: "filesystemHandler",
      value: create(ClientConfigSchema, {
        persistenceHandler: {
          case: "filesystemHandler",
          value: { configurationDirectory: "/etc/fleetspeak-client", stateFile: "/var/lib/misc/fleetspeak-client.state" },
        },
      }).persistenceHandler.value,
    });
    const darwin = read(cfg.darwinClientConfigurationFile);
    assert.equal(darwin.persistenceHandler.case, "filesystemHandler");
    assert.equal(
      darwin.persistenceHandler.case === "filesystemHandler" && darwin.persistenceHandler.value.stateFile,
      "/etc/fleetspeak-client/state",
    );
    const windows = read(cfg.windowsClientConfigurationFile);
    assert.equal(
      windows.persistenceHandler.case === "registryHandler" && windows.persistenceHandler.value.configurationKey,
      "HKEY_LOCAL_MACHINE\\SOFTWARE\\FleetspeakClient",
    );
  });

  it("keeps existing certificates when run again", () => {
    const before = [cfg.trustedCertFile, cfg.trustedCertKeyFile, cfg.serverCertFile, cfg.serverCertKeyFile].map((p) =>
      readFileSync(p, "utf8"),
    );
    const r = runConfig("--config", cfgPath);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /created/);
    assert.match(r.stdout, /wrote server components config/);
    const again = [cfg.trustedCertFile, cfg.trustedCertKeyFile, cfg.serverCertFile, cfg.serverCertKeyFile].map((p) =>
      readFileSync(p, "utf8"),
    );
    assert.deepEqual(again, before);
  });

  it("gives a server that a client trusting the generated CA can poll", async () => {
    server = await startServer({
      components: loadComponentsConfig(cfg.serverComponentConfigurationFile),
      services: create(ServerConfigSchema, { services: [{ name: "TestService", factory: "NOOP" }] }),
      sqlitePath: join(dir, "fleetspeak.sqlite"),
    });
    assert.equal(server.frontendAddress, `127.0.0.1:${port}`);
    const raw = new RawClient({
      host: "127.0.0.1",
      port,
      ca: readFileSync(cfg.trustedCertFile, "utf8"),
      servername: "localhost",
    });
    const res = await raw.poll({});
    assert.equal(res.status, 200, res.text);
    assert.ok(res.cd);
  });

  it("gives a client config our client connects with", async () => {
    const linux = parseText(ClientConfigSchema, readFileSync(cfg.linuxClientConfigurationFile, "utf8"));
    const etc = join(dir, "client-etc");
    mkdirSync(etc);
    linux.persistenceHandler = {
      case: "filesystemHandler",
      value: create(ClientConfigSchema, {
        persistenceHandler: {
          case: "filesystemHandler",
          value: { configurationDirectory: etc, stateFile: join(dir, "client.state") },
        },
      }).persistenceHandler.value as never,
    };
    const clientConfig = join(dir, "client.config");
    writeFileSync(clientConfig, printText(ClientConfigSchema, linux));
    const client = await startClient({ configFile: clientConfig });
    try {
      const admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://${server!.adminAddress}` }));
      const deadline = Date.now() + 20_000;
      for (;;) {
        const { clients } = await admin.listClients({});
        if (clients.some((c) => Buffer.from(c.clientId).toString("hex") === client.clientId)) break;
        assert.ok(Date.now() < deadline, `client ${client.clientId} did not appear in ListClients`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await client.stop();
    }
  });
});

describe("fleetspeak-config on bad input", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "fs-config-bad-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, cfg: Config) => {
    const p = join(dir, name);
    writeFileSync(p, printText(ConfigSchema, cfg));
    return p;
  };
  const oneLine = (r: { code: number | null; stderr: string }, code: number, re: RegExp) => {
    assert.equal(r.code, code, r.stderr);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, re);
  };

  it("rejects an unknown flag", () => {
    oneLine(runConfig("--confg", "x"), 2, /^fleetspeak-config: Unknown option '--confg'.*usage: fleetspeak-config --config FILE/);
  });

  it("asks for --config", () => {
    oneLine(runConfig(), 2, /no config given; run fleetspeak-config --config /);
  });

  it("names a missing config file", () => {
    oneLine(runConfig("--config", join(dir, "nope.config")), 1, /unable to read configuration file \[.*nope\.config\]: ENOENT/);
  });

  it("names file, line and column of a syntax error", () => {
    const p = join(dir, "syntax.config");
    writeFileSync(p, 'configuration_name: "x"\nbogus_field: 1\n');
    oneLine(runConfig("--config", p), 1, /syntax\.config:2:1: .*bogus_field/);
  });

  it("requires configuration_name", () => {
    const p = write("noname.config", create(ConfigSchema, {}));
    oneLine(runConfig("--config", p), 1, /configuration_name required, not found in \[.*noname\.config\]/);
  });

  it("requires https_config before writing anything", () => {
    const cfg = exampleIn(join(dir, "nohttps"), 4443);
    cfg.componentsConfig!.httpsConfig = undefined;
    const p = write("nohttps.config", cfg);
    oneLine(runConfig("--config", p), 1, /components_config\.https_config is required; add https_config/);
    assert.equal(existsSync(cfg.trustedCertFile), false, "nothing is written");
  });

  it("refuses client configs without public_host_port", () => {
    const cfg = exampleIn(join(dir, "nohost"), 4443);
    cfg.publicHostPort = [];
    oneLine(runConfig("--config", write("nohost.config", cfg)), 1, /public_host_port is empty/);
  });

  it("names a bad public_host_port", () => {
    const cfg = exampleIn(join(dir, "badhost"), 4443);
    cfg.publicHostPort = ["fleetspeak.example.com"];
    oneLine(runConfig("--config", write("badhost.config", cfg)), 1, /public_host_port "fleetspeak\.example\.com": .*needs a port/);
  });

  it("says when the CA key does not belong to the CA certificate", () => {
    const a = exampleIn(join(dir, "a"), 4443);
    const b = exampleIn(join(dir, "b"), 4443);
    assert.equal(runConfig("--config", write("a.config", a)).code, 0);
    assert.equal(runConfig("--config", write("b.config", b)).code, 0);
    a.trustedCertKeyFile = b.trustedCertKeyFile;
    rmSync(a.serverCertFile);
    oneLine(runConfig("--config", write("mixed.config", a)), 1, /does not belong to the certificate/);
  });

  it("cannot mint a server certificate without the CA key", () => {
    const cfg = exampleIn(join(dir, "nokey"), 4443);
    assert.equal(runConfig("--config", write("nokey1.config", cfg)).code, 0);
    rmSync(cfg.serverCertFile);
    rmSync(cfg.trustedCertKeyFile);
    oneLine(
      runConfig("--config", write("nokey2.config", cfg)),
      1,
      /unable to create server certificate \[.*server\.pem\]: CA key not loaded \(cannot read trusted_cert_key_file/,
    );
  });

  it("signs with an existing CA whose name is not ours, copying its subject byte for byte", () => {
    const cfg = exampleIn(join(dir, "ownca"), 4443);
    mkdirSync(join(dir, "ownca"), { recursive: true });
    const cnf = join(dir, "ownca.cnf");
    // string_mask=default makes OpenSSL use PrintableString, as Go does for printable names.
    writeFileSync(
      cnf,
      "[req]\ndistinguished_name=dn\nprompt=no\nstring_mask=default\nx509_extensions=v3\n[dn]\nO=Acme Corp\nCN=Acme Root\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,digitalSignature\n",
    );
    const ssl = spawnSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
      "-config", cnf, "-keyout", cfg.trustedCertKeyFile, "-out", cfg.trustedCertFile,
    ], { encoding: "utf8" });
    assert.equal(ssl.status, 0, ssl.stderr);
    const r = runConfig("--config", write("ownca.config", cfg));
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /created CA/);
    const ca = new X509Certificate(readFileSync(cfg.trustedCertFile));
    const cert = new X509Certificate(readFileSync(cfg.serverCertFile));
    assert.ok(cert.verify(ca.publicKey));
    assert.ok(cert.checkIssued(ca));
    assert.ok(cert.raw.includes(subjectDer(ca)), "issuer bytes equal the CA's subject bytes");
  });
});
