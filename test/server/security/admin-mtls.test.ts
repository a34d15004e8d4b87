// Mutual TLS on the admin API (admin_config.tls_certificates, tls_key, client_ca_certificates):
// callers with a certificate from the configured CA get through, from Node (connect) and from
// Python grpcio (the stack GRR uses); callers without one, or with one from another CA, are
// refused with UNAUTHENTICATED and a reason. Also the GRPC service presenting a client
// certificate to an integrator that requires one.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { createCa, createServerCertificate, type CertAndKey } from "../../../src/common/certs.js";
import { EmptyMessageSchema, type Message } from "../../../src/gen/fleetspeak/common_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../../src/gen/fleetspeak_components/config_pb.js";
import { ConfigSchema as GrpcConfigSchema, Processor } from "../../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { checkComponentsConfig, ConfigError } from "../../../src/server/config.js";
import { runPythonScript } from "../../support/python-grpc.js";
import { outMessage, RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { testServerPki } from "../../support/tls.js";

interface PythonReport {
  keep_alive: { code: string; details: string } | null;
  list_clients: { code: string; details: string } | null;
}

describe("admin API with mutual TLS", () => {
  let ts: TestServer;
  let dir: string;
  const adminCa = createCa("admin");
  const adminServerCert = createServerCertificate("admin", adminCa, ["localhost", "127.0.0.1"]);
  const operator = createServerCertificate("operator", adminCa, ["operator"]);
  const stranger = createServerCertificate("stranger", createCa("other"), ["operator"]);
  const url = () => `https://localhost:${ts.server.adminAddress!.split(":").pop()}`;
  const files: Record<string, string> = {};

  function admin(cert?: CertAndKey): Client<typeof Admin> {
    return createClient(
      Admin,
      createGrpcTransport({
        baseUrl: url(),
        nodeOptions: { ca: adminCa.certPem, ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}) },
      }),
    );
  }

  before(async () => {
    ts = await startTestServer({
      components: {
        adminConfig: {
          listenAddress: "127.0.0.1:0",
          tlsCertificates: adminServerCert.certPem + adminCa.certPem,
          tlsKey: adminServerCert.keyPem,
          clientCaCertificates: adminCa.certPem,
        },
      },
    });
    dir = mkdtempSync(join(tmpdir(), "fs-admin-mtls-"));
    for (const [name, text] of Object.entries({
      "ca.pem": adminCa.certPem,
      "operator.pem": operator.certPem,
      "operator.key": operator.keyPem,
      "stranger.pem": stranger.certPem,
      "stranger.key": stranger.keyPem,
    })) {
      files[name] = join(dir, name);
      writeFileSync(files[name]!, text);
    }
  });
  after(async () => {
    await ts?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves a caller whose certificate the admin CA issued", async () => {
    const a = admin(operator);
    await a.keepAlive({});
    assert.deepEqual((await a.listClients({})).clients, []);
  });

  it("refuses a caller without a certificate with UNAUTHENTICATED, saying what to present", async () => {
    await assert.rejects(admin().keepAlive({}), (e: unknown) => {
      const ce = ConnectError.from(e);
      assert.equal(ce.code, Code.Unauthenticated, ce.message);
      assert.match(ce.rawMessage, /requires a client certificate .*admin_config\.client_ca_certificates/);
      return true;
    });
  });

  it("refuses a certificate from another CA with UNAUTHENTICATED, naming the verification error", async () => {
    await assert.rejects(admin(stranger).keepAlive({}), (e: unknown) => {
      const ce = ConnectError.from(e);
      assert.equal(ce.code, Code.Unauthenticated, ce.message);
      assert.match(ce.rawMessage, /client certificate refused \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
      return true;
    });
    // The refused caller did not disturb the others.
    await admin(operator).keepAlive({});
  });

  it("Python grpcio with ssl_channel_credentials(root, key, chain) is served; without a client certificate it is refused", async () => {
    const withCert = JSON.parse(
      await runPythonScript("admin_mtls_client.py", [
        ts.server.adminAddress!,
        files["ca.pem"]!,
        files["operator.pem"]!,
        files["operator.key"]!,
      ]),
    ) as PythonReport;
    assert.deepEqual(withCert, { keep_alive: null, list_clients: null });

    const without = JSON.parse(await runPythonScript("admin_mtls_client.py", [ts.server.adminAddress!, files["ca.pem"]!])) as PythonReport;
    assert.equal(without.keep_alive?.code, "UNAUTHENTICATED", JSON.stringify(without));
    assert.match(without.keep_alive!.details, /requires a client certificate/);
    assert.equal(without.list_clients?.code, "UNAUTHENTICATED");

    const foreign = JSON.parse(
      await runPythonScript("admin_mtls_client.py", [
        ts.server.adminAddress!,
        files["ca.pem"]!,
        files["stranger.pem"]!,
        files["stranger.key"]!,
      ]),
    ) as PythonReport;
    assert.equal(foreign.keep_alive?.code, "UNAUTHENTICATED", JSON.stringify(foreign));
  });

  it("a plaintext caller gets nothing from the TLS port", async () => {
    const plain = createClient(Admin, createGrpcTransport({ baseUrl: `http://${ts.server.adminAddress}` }));
    await assert.rejects(plain.keepAlive({}, { timeoutMs: 5000 }), ConnectError);
  });
});

