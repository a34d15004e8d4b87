// A Fleetspeak database made by the real Fleetspeak: its Go server (MySQL on the test MariaDB, or
// its own SQLite datastore) and Go clients, configured by its own fleetspeak_config, filled through
// its Admin API and its clients with every kind of row an existing deployment has, edge cases
// included; then the server is stopped as an operator stops it before switching. What the
// database holds is returned as `expected` (go-fixture-types.ts), read back from the rows so that
// the fixture is known to be what it claims; go-fixture-check.ts checks a server against it and
// go-fixture-deliver.ts delivers its pending messages to its clients.
//
// The machines and what each stands for:
//   alpha    online; a processed message, a message the client failed (with its reason), a Ping
//            whose Pong the server could process, broadcasts
//   beta     online; two Pongs that the server could not hand to its Processor (pending, retried)
//   gamma    took two messages and never acked them (SIGSTOP, then SIGKILL): pending, retry 1
//   delta    polls instead of streaming; offline: a message removed by DeletePendingMessages, one
//            pending never sent (retry 0); it has the broadcast label but was offline when the
//            broadcasts ran
//   epsilon  blacklisted
//   zeta     no labels of its own; its contacts pruned by hand (no contacts at all)
//
// Two things a test cannot wait for are made by editing rows (and said so in `expected`):
// Fleetspeak retries a server-bound message only 1-2 minutes after a failure and re-sends an
// unacked client message after 15 minutes, so "that time has come" is written into
// pending_messages.scheduled_time, once while the server runs (so that it retries the server-bound
// messages itself) and once after it stopped (so that one message of each kind is due).
//
// Why the services config has max_parallelism 1 and a Processor that holds calls: Fleetspeak's
// gRPC forwarder retries a failing Process call until its 30 s context ends, so an absent
// Processor would hold every server-bound message 30 s. Instead the first message (alpha's Pong)
// is held open by the Processor, and with the one slot taken Fleetspeak drops the next ones
// at once "to retry later": exactly the pending, retried rows of a deployment whose GRR is down.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { type Any, anyPack, BytesValueSchema, StringValueSchema } from "@bufbuild/protobuf/wkt";
import { randomBroadcastId, randomMessageId } from "../../src/common/ids.js";
import { RestartServiceRequestSchema, RevokedCertificateListSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { type ClientMachine, DAEMON_SERVICE, machineState, startClient, writeClientMachine } from "./go-fixture-clients.js";
import { GoFixtureDb } from "./go-fixture-db.js";
import { pollUntil } from "./go-fixture-poll.js";
import { type RunningGoServer, startGoFixtureServer } from "./go-fixture-server.js";
import {
  BROADCAST_UNLIMITED,
  type ExpectedBroadcast,
  type ExpectedFile,
  type ExpectedMessage,
  type ExpectedStatus,
  type GoBackend,
  type GoFixture,
  type GoFixtureExpected,
  type GoServerStop,
  show,
} from "./go-fixture-types.js";
import { type FleetspeakGo, fleetspeakGo } from "./fleetspeak-go.js";
import { makeGoDeployment } from "./go-server.js";
import { createTestDatabase } from "./mariadb.js";
import type { ManagedProcess } from "./processes.js";
import { startProcessor, type TestProcessor } from "./processor-server.js";

export { checkFixture, type CheckOptions } from "./go-fixture-check.js";
export { deliverPending, type DeliverOptions } from "./go-fixture-deliver.js";
export { adminClient, goFixtureServices, type RunningGoServer, startGoFixtureServer } from "./go-fixture-server.js";
export * from "./go-fixture-types.js";

export interface BuildGoFixtureOptions {
  backend: GoBackend;
  /**
   * How the Go server is stopped at the end. "sigterm" (default), as an operator does: it ends
   * every broadcast allocation, adding its count to the broadcast's sent. "sigkill", as a crash:
   * what it held open stays in broadcast_allocations, and an unlimited broadcast's count (kept in
   * memory only) is lost; see `expected.broadcasts[].allocations`.
   */
  stop?: GoServerStop;
  /**
   * MySQL: the database's collation. Default null: the server's default, as a plain CREATE
   * DATABASE by an operator leaves it (Fleetspeak's tables inherit it).
   */
  mysqlCollation?: string | null;
}

interface Role {
  name: string;
  labels: string[];
  streaming: boolean;
}

const ROLES: Role[] = [
  { name: "alpha", labels: ["alpha", "bcast"], streaming: true },
  { name: "beta", labels: ["beta", "bcast"], streaming: true },
  { name: "gamma", labels: ["gamma"], streaming: true },
  { name: "delta", labels: ["delta", "bcast"], streaming: false },
  { name: "epsilon", labels: ["epsilon"], streaming: true },
  { name: "zeta", labels: [], streaming: true },
];

type BroadcastState = { sent: bigint; allocated: bigint; allocations: Array<{ sent: bigint; limit: bigint }>; recipients: number };

/**
 * The broadcasts' rows once alpha and beta had theirs (the one at its limit went to one of them).
 * On a clean stop Fleetspeak ends every allocation. Killed, it leaves the limited broadcast's
 * second allocation (1 message: a fifth of what was left, made when the first one filled up) and
 * loses the unlimited one's count, which it keeps in memory until it stops.
 */
const BROADCASTS_AFTER_SIGTERM: Record<string, BroadcastState> = {
  BroadcastAtLimit: { sent: 1n, allocated: 0n, allocations: [], recipients: 1 },
  BroadcastUnlimited: { sent: 2n, allocated: 0n, allocations: [], recipients: 2 },
  BroadcastLimited: { sent: 2n, allocated: 0n, allocations: [], recipients: 2 },
  BroadcastExpired: { sent: 2n, allocated: 0n, allocations: [], recipients: 2 },
};
const BROADCASTS_AFTER_SIGKILL: Record<string, BroadcastState> = {
  ...BROADCASTS_AFTER_SIGTERM,
  BroadcastUnlimited: { sent: 0n, allocated: 0n, allocations: [], recipients: 2 },
  BroadcastLimited: { sent: 2n, allocated: 1n, allocations: [{ sent: 0n, limit: 1n }], recipients: 2 },
};
const SENT_BEFORE_KILL = Object.fromEntries(Object.entries(BROADCASTS_AFTER_SIGKILL).map(([k, v]) => [k, v.sent]));


/** Unacked client messages wait this long in Fleetspeak before they are sent again. */
const CLIENT_RETRY_US = 15n * 60n * 1_000_000n;

const nowUs = () => BigInt(Date.now()) * 1000n;

function text(s: string): Any {
  return anyPack(StringValueSchema, create(StringValueSchema, { value: s }));
}

function bytes(b: Uint8Array): Any {
  return anyPack(BytesValueSchema, create(BytesValueSchema, { value: b }));
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/** The fixture being made: the running pieces and what has been done so far. */
class FixtureBuilder {
  readonly machines = new Map<string, ClientMachine>();
  readonly ids = new Map<string, string>();
  readonly clients = new Map<string, ManagedProcess>();
  readonly messages: Array<Omit<ExpectedMessage, "status" | "creationTime"> & { intended: ExpectedStatus["kind"] }> = [];
  readonly broadcasts: Array<Omit<ExpectedBroadcast, "sent" | "allocated" | "allocations" | "recipients" | "active"> & { expiresMs?: number }> =
    [];
  readonly files: ExpectedFile[] = [];
  revokedSerials: string[] = [];

  constructor(
    readonly go: FleetspeakGo,
    readonly dir: string,
    readonly server: RunningGoServer,
    readonly db: GoFixtureDb,
    readonly processor: TestProcessor,
    readonly linuxClientConfig: string,
  ) {}

  get admin() {
    return this.server.admin;
  }

  id(role: string): string {
    const id = this.ids.get(role);
    if (!id) throw new Error(`fixture: no client ID for ${role} yet`);
    return id;
  }

  /** Waits while the server and the named clients must stay up. */
  until<T>(what: string, check: () => Promise<T | undefined | false>, live: string[] = [], timeoutMs = 20_000): Promise<T> {
    const watch = [this.server.proc, ...live.map((r) => this.clients.get(r)).filter((p): p is ManagedProcess => !!p)];
    return pollUntil(what, check, { watch, timeoutMs });
  }

  async storeFiles(): Promise<void> {
    // Random serials: the clients fetch this list at start and keep it in their state files,
    // byte for byte (the second one with a leading zero byte, which must survive).
    const serials = [randomBytes(16), Buffer.concat([Buffer.alloc(1), randomBytes(8)])];
    this.revokedSerials = serials.map((x) => x.toString("hex")).sort();
    const revoked = create(RevokedCertificateListSchema, { serials });
    this.files.push(
      { service: "system", name: "RevokedCertificates", data: Buffer.from(toBinary(RevokedCertificateListSchema, revoked)) },
      { service: DAEMON_SERVICE, name: "payload.bin", data: randomBytes(70_000) },
      { service: DAEMON_SERVICE, name: "empty", data: Buffer.alloc(0) },
      { service: DAEMON_SERVICE, name: "naïve café.txt", data: Buffer.from("non-ASCII name and content: ü ñ 字\n") },
      // Fleetspeak's SQLite declares files.name as "TEST(256)" (sic): numeric affinity, so this
      // name is stored as the integer 123 there (and "123" finds it too).
      { service: DAEMON_SERVICE, name: "0123", data: Buffer.from("a name that looks like a number") },
    );
    for (const f of this.files) {
      await this.admin.storeFile({ serviceName: f.service, fileName: f.name, data: f.data });
    }
  }

  async startMachines(): Promise<void> {
    for (const role of ROLES) {
      const m = writeClientMachine(this.dir, role.name, this.linuxClientConfig, role, this.go);
      this.machines.set(role.name, m);
      this.clients.set(role.name, startClient("go", m, this.go));
    }
    const names = ROLES.map((r) => r.name);
    for (const role of ROLES) {
      const m = this.machines.get(role.name)!;
      this.ids.set(role.name, await this.until(`${role.name}'s state file`, async () => machineState(m)?.clientId, names));
    }
    await this.until(
      "every client in touch with the Go server (the streaming ones streaming)",
      async () => {
        const { clients } = await this.admin.listClients({});
        const seen = new Map(clients.map((c) => [hex(c.clientId), c.lastContactStreamingTo !== ""]));
        return ROLES.every((r) => seen.has(this.id(r.name)) && (!r.streaming || seen.get(this.id(r.name))));
      },
      names,
    );
  }

  async stopClient(role: string, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const p = this.clients.get(role)!;
    const code = await p.stop(signal, 15_000);
    if (signal === "SIGTERM" && code !== 0) {
      throw new Error(`the Go client ${role} did not stop cleanly (exit ${code}); its output:\n${p.output().slice(-4000)}`);
    }
    this.clients.delete(role);
  }

  async insert(
    name: string,
    to: { role: string; service: string },
    messageType: string,
    intended: ExpectedStatus["kind"],
    extra: { data?: Any; annotations?: Array<[string, string]> } = {},
  ): Promise<string> {
    const messageId = randomMessageId();
    const clientId = this.id(to.role);
    const { data, annotations } = extra;
    await this.admin.insertMessage({
      messageId,
      source: { serviceName: DAEMON_SERVICE },
      destination: { clientId: Buffer.from(clientId, "hex"), serviceName: to.service },
      messageType,
      ...(data ? { data } : {}),
      ...(annotations ? { annotations: { entries: annotations.map(([key, value]) => ({ key, value })) } } : {}),
    });
    this.messages.push({
      name,
      messageId: hex(messageId),
      source: { clientId: "", serviceName: DAEMON_SERVICE },
      destination: { clientId, serviceName: to.service },
      messageType,
      intended,
      ...(data ? { data } : {}),
      ...(annotations ? { annotations } : {}),
    });
    return hex(messageId);
  }

  processedInDb(messageId: string): Promise<boolean> {
    return this.db.message(messageId).then((m) => m?.processed === true);
  }

  async createBroadcasts(): Promise<void> {
    const expired = Date.now() + 8000;
    const specs: Array<{ name: string; type: string; limit: bigint; labels: string[]; destination: boolean; expiresMs?: number }> = [
      { name: "at its limit (1)", type: "BroadcastAtLimit", limit: 1n, labels: ["bcast"], destination: true },
      { name: "unlimited", type: "BroadcastUnlimited", limit: BROADCAST_UNLIMITED, labels: ["bcast"], destination: false },
      { name: "limited (10), not exhausted", type: "BroadcastLimited", limit: 10n, labels: ["bcast", "linux"], destination: true },
      { name: "expired", type: "BroadcastExpired", limit: 100n, labels: ["bcast"], destination: true, expiresMs: expired },
    ];
    for (const s of specs) {
      const broadcastId = randomBroadcastId();
      const data = text(`broadcast: ${s.name}`);
      const expirationTime =
        s.expiresMs === undefined ? undefined : { seconds: BigInt(Math.floor(s.expiresMs / 1000)), nanos: (s.expiresMs % 1000) * 1_000_000 };
      await this.admin.createBroadcast({
        broadcast: {
          broadcastId,
          source: { serviceName: DAEMON_SERVICE },
          ...(s.destination ? { destination: { serviceName: DAEMON_SERVICE } } : {}),
          messageType: s.type,
          data,
          requiredLabels: s.labels.map((label) => ({ serviceName: "client", label })),
          ...(expirationTime ? { expirationTime } : {}),
        },
        limit: s.limit,
      });
      this.broadcasts.push({
        name: s.name,
        broadcastId: hex(broadcastId),
        sourceService: DAEMON_SERVICE,
        destinationService: s.destination ? DAEMON_SERVICE : "",
        messageType: s.type,
        data,
        labels: [...s.labels].sort(),
        limit: s.limit,
        ...(expirationTime ? { expirationTime, expiresMs: s.expiresMs } : {}),
      });
    }
  }

  /** alpha: a processed message, one the client failed, and a Ping whose Pong the Processor holds. */
  async alphaMessages(): Promise<string> {
    const processed = await this.insert("processed by the client", { role: "alpha", service: DAEMON_SERVICE }, "Task", "processed", {
      data: bytes(randomBytes(64)),
      annotations: [
        ["flow_id", "F:1A2B3C"],
        ["request_id", "1"],
      ],
    });
    const failed = await this.insert("failed by the client (it has no such service to restart)", { role: "alpha", service: "system" }, "RestartService", "failed", {
      data: anyPack(RestartServiceRequestSchema, create(RestartServiceRequestSchema, { name: "NoSuchService" })),
    });
    const ping = await this.insert("a Ping the client answered", { role: "alpha", service: DAEMON_SERVICE }, "Ping", "processed", {
      data: bytes(Buffer.from("alpha")),
    });
    for (const id of [processed, failed, ping]) {
      await this.until(`message ${id} processed by alpha`, () => this.processedInDb(id), ["alpha"]);
    }
    // Fleetspeak stores a message from a client only once its service has processed it (or given
    // up), so the held Pong is known from the Processor's side for now.
    const pong = await this.until("alpha's Pong at the Processor", async () => this.processor.calls[0], ["alpha"]);
    if (pong.messageType !== "Pong" || hex(pong.source?.clientId ?? new Uint8Array()) !== this.id("alpha")) {
      throw new Error(`fixture: the Processor's first call should be alpha's Pong, it is ${pong.messageType} from ${hex(pong.source?.clientId ?? new Uint8Array())}`);
    }
    return hex(pong.messageId);
  }

  /** beta: two Pongs dropped while the Processor's one slot is held, then retried by the server. */
  async betaServerPending(): Promise<[string, string]> {
    for (const n of [1, 2]) {
      await this.insert(`Ping ${n} the client answered`, { role: "beta", service: DAEMON_SERVICE }, "Ping", "processed", {
        data: bytes(Buffer.from(`beta-${n}`)),
      });
    }
    const beta = this.id("beta");
    const pongs = await this.until(
      "beta's two Pongs pending at the server",
      async () => {
        const rows = await this.db.messages({ sourceClientId: beta, messageType: "Pong" });
        const pending = new Set((await this.db.pending()).filter((p) => p.forServer).map((p) => p.messageId));
        return rows.length === 2 && rows.every((r) => pending.has(r.messageId)) ? rows.map((r) => r.messageId) : undefined;
      },
      ["alpha", "beta"],
    );
    const [twice, once] = pongs as [string, string];
    await this.retryServerSide([twice, once], 1);
    await this.retryServerSide([twice], 2);
    if (this.processor.calls.length !== 1) {
      throw new Error(`fixture: the Processor got ${this.processor.calls.length} calls; only alpha's Pong should have reached it`);
    }
    return [twice, once];
  }

  /** Makes server-bound messages due now, so that the Go server retries them (it drops them again). */
  async retryServerSide(ids: string[], retryCount: number): Promise<void> {
    await this.db.setDue(ids, nowUs() - 1_000_000n);
    await this.until(`the Go server retrying ${ids.join(", ")} (retry_count ${retryCount})`, async () => {
      const pending = await this.db.pending();
      return ids.every((id) => pending.find((p) => p.messageId === id)?.retryCount === retryCount);
    });
  }

  /** gamma takes two messages while stopped (so it never acks them), then dies. */
  async gammaUnacked(): Promise<[string, string]> {
    this.clients.get("gamma")!.proc.kill("SIGSTOP");
    const ids: string[] = [];
    for (const n of [1, 2]) {
      ids.push(
        await this.insert(`sent to the client once, never acked (${n})`, { role: "gamma", service: DAEMON_SERVICE }, "Task", "pending", {
          data: bytes(Buffer.from(`gamma-${n}`)),
          annotations: [["flow_id", `F:GAMMA${n}`]],
        }),
      );
    }
    await this.until("gamma's two messages handed out once", async () => {
      const pending = await this.db.pending();
      return ids.every((id) => pending.find((p) => p.messageId === id)?.retryCount === 1);
    });
    await this.stopClient("gamma", "SIGKILL");
    return ids as [string, string];
  }

  /** delta is offline: one message removed by an admin, one never sent. */
  async deltaOffline(): Promise<void> {
    const removed = await this.insert("removed by DeletePendingMessages", { role: "delta", service: DAEMON_SERVICE }, "Task", "failed");
    await this.admin.deletePendingMessages({ clientIds: [Buffer.from(this.id("delta"), "hex")] });
    await this.until("the removed message marked failed", () => this.processedInDb(removed));
    await this.insert("pending, never sent (the client is offline)", { role: "delta", service: DAEMON_SERVICE }, "Task", "pending", {
      data: text("for delta"),
      annotations: [["flow_id", "F:DELTA"]],
    });
  }

  async broadcastsDelivered(): Promise<void> {
    const want: Record<string, number> = { BroadcastAtLimit: 1, BroadcastUnlimited: 2, BroadcastLimited: 2, BroadcastExpired: 2 };
    const expiring = this.broadcasts.find((b) => b.expiresMs !== undefined)!;
    await this.until(
      "the broadcasts sent to alpha and beta",
      async () => {
        const sent = await this.db.broadcastRecipients();
        return this.broadcasts.every((b) => (sent.get(b.broadcastId)?.length ?? 0) === want[b.messageType]);
      },
      ["alpha", "beta"],
      Math.max(1, expiring.expiresMs! - Date.now()),
    ).catch((e: Error) => {
      throw new Error(`${e.message}; the broadcast that expires must reach its clients before it expires (8 s)`);
    });
    const clientIds = [this.id("alpha"), this.id("beta")].map((id) => Buffer.from(id, "hex"));
    await this.until(
      "alpha and beta acking every message",
      async () => (await this.admin.getPendingMessageCount({ clientIds })).count === 0n,
      ["alpha", "beta"],
    );
  }

  async resourceUsageRecorded(): Promise<void> {
    for (const role of ["alpha", "beta"]) {
      await this.until(`resource usage of ${role}'s daemon`, async () => (await this.db.resourceUsage(this.id(role))).length > 0, [role]);
    }
  }
}

/** Builds the fixture; see the top of this file for what it holds. Well under a minute. */
export async function buildGoFixture(opts: BuildGoFixtureOptions): Promise<GoFixture> {
  const go = fleetspeakGo();
  const dir = mkdtempSync(join(tmpdir(), `fs-go-fixture-${opts.backend}-`));
  // What the fixture keeps until cleanup(), then what runs while it is made (undone in reverse).
  const kept: Array<() => Promise<void> | void> = [() => rmSync(dir, { recursive: true, force: true })];
  const undo: Array<() => Promise<void> | void> = [];
  const undoAll = async () => {
    for (const u of [...kept, ...undo].reverse()) await u();
  };
  try {
    let mysqlDsn: string | undefined;
    const sqlitePath = opts.backend === "sqlite" ? join(dir, "fleetspeak.sqlite") : undefined;
    if (opts.backend === "mysql") {
      const database = await createTestDatabase({ collation: opts.mysqlCollation ?? null });
      kept.push(() => database.drop());
      mysqlDsn = database.dsn;
    }
    const dataSourceName = mysqlDsn ?? `sqlite:${sqlitePath}`;
    const deployment = await makeGoDeployment(dataSourceName, `go-fixture-${opts.backend}`);
    kept.push(() => rmSync(deployment.dir, { recursive: true, force: true }));

    let release: () => void = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const processor = await startProcessor({ handle: () => held });
    undo.push(async () => {
      release();
      await processor.close();
    });
    const server = await startGoFixtureServer(deployment, processor.address);
    undo.push(() => server.proc.stop("SIGKILL").then(() => undefined));
    const db =
      opts.backend === "mysql" ? await GoFixtureDb.open("mysql", mysqlDsn!) : await GoFixtureDb.open("sqlite", sqlitePath!);
    undo.push(() => db.close());

    const b = new FixtureBuilder(go, dir, server, db, processor, readFileSync(deployment.clientConfigPath, "utf8"));
    undo.push(async () => {
      for (const p of b.clients.values()) await p.stop("SIGKILL");
    });
    await b.storeFiles();
    await b.startMachines();
    for (const role of ["delta", "epsilon", "zeta"]) await b.stopClient(role);
    await b.admin.blacklistClient({ clientId: Buffer.from(b.id("epsilon"), "hex") });
    await b.createBroadcasts();
    const alphaPong = await b.alphaMessages();
    const [pongRetriedTwice, pongRetriedOnce] = await b.betaServerPending();
    const [gammaDue, gammaLater] = await b.gammaUnacked();
    await b.deltaOffline();
    await b.broadcastsDelivered();
    await b.resourceUsageRecorded();

    release();
    await b.until("alpha's Pong processed once the Processor answers", () => b.processedInDb(alphaPong), ["alpha"]);
    const expiresMs = Math.max(...b.broadcasts.map((x) => x.expiresMs ?? 0));
    await b.until("the expiring broadcast to expire", async () => Date.now() > expiresMs + 100, [], 15_000);
    await b.stopClient("alpha");
    await b.stopClient("beta");
    const stop = opts.stop ?? "sigterm";
    if (stop === "sigkill") {
      // Let the broadcast manager end the allocations that are full or expired first (it does on
      // its next poll), so that what the kill leaves behind does not depend on timing.
      await b.until("the Go server ending the full and the expired broadcast allocations", async () => {
        const sent = new Map((await db.broadcasts()).map((r) => [r.broadcastId, r.sent]));
        return b.broadcasts.every((x) => sent.get(x.broadcastId) === SENT_BEFORE_KILL[x.messageType]);
      });
      await b.server.proc.stop("SIGKILL");
    } else {
      await b.server.stop();
    }

    // The server is down, as during an operator's switch: prune zeta's contacts by hand and let
    // the retry time of one client-bound and one server-bound message come.
    await db.pruneContacts(b.id("zeta"));
    await db.setDue([gammaDue, pongRetriedOnce], nowUs() - 1_000_000n);
    const expected = await readExpected(b, db, stop, { alphaPong, pongRetriedTwice, pongRetriedOnce, gammaDue, gammaLater });
    await db.close();
    await processor.close();

    return {
      backend: opts.backend,
      stop,
      dir,
      deployment,
      dataSourceName,
      ...(mysqlDsn ? { mysqlDsn } : {}),
      ...(sqlitePath ? { sqlitePath } : {}),
      caPem: readFileSync(deployment.caCertPath, "utf8"),
      publicAddress: `localhost:${deployment.httpsAddress.split(":").pop()}`,
      expected,
      cleanup: async () => {
        for (const u of kept.reverse()) await u();
      },
    };
  } catch (e) {
    await undoAll();
    throw e;
  }
}

interface ServerBound {
  alphaPong: string;
  pongRetriedTwice: string;
  pongRetriedOnce: string;
  gammaDue: string;
  gammaLater: string;
}

/** Reads back what the database holds, and fails if it is not what the fixture meant to make. */
async function readExpected(b: FixtureBuilder, db: GoFixtureDb, stop: GoServerStop, s: ServerBound): Promise<GoFixtureExpected> {
  const problems: string[] = [];
  const pending = new Map((await db.pending()).map((p) => [p.messageId, p]));
  const now = nowUs();
  const statusOf = async (messageId: string): Promise<ExpectedStatus | undefined> => {
    const row = await db.message(messageId);
    if (!row) return undefined;
    const p = pending.get(messageId);
    if (p) return { kind: "pending", retryCount: p.retryCount, scheduledTimeUs: p.scheduledTimeUs, due: p.scheduledTimeUs <= now };
    if (row.failed) return { kind: "failed", reason: row.failedReason ?? "" };
    return row.processed ? { kind: "processed" } : undefined;
  };

  const messages: ExpectedMessage[] = [];
  const add = async (m: Omit<ExpectedMessage, "status" | "creationTime">, intended: ExpectedStatus["kind"]) => {
    const row = await db.message(m.messageId);
    const status = await statusOf(m.messageId);
    if (!row || !status) {
      problems.push(`${m.name} (${m.messageId}) is not in the database as a processed, failed or pending message`);
      return;
    }
    if (status.kind !== intended) problems.push(`${m.name} (${m.messageId}) is ${status.kind}, meant to be ${intended}`);
    messages.push({ ...m, creationTime: { seconds: row.creationSeconds, nanos: row.creationNanos }, status });
  };
  for (const { intended, ...m } of b.messages) await add(m, intended);

  const serverBound = [
    { id: s.alphaPong, role: "alpha", name: "client to server, processed once the Processor answered", intended: "processed" as const },
    { id: s.pongRetriedTwice, role: "beta", name: "client to server, Processor down: retried twice, not due", intended: "pending" as const },
    { id: s.pongRetriedOnce, role: "beta", name: "client to server, Processor down: retried once, due now", intended: "pending" as const },
  ];
  for (const x of serverBound) {
    await add(
      {
        name: x.name,
        messageId: x.id,
        source: { clientId: b.id(x.role), serviceName: DAEMON_SERVICE },
        destination: { clientId: "", serviceName: DAEMON_SERVICE },
        messageType: "Pong",
      },
      x.intended,
    );
  }

  const retries: Array<[string, number, boolean]> = [
    [s.pongRetriedTwice, 2, false],
    [s.pongRetriedOnce, 1, true],
    [s.gammaDue, 1, true],
    [s.gammaLater, 1, false],
  ];
  for (const [id, retryCount, due] of retries) {
    const st = messages.find((m) => m.messageId === id)?.status;
    if (st?.kind !== "pending" || st.retryCount !== retryCount || st.due !== due) {
      problems.push(`message ${id} should be pending with retry_count ${retryCount}, ${due ? "due" : "not due"}; it is ${show(st)}`);
    }
  }
  const gammaLater = messages.find((m) => m.messageId === s.gammaLater)?.status;
  if (gammaLater?.kind === "pending" && gammaLater.scheduledTimeUs < now + CLIENT_RETRY_US - 120_000_000n) {
    problems.push(`gamma's unacked message should be due about 15 minutes after it was sent, not at ${gammaLater.scheduledTimeUs} µs`);
  }
  const removed = messages.find((m) => m.name.startsWith("removed by"))?.status;
  if (removed?.kind !== "failed" || removed.reason !== "Removed by admin action.") {
    problems.push(`the removed message should have failed with "Removed by admin action.", it is ${JSON.stringify(removed)}`);
  }
  const clientFailed = messages.find((m) => m.messageType === "RestartService")?.status;
  if (clientFailed?.kind !== "failed" || !clientFailed.reason.includes("NoSuchService")) {
    problems.push(`the message alpha failed should carry the client's reason naming NoSuchService, it is ${JSON.stringify(clientFailed)}`);
  }

  const rows = new Map((await db.broadcasts()).map((r) => [r.broadcastId, r]));
  const recipients = await db.broadcastRecipients();
  const allocations = await db.allocations();
  const wanted = stop === "sigterm" ? BROADCASTS_AFTER_SIGTERM : BROADCASTS_AFTER_SIGKILL;
  const broadcasts: ExpectedBroadcast[] = [];
  for (const { expiresMs, ...x } of b.broadcasts) {
    const row = rows.get(x.broadcastId);
    const to = recipients.get(x.broadcastId) ?? [];
    const got = {
      sent: row?.sent ?? -1n,
      allocated: row?.allocated ?? -1n,
      allocations: allocations.get(x.broadcastId) ?? [],
      recipients: to.length,
    };
    if (show(got) !== show(wanted[x.messageType])) {
      problems.push(`broadcast ${x.name} after ${stop}: ${show(got)}, should be ${show(wanted[x.messageType])}`);
    }
    broadcasts.push({ ...x, sent: got.sent, allocated: got.allocated, allocations: got.allocations, recipients: to, active: expiresMs === undefined && got.sent < x.limit });
    for (const clientId of to) {
      for (const m of await db.messages({ destinationClientId: clientId, messageType: x.messageType })) {
        await add(
          {
            name: `broadcast "${x.name}" to ${[...b.ids].find(([, id]) => id === clientId)?.[0]}`,
            messageId: m.messageId,
            source: { clientId: "", serviceName: x.sourceService },
            destination: { clientId, serviceName: x.destinationService || x.sourceService },
            messageType: x.messageType,
          },
          "processed",
        );
      }
    }
  }

  const byId = new Map((await db.clients()).map((c) => [c.clientId, c]));
  const clients = [];
  for (const role of ROLES) {
    const clientId = b.id(role.name);
    const row = byId.get(clientId);
    if (!row) {
      problems.push(`client ${role.name} (${clientId}) is not in the database`);
      continue;
    }
    const contacts = await db.contacts(clientId);
    const hasContacts = role.name !== "zeta";
    if (hasContacts !== contacts.length > 0) problems.push(`client ${role.name} has ${contacts.length} contacts`);
    const wantLabels = [...role.labels, "amd64", "linux"].sort();
    if (row.labels.join() !== wantLabels.join()) problems.push(`client ${role.name} has labels ${row.labels}, meant ${wantLabels}`);
    if (row.blacklisted !== (role.name === "epsilon")) problems.push(`client ${role.name}: blacklisted is ${row.blacklisted}`);
    const state = machineState(b.machines.get(role.name)!);
    if (state?.clientId !== clientId) problems.push(`client ${role.name}: its state file holds ${state?.clientId}`);
    const revoked = b.revokedSerials;
    if (state && state.revokedSerials.join() !== revoked.join()) {
      problems.push(`client ${role.name}: its state file has revoked serials ${state.revokedSerials}, want ${revoked} from RevokedCertificates`);
    }
    clients.push({
      name: role.name,
      clientId,
      state: state!,
      labels: row.labels,
      blacklisted: row.blacklisted,
      hasContacts,
      contacts,
      resourceUsage: await db.resourceUsage(clientId),
      machine: b.machines.get(role.name)!,
    });
  }
  for (const role of ["alpha", "beta"]) {
    if (clients.find((c) => c.name === role)?.resourceUsage.length === 0) problems.push(`client ${role} has no resource-usage records`);
  }
  if (problems.length > 0) throw new Error(`the Go fixture is not what it should be:\n- ${problems.join("\n- ")}`);
  return { clients, messages, broadcasts, files: b.files };
}

/**
 * deliverPending's makeDue for a fixture's database, in either layout (Fleetspeak's, or this
 * server's after adoption): the given pending messages become due a second ago.
 */
export function fixtureMakeDue(fixture: GoFixture): (messageIds: string[]) => Promise<void> {
  return async (messageIds) => {
    const db =
      fixture.backend === "mysql" ? await GoFixtureDb.open("mysql", fixture.mysqlDsn!) : await GoFixtureDb.open("sqlite", fixture.sqlitePath!);
    try {
      await db.setDue(messageIds, nowUs() - 1_000_000n);
    } finally {
      await db.close();
    }
  };
}
