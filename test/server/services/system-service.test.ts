import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { bytesToHex, randomMessageId } from "../../../src/common/ids.js";
import { LabelSchema, type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import {
  ClientInfoDataSchema,
  MessageAckDataSchema,
  MessageErrorDataSchema,
} from "../../../src/gen/fleetspeak/system_pb.js";
import {
  type KillNotification,
  KillNotification_Reason,
  KillNotificationSchema,
  ResourceUsageDataSchema,
} from "../../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { ServiceManager } from "../../../src/server/services/manager.js";
import { addClient, capturingLogger, fromClient, type LogLine, openTestStore, type TestStore } from "./harness.js";

const label = (serviceName: string, l: string) => create(LabelSchema, { serviceName, label: l });

describe("system service", () => {
  let ts: TestStore;
  let manager: ServiceManager;
  let lines: LogLine[];
  const invalidated: string[] = [];
  const kills: { client: string; kn: KillNotification }[] = [];
  const acked: number[] = [];

  before(async () => {
    ts = await openTestStore();
    const captured = capturingLogger();
    lines = captured.lines;
    manager = new ServiceManager({
      store: ts.store,
      logger: captured.logger,
      lookupClient: (id) => ts.store.getClientData(id),
      invalidateClient: (id) => invalidated.push(bytesToHex(id)),
      systemHooks: {
        onKillNotification: (id, kn) => kills.push({ client: bytesToHex(id), kn }),
        onMessagesAcked: (n) => acked.push(n),
      },
    });
  });
  after(async () => {
    await manager.stop();
    await ts.close();
  });

  /** Client-bound messages as the admin API stores them. */
  async function sendToClient(clientId: Uint8Array, init: { source?: string; messageType?: string } = {}): Promise<Message> {
    const m = create(MessageSchema, {
      messageId: randomMessageId(),
      source: { serviceName: init.source ?? "GRR" },
      destination: { clientId, serviceName: "GRR" },
      messageType: init.messageType ?? "GrrMessage",
      creationTime: timestampNow(),
    });
    await ts.store.storeMessages([m]);
    return m;
  }

  async function resultOf(id: Uint8Array) {
    return (await ts.store.getMessageStatus(id))?.result;
  }

  it("MessageAck marks the client's messages processed, skips others' and logs unknown IDs", async () => {
    const c = await addClient(ts.store);
    const other = await addClient(ts.store);
    const mine = [await sendToClient(c.id), await sendToClient(c.id)];
    const theirs = await sendToClient(other.id);
    const unknown = randomBytes(32);
    const ack = fromClient(
      c.id,
      "system",
      "MessageAck",
      MessageAckDataSchema,
      create(MessageAckDataSchema, { messageIds: [...mine.map((m) => m.messageId), theirs.messageId, unknown] }),
    );
    await manager.handleClientMessages([ack], c.contactId);
    for (const m of mine) {
      const r = await resultOf(m.messageId);
      assert.ok(r?.processedTime);
      assert.equal(r.failed, false);
    }
    assert.equal(await resultOf(theirs.messageId), undefined);
    const ackResult = await resultOf(ack.messageId);
    assert.equal(ackResult?.failed, false, "the ack itself is processed");
    const warn = lines.find((l) => l.msg === "client acked unknown messages");
    assert.deepEqual(warn?.missing, [bytesToHex(unknown)]);
  });

  it("MessageAcks of several streams arriving together are applied in bulk and not kept as messages", async () => {
    const clients = [await addClient(ts.store), await addClient(ts.store), await addClient(ts.store)];
    const sent = await Promise.all(clients.map(async (c) => [await sendToClient(c.id), await sendToClient(c.id)]));
    const acks = clients.map((c, i) =>
      fromClient(
        c.id,
        "system",
        "MessageAck",
        MessageAckDataSchema,
        create(MessageAckDataSchema, { messageIds: sent[i]!.map((m) => m.messageId) }),
      ),
    );
    acked.length = 0;
    await Promise.all(acks.map((ack, i) => manager.handleClientMessages([ack], clients[i]!.contactId)));
    for (const m of sent.flat()) assert.ok((await resultOf(m.messageId))?.processedTime);
    assert.equal(await ts.store.getPendingMessageCount(clients.map((c) => c.id)), 0n);
    assert.equal(
      acked.reduce((a, b) => a + b, 0),
      6,
    );
    for (const ack of acks) {
      assert.ok(ack.result?.processedTime, "the caller sees the ack as processed");
      assert.equal(await ts.store.getMessageStatus(ack.messageId), undefined, "a fully applied ack is not stored");
    }
  });

  it("MessageAck from a rekeyed client completes its RekeyRequest sent to the old ID", async () => {
    const oldId = await addClient(ts.store);
    const newId = await addClient(ts.store);
    const rekey = await sendToClient(oldId.id, { source: "system", messageType: "RekeyRequest" });
    const ack = fromClient(
      newId.id,
      "system",
      "MessageAck",
      MessageAckDataSchema,
      create(MessageAckDataSchema, { messageIds: [rekey.messageId] }),
    );
    await manager.handleClientMessages([ack], newId.contactId);
    assert.ok((await resultOf(rekey.messageId))?.processedTime);
  });

  it("MessageError marks the message failed with the client's error text", async () => {
    const c = await addClient(ts.store);
    const m = await sendToClient(c.id);
    const err = fromClient(
      c.id,
      "system",
      "MessageError",
      MessageErrorDataSchema,
      create(MessageErrorDataSchema, { messageId: m.messageId, error: "service GRR is not installed" }),
    );
    await manager.handleClientMessages([err], c.contactId);
    const r = await resultOf(m.messageId);
    assert.equal(r?.failed, true);
    assert.equal(r?.failedReason, "service GRR is not installed");

    const unknown = fromClient(
      c.id,
      "system",
      "MessageError",
      MessageErrorDataSchema,
      create(MessageErrorDataSchema, { messageId: randomBytes(32), error: "x" }),
    );
    await manager.handleClientMessages([unknown], c.contactId);
    assert.match((await resultOf(unknown.messageId))?.failedReason ?? "", /^expected one result from GetMessages, got 0/);
  });

  it("MessageError for another client's message fails the error message, not the target", async () => {
    const c = await addClient(ts.store);
    const other = await addClient(ts.store);
    const m = await sendToClient(other.id);
    const err = fromClient(
      c.id,
      "system",
      "MessageError",
      MessageErrorDataSchema,
      create(MessageErrorDataSchema, { messageId: m.messageId, error: "x" }),
    );
    await manager.handleClientMessages([err], c.contactId);
    assert.equal(await resultOf(m.messageId), undefined);
    assert.match((await resultOf(err.messageId))?.failedReason ?? "", /^attempt by client \[[0-9a-f]{16}\] to ack a message meant for client/);
  });

  it("ClientInfo syncs the client's own labels only, and invalidates the cached record", async () => {
    const c = await addClient(ts.store, {
      labels: [label("client", "old"), label("client", "keep"), label("GRR", "set-by-grr")],
    });
    const info = fromClient(
      c.id,
      "system",
      "ClientInfo",
      ClientInfoDataSchema,
      create(ClientInfoDataSchema, {
        labels: [label("client", "keep"), label("client", "new"), label("other", "ignored")],
      }),
    );
    await manager.handleClientMessages([info], c.contactId);
    const data = await ts.store.getClientData(c.id);
    assert.deepEqual(data?.labels.map((l) => `${l.serviceName}:${l.label}`).sort(), [
      "GRR:set-by-grr",
      "client:keep",
      "client:new",
    ]);
    assert.ok(invalidated.includes(bytesToHex(c.id)));
    assert.equal((await resultOf(info.messageId))?.failed, false);
  });

  it("ResourceUsage is recorded for FetchClientResourceUsageRecords", async () => {
    const c = await addClient(ts.store);
    const ru = fromClient(
      c.id,
      "system",
      "ResourceUsage",
      ResourceUsageDataSchema,
      create(ResourceUsageDataSchema, {
        scope: "GRR",
        pid: 1234n,
        processStartTime: timestampFromMs(Date.now() - 60_000),
        dataTimestamp: timestampNow(),
        resourceUsage: { meanResidentMemory: 100 * 1024 * 1024, maxResidentMemory: 200n * 1024n * 1024n, maxNumFds: 12 },
      }),
    );
    await manager.handleClientMessages([ru], c.contactId);
    const records = await ts.store.fetchResourceUsageRecords(c.id, Date.now() - 60_000, Date.now() + 60_000);
    assert.equal(records.length, 1);
    assert.equal(records[0]!.pid, 1234n);
    assert.equal(records[0]!.maxResidentMemoryMib, 200);
  });

  it("KillNotification reaches the metrics hook", async () => {
    const c = await addClient(ts.store);
    const kn = fromClient(
      c.id,
      "system",
      "KillNotification",
      KillNotificationSchema,
      create(KillNotificationSchema, { service: "GRR", pid: 99n, reason: KillNotification_Reason.MEMORY_EXCEEDED }),
    );
    await manager.handleClientMessages([kn], c.contactId);
    assert.equal(kills.length, 1);
    assert.equal(kills[0]!.client, bytesToHex(c.id));
    assert.equal(kills[0]!.kn.reason, KillNotification_Reason.MEMORY_EXCEEDED);
    assert.equal((await resultOf(kn.messageId))?.failed, false);
  });

  it("fails unknown message types, missing data and payloads of the wrong type permanently", async () => {
    const c = await addClient(ts.store);
    const unknownType = fromClient(c.id, "system", "Frobnicate", MessageAckDataSchema, create(MessageAckDataSchema));
    const noData = fromClient(c.id, "system", "MessageAck", MessageAckDataSchema, create(MessageAckDataSchema));
    noData.data = undefined;
    const wrongType = fromClient(c.id, "system", "MessageError", MessageAckDataSchema, create(MessageAckDataSchema));
    await manager.handleClientMessages([unknownType, noData, wrongType], c.contactId);
    assert.equal((await resultOf(unknownType.messageId))?.failedReason, "unknown system message type: Frobnicate");
    assert.equal((await resultOf(noData.messageId))?.failedReason, "no Data present");
    assert.match(
      (await resultOf(wrongType.messageId))?.failedReason ?? "",
      /^unable to unmarshal data as MessageErrorData: payload has type "type.googleapis.com\/fleetspeak.MessageAckData"/,
    );
  });
});
