// Starts a whole server in this process for tests: SQLite in a temporary directory (or a given
// MySQL DSN), frontend and admin server on 127.0.0.1 ephemeral ports, test certificates.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { type RunningServer, type ServerOptions, startServer } from "../../src/server/main.js";
import { testServerPki } from "./tls.js";

export interface TestServer {
  server: RunningServer;
  /** Port of the frontend on 127.0.0.1. */
  port: number;
  caPem: string;
  admin: Client<typeof Admin>;
  stop(): Promise<void>;
}

export interface TestServerOptions {
  /** Default: frontend and admin server on 127.0.0.1 ephemeral ports with test certificates. */
  components?: MessageInitShape<typeof ComponentsConfigSchema>;
  services?: MessageInitShape<typeof ServerConfigSchema>;
  overrides?: Partial<ServerOptions>;
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const pki = testServerPki();
  const dir = mkdtempSync(join(tmpdir(), "fs-server-"));
  const components = create(
    ComponentsConfigSchema,
    opts.components ?? {
      httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
      adminConfig: { listenAddress: "127.0.0.1:0" },
    },
  );
  const services = create(ServerConfigSchema, opts.services ?? {
    services: [{ name: "TestService", factory: "NOOP" }],
  });
  const server = await startServer({
    components,
    services,
    sqlitePath: join(dir, "fleetspeak.sqlite"),
    ...opts.overrides,
  });
  const port = server.frontendAddress ? Number(server.frontendAddress.split(":").pop()) : 0;
  const transport = createGrpcTransport({ baseUrl: `http://${server.adminAddress ?? "127.0.0.1:1"}` });
  return {
    server,
    port,
    caPem: pki.ca.certPem,
    admin: createClient(Admin, transport),
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
