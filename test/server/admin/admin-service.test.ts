import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AnySchema, anyPack, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { bytesToHex } from "../../../src/common/ids.js";
import { createLogger } from "../../../src/common/log.js";
import { LabelSchema, type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { MessageAckDataSchema } from "../../../src/gen/fleetspeak/system_pb.js";
import { ResourceUsageDataSchema } from "../../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { BroadcastSchema } from "../../../src/gen/fleetspeak_server/broadcasts_pb.js";
import { HttpNotificationListener } from "../../../src/server/notify/http-listener.js";
import { HttpNotifier } from "../../../src/server/notify/http-notifier.js";
import { parseMysqlDsn } from "../../../src/common/mysql-dsn.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { BROADCAST_UNLIMITED, type Store } from "../../../src/server/store/store.js";
import { createTestDatabase } from "../../support/mariadb.js";
import { proxiedDsn, startMysqlProxy } from "../../support/mysql-proxy.js";
import { type AdminHarness, startAdminHarness } from "./harness.js";

async function rejectsWith(p: Promise<unknown>, code: Code, text: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(Code[e.code], Code[code], `code of "${e.rawMessage}"`);
    assert.match(e.rawMessage, text);
    return true;
  });
}

function clientMessage(clientId: Uint8Array, init: MessageInitShape<typeof MessageSchema> = {}): Message {
  return create(MessageSchema, {
    source: { serviceName: "GRR" },
    destination: { clientId, serviceName: "GRR" },
    messageType: "GrrMessage",
    data: anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds: [randomBytes(32)] })),
    ...init,
  } as MessageInitShape<typeof MessageSchema>);
}

