// The real Fleetspeak (Go) server on a Go fixture's deployment (go-server.ts runs it), ready once
// its admin server answers, and stopped as systemd does (SIGTERM, which makes it fold broadcast
// allocations into the broadcasts' sent counts before it exits): an exit other than a clean one
// is an error carrying its log.
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { DAEMON_SERVICE } from "./go-fixture-clients.js";
import { pollUntil } from "./go-fixture-poll.js";
import { type GoDeployment, startGoServer } from "./go-server.js";
import type { ManagedProcess } from "./processes.js";

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
 * The fixture's services config: GRR's daemon service forwarded to a Processor over gRPC, as GRR's
 * config_updater writes it (broadcast_poll_time 1 s), with max_parallelism 1 (go-fixture.ts says
 * why the fixture needs it).
 */
export function goFixtureServices(processorAddress: string): string {
  return `services {
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
`;
}

/** Starts Fleetspeak's server on the deployment with the fixture's services config. */
export async function startGoFixtureServer(d: GoDeployment, processorAddress: string): Promise<RunningGoServer> {
  const proc = await startGoServer(d, goFixtureServices(processorAddress));
  const admin = adminClient(d.adminAddress);
  const answers = async () => {
    await admin.keepAlive({});
    return true;
  };
  await pollUntil(`the Go admin server at ${d.adminAddress}`, answers, { watch: [proc], timeoutMs: 10_000 });
  return {
    proc,
    adminAddress: d.adminAddress,
    admin,
    async stop() {
      const code = await proc.stop("SIGTERM", 30_000);
      if (code !== 0) {
        throw new Error(`the Fleetspeak (Go) server did not stop cleanly (exit ${code}); its output:\n${proc.output().slice(-6000)}`);
      }
    },
  };
}
