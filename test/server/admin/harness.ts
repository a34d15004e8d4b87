// An admin server on 127.0.0.1:0 over a real SQLite store in a temporary directory, with a gRPC
// client for it and a Notifier that records what it is asked to do.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger } from "../../../src/common/log.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { type AdminServer, startAdminServer } from "../../../src/server/admin/admin-server.js";
import { AdminService } from "../../../src/server/admin/admin-service.js";
import type { Notifier } from "../../../src/server/notify/notifier.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import type { Store } from "../../../src/server/store/store.js";

export class RecordingNotifier implements Notifier {
  readonly calls: { target: string; clientId: Uint8Array }[] = [];
  behaviour: "ok" | "fail" | "hang" = "ok";

  newMessageForClient(target: string, clientId: Uint8Array): Promise<void> {
    this.calls.push({ target, clientId });
    if (this.behaviour === "fail") return Promise.reject(new Error("connection refused"));
    if (this.behaviour === "hang") return new Promise(() => {});
    return Promise.resolve();
  }
}

export interface AdminHarness {
  store: SqliteStore;
  notifier: RecordingNotifier;
  server: AdminServer;
  client: Client<typeof Admin>;
  close(): Promise<void>;
}

export async function startAdminHarness(opts: { wrapStore?: (s: SqliteStore) => Store } = {}): Promise<AdminHarness> {
  const dir = mkdtempSync(join(tmpdir(), "fs-admin-"));
  const store = await SqliteStore.open({ path: join(dir, "fleetspeak.sqlite") });
  const notifier = new RecordingNotifier();
  const logger = createLogger("admin-test");
  const service = new AdminService({
    store: opts.wrapStore ? opts.wrapStore(store) : store,
    notifier,
    logger,
    notifyWaitMs: 200,
  });
  const server = await startAdminServer({ listenAddress: "127.0.0.1:0", service, logger });
  const client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${server.address}` }));
  return {
    store,
    notifier,
    server,
    client,
    async close() {
      await server.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