for (const backend of ["sqlite", "mariadb"] as const) {
  describe(`admin service on ${backend}`, () => {
    let h: AdminHarness;
    const streaming = randomBytes(8);
    const polling = randomBytes(8);
    const blacklisted = randomBytes(8);

    before(async () => {
      h = await startAdminHarness(backend);
      const label = (l: string) => create(LabelSchema, { serviceName: "client", label: l });
      await h.store.addClient(streaming, { key: randomBytes(91), labels: [label("linux"), label("corp")], blacklisted: false });
      await h.store.addClient(polling, { key: randomBytes(91), labels: [label("windows")], blacklisted: false });
      await h.store.addClient(blacklisted, { key: randomBytes(91), labels: [], blacklisted: false });
      await h.store.blacklistClient(blacklisted);
      await h.store.recordClientContact({
        clientId: streaming,
        sentNonce: 1n,
        receivedNonce: 2n,
        address: "192.0.2.7:40000",
        streamingTo: "frontend-a:9090",
      });
      await h.store.recordClientContact({ clientId: polling, sentNonce: 3n, receivedNonce: 4n, address: "192.0.2.8:40001" });
    });
    after(() => h.close());

    describe("InsertMessage", () => {
      it("stores a client message, fills message_id and creation_time, and notifies the streaming frontend", async () => {
        h.notifier.calls.length = 0;
        const m = clientMessage(streaming);
        await h.client.insertMessage(m);
        const pending = await h.client.getPendingMessages({ clientIds: [streaming], wantData: true });
        assert.equal(pending.messages.length, 1);
        const got = pending.messages[0]!;
        assert.equal(got.messageId.length, 32);
        assert.ok(got.creationTime && Math.abs(timestampMs(got.creationTime) - Date.now()) < 60_000);
        assert.equal(got.data?.typeUrl, m.data?.typeUrl);
        assert.deepEqual(got.data?.value, m.data?.value);
        assert.equal(h.notifier.calls.length, 1);
        assert.equal(h.notifier.calls[0]!.target, "frontend-a:9090");
        assert.equal(bytesToHex(h.notifier.calls[0]!.clientId), bytesToHex(streaming));
        await h.client.deletePendingMessages({ clientIds: [streaming] });
      });

      it("keeps a caller-supplied message_id, and inserting it twice stores it once", async () => {
        const id = randomBytes(32);
        await h.client.insertMessage(clientMessage(polling, { messageId: id }));
        await h.client.insertMessage(clientMessage(polling, { messageId: id }));
        const pending = await h.client.getPendingMessages({ clientIds: [polling] });
        assert.deepEqual(
          pending.messages.map((m) => bytesToHex(m.messageId)),
          [bytesToHex(id)],
        );
        const status = await h.client.getMessageStatus({ messageId: id });
        assert.ok(status.creationTime);
        assert.equal(status.result, undefined);
        await h.client.deletePendingMessages({ clientIds: [polling] });
      });

      it("concurrent inserts (stored together) each answer for their own message; duplicates are stored once", async () => {
        const id = randomBytes(32);
        const msgs = Array.from({ length: 30 }, (_, i) => clientMessage(polling, i < 2 ? { messageId: id } : {}));
        const results = await Promise.allSettled([
          ...msgs.map((m) => h.client.insertMessage(m)),
          h.client.insertMessage(clientMessage(randomBytes(8))),
        ]);
        assert.deepEqual(
          results.slice(0, 30).map((r) => r.status),
          Array(30).fill("fulfilled"),
        );
        assert.equal(results[30]!.status, "rejected");
        assert.equal((await h.client.getPendingMessageCount({ clientIds: [polling] })).count, 29n);
        await h.client.deletePendingMessages({ clientIds: [polling] });
      });

      it("does not notify when the client last polled instead of streaming", async () => {
        h.notifier.calls.length = 0;
        await h.client.insertMessage(clientMessage(polling));
        assert.equal(h.notifier.calls.length, 0);
        await h.client.deletePendingMessages({ clientIds: [polling] });
      });

      it("succeeds when the notifier fails or hangs (the message is stored)", async () => {
        for (const behaviour of ["fail", "hang"] as const) {
          h.notifier.behaviour = behaviour;
          h.notifier.calls.length = 0;
          await h.client.insertMessage(clientMessage(streaming));
          assert.equal(h.notifier.calls.length, 1);
        }
        h.notifier.behaviour = "ok";
        const count = await h.client.getPendingMessageCount({ clientIds: [streaming] });
        assert.equal(count.count, 2n);
        await h.client.deletePendingMessages({ clientIds: [streaming] });
      });

      it("stores a message for a server service as pending, without notifying", async () => {
        h.notifier.calls.length = 0;
        const id = randomBytes(32);
        await h.client.insertMessage(
          create(MessageSchema, { messageId: id, source: { serviceName: "GRR" }, destination: { serviceName: "GRR" } }),
        );
        const status = await h.client.getMessageStatus({ messageId: id });
        assert.ok(status.creationTime);
        assert.equal(status.result, undefined);
        assert.equal(h.notifier.calls.length, 0);
      });

      it("refuses messages without destination or source", async () => {
        await rejectsWith(
          h.client.insertMessage(create(MessageSchema, { source: { serviceName: "GRR" } })),
          Code.InvalidArgument,
          /^message must have Destination/,
        );
        await rejectsWith(
          h.client.insertMessage(create(MessageSchema, { destination: { clientId: streaming, serviceName: "GRR" } })),
          Code.InvalidArgument,
          /^message must have Source/,
        );
        await rejectsWith(
          h.client.insertMessage(
            create(MessageSchema, { source: { serviceName: "" }, destination: { serviceName: "GRR" } }),
          ),
          Code.InvalidArgument,
          /^message must have Source/,
        );
      });

      it("refuses a bad client ID, an unknown client and a bad message ID", async () => {
        await rejectsWith(
          h.client.insertMessage(clientMessage(randomBytes(5))),
          Code.InvalidArgument,
          /^error parsing destination\.client_id \([0-9a-f]{10}\): ClientID must be 8 bytes, got 5/,
        );
        const unknown = randomBytes(8);
        await rejectsWith(
          h.client.insertMessage(clientMessage(unknown)),
          Code.NotFound,
          new RegExp(`^expected 1 destination client result, got 0: client ${bytesToHex(unknown)} is not known`),
        );
        await rejectsWith(
          h.client.insertMessage(clientMessage(polling, { messageId: randomBytes(16) })),
          Code.InvalidArgument,
          /^message_id: MessageID must be 32 bytes, got 16/,
        );
      });

      it("refuses client messages over 2 MiB, accepts server messages up to the 4 MiB gRPC limit", async () => {
        const big = (n: number) => create(AnySchema, { typeUrl: "type.googleapis.com/test.Blob", value: new Uint8Array(n) });
        await rejectsWith(
          h.client.insertMessage(clientMessage(polling, { data: big(2 * 1024 * 1024) })),
          Code.ResourceExhausted,
          new RegExp(`^message intended for client ${bytesToHex(polling)} is of size \\d+, which exceeds the 2097152-byte limit`),
        );
        const id = randomBytes(32);
        await h.client.insertMessage(
          create(MessageSchema, {
            messageId: id,
            source: { serviceName: "GRR" },
            destination: { serviceName: "GRR" },
            data: big(3 * 1024 * 1024),
          }),
        );
        assert.ok((await h.client.getMessageStatus({ messageId: id })).creationTime);
        await rejectsWith(
          h.client.insertMessage(
            create(MessageSchema, { source: { serviceName: "GRR" }, destination: { serviceName: "GRR" }, data: big(5 * 1024 * 1024) }),
          ),
          Code.ResourceExhausted,
          /./,
        );
        assert.equal((await h.client.getPendingMessageCount({ clientIds: [polling] })).count, 0n);
      });
    });

    describe("clients", () => {
      it("ListClients returns every client with labels, or the known ones of a list", async () => {
        const all = await h.client.listClients({});
        assert.equal(all.clients.length, 3);
        const some = await h.client.listClients({ clientIds: [streaming, randomBytes(8)] });
        assert.equal(some.clients.length, 1);
        const c = some.clients[0]!;
        assert.equal(bytesToHex(c.clientId), bytesToHex(streaming));
        assert.deepEqual(c.labels.map((l) => `${l.serviceName}:${l.label}`).sort(), ["client:corp", "client:linux"]);
        assert.equal(c.lastContactAddress, "192.0.2.7:40000");
        assert.equal(c.lastContactStreamingTo, "frontend-a:9090");
        assert.ok(c.lastContactTime);
        assert.equal(c.blacklisted, false);
      });

      it("ListClients refuses a bad ID, naming its index", async () => {
        await rejectsWith(
          h.client.listClients({ clientIds: [streaming, randomBytes(3)] }),
          Code.InvalidArgument,
          /^unable to parse id \[1\]: ClientID must be 8 bytes, got 3/,
        );
      });

      it("StreamClientIds leaves out blacklisted clients unless asked, and filters on last contact", async () => {
        const ids = async (req: Parameters<typeof h.client.streamClientIds>[0]) => {
          const out: string[] = [];
          for await (const r of h.client.streamClientIds(req)) out.push(bytesToHex(r.clientId));
          return out.sort();
        };
        assert.deepEqual(await ids({}), [bytesToHex(streaming), bytesToHex(polling)].sort());
        assert.deepEqual(
          await ids({ includeBlacklisted: true }),
          [bytesToHex(streaming), bytesToHex(polling), bytesToHex(blacklisted)].sort(),
        );
        assert.deepEqual(await ids({ includeBlacklisted: true, lastContactAfter: timestampFromMs(Date.now() + 60_000) }), []);
      });

      it("ListClientContacts and StreamClientContacts return the recorded contacts", async () => {
        const list = await h.client.listClientContacts({ clientId: streaming });
        assert.equal(list.contacts.length, 1);
        assert.equal(list.contacts[0]!.observedAddress, "192.0.2.7:40000");
        assert.equal(list.contacts[0]!.sentNonce, 1n);
        assert.equal(list.contacts[0]!.receivedNonce, 2n);
        const streamed = [];
        for await (const r of h.client.streamClientContacts({ clientId: streaming })) streamed.push(r.contact);
        assert.equal(streamed.length, 1);
        assert.equal(streamed[0]!.observedAddress, "192.0.2.7:40000");
        assert.equal((await h.client.listClientContacts({ clientId: randomBytes(8) })).contacts.length, 0);
        await rejectsWith(h.client.listClientContacts({ clientId: randomBytes(9) }), Code.InvalidArgument, /ClientID must be 8 bytes/);
        const bad = async () => {
          for await (const _ of h.client.streamClientContacts({ clientId: new Uint8Array() })) {
            // Drain.
          }
        };
        await rejectsWith(bad(), Code.InvalidArgument, /ClientID must be 8 bytes, got 0/);
      });

      it("BlacklistClient marks a client; an unknown client is not an error", async () => {
        const c = randomBytes(8);
        await h.store.addClient(c, { key: randomBytes(91), labels: [], blacklisted: false });
        await h.client.blacklistClient({ clientId: c });
        assert.equal((await h.client.listClients({ clientIds: [c] })).clients[0]!.blacklisted, true);
        await h.client.blacklistClient({ clientId: randomBytes(8) });
        await rejectsWith(h.client.blacklistClient({ clientId: randomBytes(2) }), Code.InvalidArgument, /ClientID must be 8 bytes/);
      });
    });

    describe("messages", () => {
      it("GetMessageStatus: unknown or empty ID is OK and empty, a bad length is refused", async () => {
        const unknown = await h.client.getMessageStatus({ messageId: randomBytes(32) });
        assert.equal(unknown.creationTime, undefined);
        assert.equal(unknown.result, undefined);
        assert.equal((await h.client.getMessageStatus({})).creationTime, undefined);
        await rejectsWith(
          h.client.getMessageStatus({ messageId: randomBytes(31) }),
          Code.InvalidArgument,
          /MessageID must be 32 bytes, got 31/,
        );
      });

      it("DeletePendingMessages fails the client's pending messages with Fleetspeak's reason", async () => {
        const id = randomBytes(32);
        await h.client.insertMessage(clientMessage(polling, { messageId: id }));
        await h.client.deletePendingMessages({ clientIds: [polling] });
        const status = await h.client.getMessageStatus({ messageId: id });
        assert.equal(status.result?.failed, true);
        assert.equal(status.result?.failedReason, "Removed by admin action.");
        assert.ok(status.result?.processedTime);
        assert.equal((await h.client.getPendingMessageCount({ clientIds: [polling] })).count, 0n);
      });

      it("empty ID lists are no-ops", async () => {
        await h.client.deletePendingMessages({});
        assert.equal((await h.client.getPendingMessages({})).messages.length, 0);
        assert.equal((await h.client.getPendingMessageCount({})).count, 0n);
        await h.client.disableBroadcasts({});
      });

      it("GetPendingMessages pages by message ID and returns data only when asked", async () => {
        const ids = [randomBytes(32), randomBytes(32), randomBytes(32)];
        for (const messageId of ids) await h.client.insertMessage(clientMessage(polling, { messageId }));
        const sorted = ids.map(bytesToHex).sort();
        const all = await h.client.getPendingMessages({ clientIds: [polling] });
        assert.deepEqual(all.messages.map((m) => bytesToHex(m.messageId)), sorted);
        assert.equal(all.messages[0]!.data, undefined);
        assert.equal(all.messages[0]!.destination?.serviceName, "GRR");
        const page = await h.client.getPendingMessages({ clientIds: [polling], offset: 1n, limit: 1n, wantData: true });
        assert.deepEqual(page.messages.map((m) => bytesToHex(m.messageId)), [sorted[1]]);
        assert.ok(page.messages[0]!.data);
        await rejectsWith(
          h.client.getPendingMessages({ clientIds: [polling], offset: 1n }),
          Code.InvalidArgument,
          /^Can't read pending messages: if offset is provided, a limit must be provided as well$/,
        );
        await rejectsWith(
          h.client.getPendingMessages({ clientIds: [new Uint8Array(4)] }),
          Code.InvalidArgument,
          /^Can't read pending messages: client_ids\[0\]: ClientID must be 8 bytes, got 4$/,
        );
        assert.equal((await h.client.getPendingMessageCount({ clientIds: [polling, streaming] })).count, 3n);
        await h.client.deletePendingMessages({ clientIds: [polling] });
      });
    });

    describe("files", () => {
      it("StoreFile and DeleteFile need both names; deleting a missing file is OK", async () => {
        await h.client.storeFile({ serviceName: "system", fileName: "payload.bin", data: new Uint8Array([1, 2, 3]) });
        assert.deepEqual([...((await h.store.readFile("system", "payload.bin"))?.data ?? [])], [1, 2, 3]);
        await h.client.deleteFile({ serviceName: "system", fileName: "payload.bin" });
        assert.equal(await h.store.readFile("system", "payload.bin"), undefined);
        await h.client.deleteFile({ serviceName: "system", fileName: "payload.bin" });
        await rejectsWith(
          h.client.storeFile({ serviceName: "system" }),
          Code.InvalidArgument,
          /^file must have service_name and file_name$/,
        );
        await rejectsWith(h.client.deleteFile({ fileName: "x" }), Code.InvalidArgument, /^file must have service_name and file_name$/);
      });
    });

    describe("resource usage", () => {
      it("FetchClientResourceUsageRecords returns records in [start, end) and validates the range", async () => {
        await h.store.recordResourceUsageData(
          polling,
          create(ResourceUsageDataSchema, {
            scope: "GRR",
            pid: 42n,
            processStartTime: timestampFromMs(Date.now() - 3_600_000),
            dataTimestamp: timestampFromMs(Date.now()),
            resourceUsage: { meanUserCpuRate: 1.5, maxResidentMemory: 300n * 1024n * 1024n },
          }),
        );
        const now = Date.now();
        const res = await h.client.fetchClientResourceUsageRecords({
          clientId: polling,
          startTimestamp: timestampFromMs(now - 60_000),
          endTimestamp: timestampFromMs(now + 60_000),
        });
        assert.equal(res.records.length, 1);
        assert.equal(res.records[0]!.scope, "GRR");
        assert.equal(res.records[0]!.pid, 42n);
        assert.equal(res.records[0]!.maxResidentMemoryMib, 300);
        const none = await h.client.fetchClientResourceUsageRecords({
          clientId: polling,
          startTimestamp: timestampFromMs(now + 60_000),
          endTimestamp: timestampFromMs(now + 120_000),
        });
        assert.equal(none.records.length, 0);
        await rejectsWith(
          h.client.fetchClientResourceUsageRecords({ clientId: polling, endTimestamp: timestampFromMs(now) }),
          Code.InvalidArgument,
          /^invalid nil Timestamp: start_timestamp is required$/,
        );
        await rejectsWith(
          h.client.fetchClientResourceUsageRecords({
            clientId: polling,
            startTimestamp: timestampFromMs(now),
            endTimestamp: timestampFromMs(now - 1000),
          }),
          Code.InvalidArgument,
          /^timerange is invalid: start timestamp is after end timestamp$/,
        );
        await rejectsWith(
          h.client.fetchClientResourceUsageRecords({
            clientId: polling,
            startTimestamp: { seconds: 0n, nanos: 2_000_000_000 },
            endTimestamp: timestampFromMs(now),
          }),
          Code.InvalidArgument,
          /out-of-range nanos/,
        );
      });
    });

    describe("broadcasts", () => {
      const broadcast = (init: MessageInitShape<typeof BroadcastSchema> = {}) =>
        create(BroadcastSchema, {
          source: { serviceName: "GRR" },
          destination: { serviceName: "GRR" },
          messageType: "Hello",
          requiredLabels: [{ serviceName: "client", label: "linux" }],
          ...init,
        } as MessageInitShape<typeof BroadcastSchema>);

      it("CreateBroadcast, ListActiveBroadcasts (filtered by source service), DisableBroadcasts", async () => {
        const id = randomBytes(8);
        await h.client.createBroadcast({ broadcast: broadcast({ broadcastId: id }), limit: BROADCAST_UNLIMITED });
        await h.client.createBroadcast({ broadcast: broadcast({ source: { serviceName: "other" } }), limit: 10n });
        const grr = await h.client.listActiveBroadcasts({ serviceName: "GRR" });
        assert.deepEqual(grr.broadcasts.map((b) => bytesToHex(b.broadcastId)), [bytesToHex(id)]);
        assert.equal(grr.broadcasts[0]!.messageType, "Hello");
        assert.equal((await h.client.listActiveBroadcasts({})).broadcasts.length, 2);
        await h.client.disableBroadcasts({ broadcastIds: [id, randomBytes(8)] });
        assert.equal((await h.client.listActiveBroadcasts({ serviceName: "GRR" })).broadcasts.length, 0);
      });

      it("refuses a request without broadcast, a bad ID, a missing source, and group_name", async () => {
        await rejectsWith(h.client.createBroadcast({}), Code.InvalidArgument, /broadcast is required/);
        await rejectsWith(
          h.client.createBroadcast({ broadcast: broadcast({ broadcastId: randomBytes(4) }), limit: 1n }),
          Code.InvalidArgument,
          /BroadcastID must be 8 bytes, got 4/,
        );
        await rejectsWith(
          h.client.createBroadcast({ broadcast: broadcast({ source: undefined }), limit: 1n }),
          Code.InvalidArgument,
          /^Broadcast must have Source/,
        );
        await rejectsWith(
          h.client.createBroadcast({ broadcast: broadcast({ groupName: "g" }), limit: 1n }),
          Code.Unimplemented,
          new RegExp(`^broadcast replacement feature is not supported by the ${h.store.backend} datastore: feature not supported`),
        );
        await rejectsWith(
          h.client.disableBroadcasts({ broadcastIds: [randomBytes(8), randomBytes(7)] }),
          Code.InvalidArgument,
          /^unable to parse broadcast_ids\[1\]: BroadcastID must be 8 bytes, got 7$/,
        );
      });
    });

    it("KeepAlive answers", async () => {
      await h.client.keepAlive({});
    });
  });
}