describe("admin TLS config checks", () => {
  const pki = testServerPki();
  const check = (adminConfig: Record<string, string>) =>
    checkComponentsConfig(
      create(ComponentsConfigSchema, { adminConfig: { listenAddress: "0.0.0.0:9091", ...adminConfig } }),
      "admin.config",
      "/tmp/unused.sqlite",
    );

  it("needs certificate and key together, names the file and field of every problem", () => {
    assert.throws(() => check({ tlsKey: pki.keyPem }), /^ConfigError: admin\.config: admin_config: tls_certificates and tls_key go together/);
    assert.throws(
      () => check({ clientCaCertificates: pki.ca.certPem }),
      /admin_config: tls_certificates and tls_key go together and client_ca_certificates needs both/,
    );
    assert.throws(() => check({ tlsCertificates: "junk", tlsKey: pki.keyPem }), /admin_config\.tls_certificates: no "-----BEGIN CERTIFICATE-----" block/);
    assert.throws(() => check({ tlsCertificates: pki.certChainPem, tlsKey: "junk" }), /admin_config\.tls_key: not a PEM private key/);
    const otherKey = createServerCertificate("x", pki.ca, ["x"]).keyPem;
    assert.throws(
      () => check({ tlsCertificates: pki.certChainPem, tlsKey: otherKey }),
      /admin_config\.tls_key: the key does not belong to the first certificate of admin_config\.tls_certificates/,
    );
    assert.throws(
      () => check({ tlsCertificates: pki.certChainPem, tlsKey: pki.keyPem, clientCaCertificates: "nope" }),
      (e: unknown) => e instanceof ConfigError && /admin_config\.client_ca_certificates: no "-----BEGIN/.test(e.message),
    );
  });

  it("summarises what is on, and warns when the admin API on a routable address is open to anyone", () => {
    const mtls = check({ tlsCertificates: pki.certChainPem, tlsKey: pki.keyPem, clientCaCertificates: pki.ca.certPem });
    assert.ok(mtls.summary.some((l) => /admin API: mutual TLS/.test(l)));
    assert.deepEqual(mtls.warnings, []);
    const tlsOnly = check({ tlsCertificates: pki.certChainPem, tlsKey: pki.keyPem });
    assert.ok(tlsOnly.summary.some((l) => /admin API: TLS without client authentication/.test(l)));
    assert.match(tlsOnly.warnings.join("\n"), /anyone who can reach 0\.0\.0\.0:9091 can send messages to every client/);
    const loopback = checkComponentsConfig(
      create(ComponentsConfigSchema, { adminConfig: { listenAddress: "127.0.0.1:9091" } }),
      "admin.config",
      "/tmp/unused.sqlite",
    );
    assert.deepEqual(loopback.warnings, []);
  });
});

