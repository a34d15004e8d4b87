// The client protocol end to end against a whole server, spoken by a client written from the
// wire spec (test/support/raw-client.ts), not by src/client.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { MessageAckDataSchema } from "../../../src/gen/fleetspeak/system_pb.js";
import { clientMessageId } from "../../../src/common/ids.js";
import { createTestDatabase, type TestDatabase } from "../../support/mariadb.js";
import { outMessage, RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { testServerPki } from "../../support/tls.js";

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const backend of ["sqlite", "mysql"] as const) describe(`frontend on ${backend}: polling and streaming with a spec-written client`, () => {
  let ts: TestServer;
  let db: TestDatabase | undefined;
  const client = (labels = ["linux", "custom"]) =>
    new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels });

  before(async () => {
    const pki = testServerPki();
    if (backend === "mysql") db = await createTestDatabase();
    ts = await startTestServer({
      components: {
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        adminConfig: { listenAddress: "127.0.0.1:0" },
        ...(db ? { mysqlDataSourceName: db.dsn } : {}),
      },
      overrides: { streamTimings: { lifespanMs: 3_000, closeBeforeMs: 1_000 }, sweepIntervalMs: 200, clientCacheTtlMs: 300 },
    });
  });
  after(async () => {
    await ts.stop();
    await db?.drop();
  });

  it("registers a new client on its first poll, with its labels, and stores its messages", async () => {
    const c = client();
    const m = outMessage("TestService", "Hello");
    const r = await c.poll({ messages: [m], AllowedMessages: { system: 100n, TestService: 100n } });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.cd!.sequencingNonce !== 0n);
    const { clients } = await ts.admin.listClients({ clientIds: [c.clientId] });
    assert.equal(clients.length, 1);
    assert.deepEqual(
      clients[0]!.labels.map((l) => `${l.serviceName}:${l.label}`).sort(),
      ["client:custom", "client:linux"],
    );
    assert.match(clients[0]!.lastContactAddress, /^127\.0\.0\.1:\d+$/);
    assert.equal(clients[0]!.lastContactStreamingTo, "");
    const id = clientMessageId(c.clientId, "TestService", m.sourceMessageId);
    const status = await ts.admin.getMessageStatus({ messageId: id });
    assert.ok(status.result?.processedTime, "NOOP service processed the message");
    assert.equal(status.result?.failed, false);
  });

  it("records a message for an unknown service as failed", async () => {
    const c = client();
    const m = outMessage("NoSuchService", "X");
    assert.equal((await c.poll({ messages: [m] })).status, 200);
    const status = await ts.admin.getMessageStatus({ messageId: clientMessageId(c.clientId, "NoSuchService", m.sourceMessageId) });
    assert.equal(status.result?.failed, true);
    assert.match(status.result?.failedReason ?? "", /unknown service "NoSuchService"/);
  });

  it("streams: frame 0 answers the initial frame, each later frame gets one ack", async () => {
    const c = client();
    const s = await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
    assert.ok(s.first.sequencingNonce !== 0n);
    assert.equal(s.first.ackIndex, 0n);
    s.send({ messages: [outMessage("TestService", "A")] });
    s.send({ messages: [] });
    const a1 = await s.next();
    const a2 = await s.next();
    assert.equal(a1?.ackIndex, 1n);
    assert.equal(a2?.ackIndex, 2n);
    const { clients } = await ts.admin.listClients({ clientIds: [c.clientId] });
    assert.equal(clients[0]!.lastContactStreamingTo, "local");
    s.close();
  });

  it("pushes a message inserted through the admin API onto the open stream at once, and an ack marks it processed", async () => {
    const c = client();
    await c.poll({}); // the client must exist before messages can be inserted for it
    const s = await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
    const messageId = Buffer.alloc(32, 7);
    messageId.writeUInt32BE(Date.now() % 2 ** 32, 0);
    await ts.admin.insertMessage({
      messageId,
      source: { serviceName: "TestService" },
      destination: { clientId: c.clientId, serviceName: "TestService" },
      messageType: "Ping",
    });
    const pushed = await s.next(5_000);
    assert.equal(pushed?.messages.length, 1);
    const got = pushed!.messages[0]!;
    assert.deepEqual(Buffer.from(got.messageId), messageId);
    assert.deepEqual(Buffer.from(got.destination!.clientId), c.clientId);
    const pending = await ts.admin.getPendingMessageCount({ clientIds: [c.clientId] });
    assert.equal(pending.count, 1n, "delivered but not yet acknowledged");
    const ack = outMessage("system", "MessageAck", anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds: [messageId] })));
    s.send({ messages: [ack] });
    await s.next();
    const status = await waitFor("ack to be recorded", async () => {
      const st = await ts.admin.getMessageStatus({ messageId });
      return st.result ? st : undefined;
    });
    assert.equal(status.result?.failed, false);
    assert.equal((await ts.admin.getPendingMessageCount({ clientIds: [c.clientId] })).count, 0n);
    s.close();
  });

  it("sends done_sending once before the end of the stream's lifespan, then closes", async () => {
    const c = client();
    const s = await c.stream({});
    const done = await s.next(5_000);
    assert.equal(done?.doneSending, true);
    assert.equal(await s.next(5_000), undefined, "stream closes after its lifespan");
  });

  it("tells a blacklisted client to rekey", async () => {
    const c = client();
    await c.poll({});
    await ts.admin.blacklistClient({ clientId: c.clientId });
    // The frontend caches client records (45 s by default, 300 ms here): the blacklisting shows
    // once the cached record expires.
    const r = await waitFor("RekeyRequest", async () => {
      const p = await c.poll({});
      return p.cd?.messages.some((m) => m.messageType === "RekeyRequest") ? p : undefined;
    });
    const rekey = r.cd!.messages.find((m) => m.messageType === "RekeyRequest")!;
    assert.equal(rekey.destination?.serviceName, "system");
    assert.deepEqual(Buffer.from(rekey.destination!.clientId), c.clientId);
  });

  it("holds back messages for a service until the client allows them (AllowedMessages tokens)", async () => {
    const c = client();
    await c.poll({});
    const s = await c.stream({ AllowedMessages: { system: 10n, TestService: 0n } });
    await ts.admin.insertMessage({
      source: { serviceName: "TestService" },
      destination: { clientId: c.clientId, serviceName: "TestService" },
      messageType: "Held",
    });
    await assert.rejects(s.next(700), /no frame/, "no tokens for TestService: nothing is pushed");
    s.send({ AllowedMessages: { TestService: 1n } });
    const frames = [await s.next(5_000), await s.next(5_000)];
    const pushed = frames.find((f) => f?.messages.length);
    assert.equal(pushed?.messages[0]?.messageType, "Held");
    assert.ok(frames.some((f) => f?.ackIndex === 1n), "the token frame is acknowledged");
    s.close();
  });

  it("refuses more than 100 messages in one contact, and garbage instead of a WrappedContactData", async () => {
    const c = client();
    const many = Array.from({ length: 101 }, () => outMessage("TestService", "X"));
    const r = await c.poll({ messages: many });
    assert.equal(r.status, 400);
    assert.match(r.text, /101 messages in one contact, the limit is 100/);
    const garbage = await c.postRaw("/message", Buffer.from("this is not a protobuf"));
    assert.equal(garbage.status, 400);
    assert.match(garbage.text, /not a WrappedContactData/);
  });

  it("answers a poll without a client certificate with 400", async () => {
    const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, noClientCertificate: true });
    const r = await c.poll({});
    assert.equal(r.status, 400);
    assert.match(r.text, /expected 1 client cert, received 0/);
  });
});