describe("admin service with the database down", () => {
  it("answers UNAVAILABLE with an actionable message", async () => {
    const h = await startAdminHarness("sqlite", { storeHoldMs: 300 });
    try {
      await h.store.close();
      await rejectsWith(h.client.listClients({}), Code.Unavailable, /^ListClients: the database is unavailable \(.*\); nothing was changed, retry later$/);
      await rejectsWith(
        h.client.insertMessage(create(MessageSchema, { source: { serviceName: "GRR" }, destination: { serviceName: "GRR" } })),
        Code.Unavailable,
        /^InsertMessage: the database is unavailable/,
      );
      const drain = async () => {
        for await (const _ of h.client.streamClientIds({})) {
          // Drain.
        }
      };
      await rejectsWith(drain(), Code.Unavailable, /^StreamClientIds: the database is unavailable/);
      await h.client.keepAlive({});
    } finally {
      await h.server.close();
    }
  });

  it("holds InsertMessage while the database is briefly out of reach, and stores the message once it is back", async () => {
    const db = await createTestDatabase();
    const o = parseMysqlDsn(db.dsn);
    const proxy = await startMysqlProxy(o.socketPath ? { path: o.socketPath } : { host: o.host!, port: o.port! });
    const h = await startAdminHarness("mariadb", {
      storeHoldMs: 10_000,
      openStore: async () => {
        const store = await MysqlStore.fromDsn(proxiedDsn(db.dsn, proxy.port), { poolSize: 2 });
        return {
          store,
          cleanup: async () => {
            await store.close();
            await proxy.close();
            await db.drop();
          },
        };
      },
    });
    try {
      const [known, unread] = [randomBytes(8), randomBytes(8)];
      for (const id of [known, unread]) await h.store.addClient(id, { key: randomBytes(91), labels: [], blacklisted: false });
      await h.client.insertMessage(clientMessage(known));
      proxy.setDown(true);
      // One client's record was read already; the other's must be read while the database is away.
      const held = [h.client.insertMessage(clientMessage(known)), h.client.insertMessage(clientMessage(unread))];
      await new Promise((r) => setTimeout(r, 700));
      proxy.setDown(false);
      await Promise.all(held);
      assert.equal((await h.client.getPendingMessageCount({ clientIds: [known] })).count, 2n);
      assert.equal((await h.client.getPendingMessageCount({ clientIds: [unread] })).count, 1n);
    } finally {
      await h.close();
    }
  });
});

