// The real Fleetspeak (Go) server on a Go fixture's configs: started as its packages run it
// (components and services config files), stopped as systemd does (SIGTERM, which makes it fold
// broadcast allocations into the broadcasts' sent counts before it exits). An exit other than a
// clean one is an error carrying its log.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { DAEMON_SERVICE } from "./go-fixture-clients.js";
import { pollUntil } from "./go-fixture-poll.js";
import type { FleetspeakGo } from "./fleetspeak-go.js";
import { type ManagedProcess, manage } from "./processes.js";

export interface RunningGoServer {
  proc: ManagedProcess;
  adminAddress: string;
  admin: Client<typeof Admin>;
  /** SIGTERM and wait; throws (with the log) unless it exits cleanly. */
  stop(): Promise<void>;
}

/** An Admin API client for an admin server at "host:port" (Go's or ours: plain gRPC). */
export function adminClient(address: string): Client<typeof Admin> {
  return createClient(Admin, createGrpcTransport({ baseUrl: `http://${address}` }));
}

/**
 * The services config: GRR's daemon service forwarded to a Processor over gRPC, as GRR's
 * config_updater writes it (broadcast_poll_time 1 s), with max_parallelism 1 (see go-fixture.ts
 * for why the fixture needs it).
 */
export function writeGoServicesConfig(file: string, processorAddress: string): void {
  writeFileSync(
    file,
    `services {
  name: "${DAEMON_SERVICE}"
  factory: "GRPC"
  max_parallelism: 1
  config {
    [type.googleapis.com/fleetspeak.grpcservice.Config] {
      target: "${processorAddress}"
      insecure: true
    }
  }
}
broadcast_poll_time { seconds: 1 }
`,
  );
}

export async function startGoServer(
  go: FleetspeakGo,
  configs: { componentsConfig: string; servicesConfig: string },
  adminPort: number,
): Promise<RunningGoServer> {
  const proc = manage(
    "Fleetspeak (Go) server",
    spawn(go.server, ["-components_config", configs.componentsConfig, "-services_config", configs.servicesConfig, "-logtostderr"], {
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  await proc.waitFor(/Fleetspeak server started/, 30_000);
  const adminAddress = `127.0.0.1:${adminPort}`;
  const admin = adminClient(adminAddress);
  const answers = async () => {
    await admin.keepAlive({});
    return true;
  };
  await pollUntil(`the Go admin server at ${adminAddress}`, answers, {
    watch: [proc],
    timeoutMs: 10_000,
  });
  return {
    proc,
    adminAddress,
    admin,
    async stop() {
      const code = await proc.stop("SIGTERM", 30_000);
      if (code !== 0) {
        throw new Error(`the Fleetspeak (Go) server did not stop cleanly (exit ${code}); its output:\n${proc.output().slice(-6000)}`);
      }
    },
  };
}