describe("frontend with required_label", () => {
  let ts: TestServer;
  before(async () => {
    const pki = testServerPki();
    ts = await startTestServer({
      components: {
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        adminConfig: { listenAddress: "127.0.0.1:0" },
        requiredLabel: "fleet-a",
      },
    });
  });
  after(() => ts.stop());

  it("lets in only clients that present the label", async () => {
    const without = await new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels: ["linux"] }).poll({});
    assert.equal(without.status, 503);
    assert.match(without.text, /not authorized/);
    const withLabel = await new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels: ["fleet-a"] }).poll({});
    assert.equal(withLabel.status, 200);
  });
});

describe("frontend with deflate-compressed streams and polls", () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer();
  });
  after(() => ts.stop());

  it("decodes a zlib request body sync-flushed per frame, as the Go client sends it", async () => {
    const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, deflate: true });
    const s = await c.stream({ messages: [outMessage("TestService", "Zipped")] });
    assert.ok(s.first.sequencingNonce !== 0n);
    s.send({ messages: [outMessage("TestService", "Zipped2")] });
    assert.equal((await s.next())?.ackIndex, 1n);
    s.close();
    const p = await c.poll({ messages: [outMessage("TestService", "ZippedPoll")] });
    assert.equal(p.status, 200, p.text);
  });
});