/** The store, counting the client lookups (listClients) made through it. */
function countingListClients(store: Store, counter: { reads: number }): Store {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === "listClients") {
        return (ids: Uint8Array[]) => {
          counter.reads++;
          return target.listClients(ids);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** A frontend's notification listener whose answer (held or not) the test sets per client. */
async function startFrontendListener(): Promise<{
  listener: HttpNotificationListener;
  address: string;
  holds: Set<string>;
  woken: string[];
}> {
  const holds = new Set<string>();
  const woken: string[] = [];
  const listener = new HttpNotificationListener({ listenAddress: "127.0.0.1:0", logger: createLogger("frontend-test") });
  await listener.start((id) => {
    woken.push(bytesToHex(id));
    return holds.has(bytesToHex(id));
  });
  return { listener, address: listener.boundAddress, holds, woken };
}

/** A plain HTTP server on 127.0.0.1:0; `handle` answers (or never answers) each request. */
async function startPlainServer(
  handle: Parameters<typeof createServer>[1],
): Promise<{ server: Server; address: string; close(): Promise<void> }> {
  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

async function eventually(what: string, check: () => boolean): Promise<void> {
  for (let waited = 0; !check(); waited += 10) {
    if (waited > 5_000) assert.fail(`${what}: not within 5 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("InsertMessage remembers where clients stream (sqlite)", () => {
  let h: AdminHarness;
  const counter = { reads: 0 };
  const httpNotifier = new HttpNotifier({ timeoutMs: 5_000 });
  let frontendA: Awaited<ReturnType<typeof startFrontendListener>>;
  let frontendB: Awaited<ReturnType<typeof startFrontendListener>>;

  before(async () => {
    h = await startAdminHarness("sqlite", {
      forwardTo: httpNotifier,
      wrapStore: (store) => countingListClients(store, counter),
    });
    frontendA = await startFrontendListener();
    frontendB = await startFrontendListener();
  });
  after(async () => {
    httpNotifier.close();
    await frontendA.listener.stop();
    await frontendB.listener.stop();
    await h.close();
  });

  async function addClient(streamingTo?: string): Promise<Uint8Array> {
    const id = randomBytes(8);
    await h.store.addClient(id, { key: randomBytes(91), labels: [], blacklisted: false });
    await recordStream(id, streamingTo);
    return id;
  }

  /** The client's contact as a frontend records it: streaming to `streamingTo`, or polling. */
  async function recordStream(id: Uint8Array, streamingTo?: string): Promise<void> {
    await h.store.recordClientContact({
      clientId: id,
      sentNonce: 1n,
      receivedNonce: 2n,
      address: "192.0.2.9:40000",
      ...(streamingTo !== undefined ? { streamingTo } : {}),
    });
  }

  /** Runs `body` and answers how many client lookups the admin service made meanwhile. */
  async function readsDuring(body: () => Promise<void>): Promise<number> {
    const before = counter.reads;
    await body();
    return counter.reads - before;
  }

  const targetsFor = (id: Uint8Array) =>
    h.notifier.calls.filter((c) => bytesToHex(c.clientId) === bytesToHex(id)).map((c) => c.target);

  it("reads a client from the store once for repeated and concurrent inserts", async () => {
    const id = await addClient(frontendA.address);
    frontendA.holds.add(bytesToHex(id));
    const reads = await readsDuring(async () => {
      for (let i = 0; i < 5; i++) await h.client.insertMessage(clientMessage(id));
      await Promise.all(Array.from({ length: 10 }, () => h.client.insertMessage(clientMessage(id))));
    });
    assert.equal(reads, 1);
    assert.deepEqual(targetsFor(id), Array(15).fill(frontendA.address));
    assert.equal((await h.client.getPendingMessageCount({ clientIds: [id] })).count, 15n);
  });

  it("remembers a polling client too (nothing to notify), and reads it once", async () => {
    const id = await addClient();
    const reads = await readsDuring(async () => {
      for (let i = 0; i < 3; i++) await h.client.insertMessage(clientMessage(id));
    });
    assert.equal(reads, 1);
    assert.deepEqual(targetsFor(id), []);
  });

  it("never remembers an unknown client: once it enrolls, its messages are accepted at once", async () => {
    const id = randomBytes(8);
    const reads = await readsDuring(async () => {
      for (let i = 0; i < 2; i++) {
        await rejectsWith(h.client.insertMessage(clientMessage(id)), Code.NotFound, /is not known to this server/);
      }
      await h.store.addClient(id, { key: randomBytes(91), labels: [], blacklisted: false });
      await h.client.insertMessage(clientMessage(id));
    });
    assert.equal(reads, 3);
    assert.equal((await h.client.getPendingMessageCount({ clientIds: [id] })).count, 1n);
  });

  it("reads a client afresh after a notification to its remembered frontend failed", async () => {
    const id = await addClient(frontendA.address);
    frontendA.holds.add(bytesToHex(id));
    const reads = await readsDuring(async () => {
      await h.client.insertMessage(clientMessage(id));
      h.notifier.behaviour = "fail";
      try {
        await h.client.insertMessage(clientMessage(id));
      } finally {
        h.notifier.behaviour = "ok";
      }
      await h.client.insertMessage(clientMessage(id));
    });
    assert.equal(reads, 2, "the failure made the admin server forget the address");
  });

  it("reads a client afresh after BlacklistClient", async () => {
    const id = await addClient(frontendA.address);
    frontendA.holds.add(bytesToHex(id));
    const reads = await readsDuring(async () => {
      await h.client.insertMessage(clientMessage(id));
      await h.client.blacklistClient({ clientId: id });
      await h.client.insertMessage(clientMessage(id));
    });
    assert.equal(reads, 2);
  });

  it("a client that moved: the remembered frontend answers absent, the store names another, that one is notified", async () => {
    const id = await addClient(frontendA.address);
    const hex = bytesToHex(id);
    frontendA.holds.add(hex);
    await h.client.insertMessage(clientMessage(id));

    // The client reconnects through frontend B; A no longer holds its stream.
    frontendA.holds.delete(hex);
    frontendB.holds.add(hex);
    await recordStream(id, frontendB.address);
    const reads = await readsDuring(async () => {
      await h.client.insertMessage(clientMessage(id));
      await eventually("frontend B notified", () => frontendB.woken.includes(hex));
    });
    assert.equal(reads, 1);
    assert.deepEqual(targetsFor(id), [frontendA.address, frontendA.address, frontendB.address]);

    // From then on B is remembered.
    assert.equal(await readsDuring(() => h.client.insertMessage(clientMessage(id)).then(() => {})), 0);
    assert.deepEqual(targetsFor(id).slice(3), [frontendB.address]);
  });

  it("a client whose remembered frontend died: the notification is refused, the store names another, that one is notified", async () => {
    const dead = await startFrontendListener();
    const id = await addClient(dead.address);
    const hex = bytesToHex(id);
    dead.holds.add(hex);
    await h.client.insertMessage(clientMessage(id));

    // The frontend dies (connections refused); the client reconnects through frontend B.
    await dead.listener.stop();
    frontendB.holds.add(hex);
    await recordStream(id, frontendB.address);
    await h.client.insertMessage(clientMessage(id));
    // Without this, the message would wait for B's due-message sweep.
    await eventually("frontend B notified", () => frontendB.woken.includes(hex));
    assert.deepEqual(targetsFor(id), [dead.address, dead.address, frontendB.address]);
  });

  it("a frontend that answers absent while the store still names it is notified once (no loop)", async () => {
    const id = await addClient(frontendA.address);
    const reads = await readsDuring(async () => {
      await h.client.insertMessage(clientMessage(id));
      await h.client.insertMessage(clientMessage(id));
    });
    // Each insert: the lookup, then the re-read after "absent"; the second insert's lookup was
    // answered by what the first one's re-read remembered.
    assert.equal(reads, 3);
    assert.deepEqual(targetsFor(id), [frontendA.address, frontendA.address]);
  });

  it("a 200 without the presence header (a Go frontend) counts as held: no second lookup", async () => {
    const goFrontend = await startPlainServer((_req, res) => {
      res.writeHead(200);
      res.end();
    });
    try {
      const id = await addClient(goFrontend.address);
      const reads = await readsDuring(async () => {
        await h.client.insertMessage(clientMessage(id));
        await h.client.insertMessage(clientMessage(id));
      });
      assert.equal(reads, 1);
      assert.deepEqual(targetsFor(id), [goFrontend.address, goFrontend.address]);
    } finally {
      await goFrontend.close();
    }
  });

  it("following a move stays within the notification wait: a hanging new frontend does not hold InsertMessage", async () => {
    const hanging = await startPlainServer(() => {});
    try {
      const id = await addClient(frontendA.address);
      frontendA.holds.add(bytesToHex(id));
      await h.client.insertMessage(clientMessage(id));
      frontendA.holds.delete(bytesToHex(id));
      await recordStream(id, hanging.address);
      const started = Date.now();
      await h.client.insertMessage(clientMessage(id));
      const tookMs = Date.now() - started;
      assert.ok(tookMs < 2_000, `InsertMessage took ${tookMs} ms; the harness waits 200 ms for notifications`);
      await eventually("the new frontend notified", () => targetsFor(id).includes(hanging.address));
    } finally {
      await hanging.close();
    }
  });
});
