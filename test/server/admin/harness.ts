// An admin server on 127.0.0.1:0 over a real store (SQLite in a temporary directory, or a fresh
// MariaDB database), with a gRPC client for it and a Notifier that records what it is asked to do
// (and, if given a real notifier, passes the notifications on to it).
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger } from "../../../src/common/log.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { type AdminServer, startAdminServer } from "../../../src/server/admin/admin-server.js";
import { AdminService } from "../../../src/server/admin/admin-service.js";
import type { NewMessage, NotificationAnswer, Notifier } from "../../../src/server/notify/notifier.js";
import type { Store } from "../../../src/server/store/store.js";
import { openBackend } from "../../support/stores.js";

export class RecordingNotifier implements Notifier {
  readonly calls: { target: string; clientId: Uint8Array }[] = [];
  behaviour: "ok" | "fail" | "hang" = "ok";

  /** With `forwardTo`, "ok" notifications are sent on and answered with its answer. */
  constructor(private readonly forwardTo?: Notifier) {}

  newMessageForClient(target: string, clientId: Uint8Array, carried?: NewMessage): Promise<NotificationAnswer> {
    this.calls.push({ target, clientId });
    if (this.behaviour === "fail") return Promise.reject(new Error("connection refused"));
    if (this.behaviour === "hang") return new Promise(() => {});
    return this.forwardTo ? this.forwardTo.newMessageForClient(target, clientId, carried) : Promise.resolve();
  }
}

export interface AdminHarnessOptions {
  /** A real notifier behind the RecordingNotifier. */
  forwardTo?: Notifier;
  /** Wraps the store the service uses (to count its calls, say); AdminHarness.store stays unwrapped. */
  wrapStore?: (store: Store) => Store;
  /** Opens the store instead of a fresh one of `backend` (a database behind a proxy, say). */
  openStore?: () => Promise<{ store: Store; cleanup(): Promise<void> }>;
  /** AdminServiceOptions.storeHoldMs. */
  storeHoldMs?: number;
}

export type Backend = "sqlite" | "mariadb";

export interface AdminHarness {
  store: Store;
  notifier: RecordingNotifier;
  server: AdminServer;
  client: Client<typeof Admin>;
  close(): Promise<void>;
}


export async function startAdminHarness(backend: Backend = "sqlite", opts: AdminHarnessOptions = {}): Promise<AdminHarness> {
  const { store, cleanup } = await (opts.openStore ?? (() => openBackend(backend)))();
  const notifier = new RecordingNotifier(opts.forwardTo);
  const logger = createLogger("admin-test");
  const serviceStore = opts.wrapStore ? opts.wrapStore(store) : store;
  const service = new AdminService({
    store: serviceStore,
    notifier,
    logger,
    notifyWaitMs: 200,
    ...(opts.storeHoldMs !== undefined ? { storeHoldMs: opts.storeHoldMs } : {}),
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
      await cleanup();
    },
  };
}