describe("GRPC service presenting a client certificate to the integrator", () => {
  let dir: string;
  let processor: http2.Http2SecureServer;
  let port = 0;
  const received: Message[] = [];
  const integratorCa = createCa("integrator");
  const integratorCert = createServerCertificate("integrator", integratorCa, ["localhost"]);
  const fleetspeakIdentity = createServerCertificate("fleetspeak", integratorCa, ["fleetspeak"]);
  const sessionsRefused: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-grpc-mtls-"));
    writeFileSync(join(dir, "ca.pem"), integratorCa.certPem);
    writeFileSync(join(dir, "client.pem"), fleetspeakIdentity.certPem);
    writeFileSync(join(dir, "client.key"), fleetspeakIdentity.keyPem);
    // An integrator (GRR behind a TLS-terminating proxy, say) that requires a client certificate.
    processor = http2.createSecureServer(
      { cert: integratorCert.certPem, key: integratorCert.keyPem, ca: integratorCa.certPem, requestCert: true, rejectUnauthorized: true },
      connectNodeAdapter({
        grpc: true,
        grpcWeb: false,
        connect: false,
        routes: (router) =>
          router.service(Processor, {
            process(msg) {
              received.push(msg);
              return create(EmptyMessageSchema);
            },
          }),
      }),
    );
    processor.on("tlsClientError", (e) => sessionsRefused.push(e.message));
    await new Promise<void>((resolve) => processor.listen(0, "127.0.0.1", resolve));
    port = (processor.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise((resolve) => processor.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  async function forwardOne(config: Record<string, string | boolean>): Promise<boolean> {
    const pki = testServerPki();
    const ts = await startTestServer({
      components: { httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem } },
      services: {
        services: [
          {
            name: "GRR",
            factory: "GRPC",
            config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: `localhost:${port}`, ...config })),
          },
        ],
      },
    });
    try {
      const before = received.length;
      const client = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      const sent = outMessage("GRR", "Hello");
      const r = await client.poll({ messages: [sent] });
      assert.equal(r.status, 200, r.text);
      // The service manager hands the message over at once; a refused handshake fails fast.
      const deadline = Date.now() + 3000;
      while (received.length === before && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      return received.length > before;
    } finally {
      await ts.stop();
    }
  }

  it("delivers with client_certificate_file and client_key_file", async () => {
    const delivered = await forwardOne({
      certFile: join(dir, "ca.pem"),
      clientCertificateFile: join(dir, "client.pem"),
      clientKeyFile: join(dir, "client.key"),
    });
    assert.ok(delivered, "the Processor did not receive the message");
    assert.equal(received.at(-1)?.messageType, "Hello");
  });

  it("without them the integrator refuses the connection and nothing is delivered", async () => {
    const refusedBefore = sessionsRefused.length;
    assert.equal(await forwardOne({ certFile: join(dir, "ca.pem") }), false);
    assert.ok(sessionsRefused.length > refusedBefore, "the integrator saw no refused handshake");
  });

  it("refuses half a client identity, or one without TLS, at start", async () => {
    const pki = testServerPki();
    const start = (config: Record<string, string | boolean>) =>
      startTestServer({
        components: create(ComponentsConfigSchema, {
          httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        }),
        services: {
          services: [
            { name: "GRR", factory: "GRPC", config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "localhost:1", ...config })) },
          ],
        },
      });
    await assert.rejects(
      start({ certFile: join(dir, "ca.pem"), clientCertificateFile: join(dir, "client.pem") }),
      /client_certificate_file and client_key_file go together/,
    );
    await assert.rejects(
      start({ insecure: true, clientCertificateFile: join(dir, "client.pem"), clientKeyFile: join(dir, "client.key") }),
      /a client certificate needs TLS/,
    );
    await assert.rejects(
      start({ certFile: join(dir, "ca.pem"), clientCertificateFile: join(dir, "client.pem"), clientKeyFile: join(dir, "ca.pem") }),
      /cannot use the TLS files/,
    );
  });
});
