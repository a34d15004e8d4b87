import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createCa, createServerCertificate } from "../../../src/common/certs.js";
import { createLogger } from "../../../src/common/log.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { type AdminServer, startAdminServer } from "../../../src/server/admin/admin-server.js";
import { testServerPki } from "../../support/tls.js";

const logger = createLogger("admin-server-test");
const keepAliveOnly = { keepAlive: () => ({}) };

describe("admin server listener", () => {
  it("reports the port the OS chose, and refuses an address in use with the address in the error", async () => {
    const a = await startAdminServer({ listenAddress: "127.0.0.1:0", service: keepAliveOnly, logger });
    assert.match(a.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(a.address, "127.0.0.1:0");
    await assert.rejects(
      startAdminServer({ listenAddress: a.address, service: keepAliveOnly, logger }),
      new RegExp(`^Error: admin_config\\.listen_address "${a.address.replace(/\./g, "\\.")}": cannot listen: .*EADDRINUSE`),
    );
    await a.close();
  });

  it("answers UNIMPLEMENTED for methods the service does not provide", async () => {
    const a = await startAdminServer({ listenAddress: "127.0.0.1:0", service: keepAliveOnly, logger });
    const client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${a.address}` }));
    await client.keepAlive({});
    await assert.rejects(client.listClients({}), (e: unknown) => ConnectError.from(e).code === Code.Unimplemented);
    await a.close();
  });
});

describe("admin server with mutual TLS", () => {
  let server: AdminServer;
  const pki = testServerPki();
  const url = () => `https://localhost:${server.address.split(":").pop()}`;

  before(async () => {
    server = await startAdminServer({
      listenAddress: "127.0.0.1:0",
      service: keepAliveOnly,
      logger,
      tls: { cert: pki.certChainPem, key: pki.keyPem, ca: pki.ca.certPem, requireClientCert: true },
    });
  });
  after(() => server.close());

  function client(opts: { cert?: string; key?: string }): Client<typeof Admin> {
    return createClient(
      Admin,
      createGrpcTransport({ baseUrl: url(), nodeOptions: { ca: pki.ca.certPem, ...opts } }),
    );
  }

  it("accepts a client certificate signed by the CA", async () => {
    const operator = createServerCertificate("test", pki.ca, ["operator"]);
    await client({ cert: operator.certPem, key: operator.keyPem }).keepAlive({});
  });

  it("refuses callers without a certificate or with one from another CA", async () => {
    await assert.rejects(client({}).keepAlive({}), ConnectError);
    const stranger = createServerCertificate("other", createCa("other"), ["operator"]);
    await assert.rejects(client({ cert: stranger.certPem, key: stranger.keyPem }).keepAlive({}), ConnectError);
  });
});
