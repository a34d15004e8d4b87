// New messages carried by their notifications: the frontend holding the client's stream leases the
// carried message with one statement that checks it is stored exactly so, and sends it without
// reading it back; a carried copy that differs from what is stored is never sent.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { bytesToHex } from "../../../src/common/ids.js";
import { MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { clientBoundMessage, postNotification } from "../../support/notify.js";
import { createTestDatabase, type TestDatabase } from "../../support/mariadb.js";
import { RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { testServerPki } from "../../support/tls.js";

const message = (to: Uint8Array, payload: string) => clientBoundMessage(to, Buffer.from(payload));

for (const backend of ["sqlite", "mysql"] as const) {
  describe(`messages carried by notifications (${backend})`, () => {
    let ts: TestServer;
    let db: TestDatabase | undefined;
    const carried = async (result: "sent" | "fetched") => {
      const metric = await ts.server.metrics.registry.getSingleMetric("fleetspeak_notifications_carried_messages_total")?.get();
      return metric?.values.find((v) => v.labels.result === result)?.value ?? 0;
    };

    before(async () => {
      const pki = testServerPki();
      if (backend === "mysql") db = await createTestDatabase();
      ts = await startTestServer({
        components: {
          httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
          adminConfig: { listenAddress: "127.0.0.1:0" },
          notificationListenAddress: "127.0.0.1:0",
          ...(db ? { mysqlDataSourceName: db.dsn } : {}),
        },
        overrides: { sweepIntervalMs: 60_000 },
      });
    });
    after(async () => {
      await ts.stop();
      await db?.drop();
    });

    it("sends a message inserted through the admin API as its notification carried it", async () => {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      await c.poll({});
      const s = await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
      const before = await carried("sent");
      const m = message(c.clientId, "inserted");
      await ts.admin.insertMessage(m);
      const frame = await s.next(5_000);
      assert.equal(frame?.messages.length, 1);
      assert.equal(Buffer.from(frame!.messages[0]!.data!.value).toString(), "inserted");
      assert.equal(await carried("sent"), before + 1);
      const pending = await ts.server.store.getPendingMessages({ clientIds: [c.clientId], offset: 0, limit: 0, wantData: false });
      assert.equal(pending.length, 1, "leased, still pending until acknowledged");
      assert.deepEqual(await ts.server.store.claimClientMessages(c.clientId, { limit: 10, leaseMs: 1000 }), [], "leased");
      s.close();
    });

    it("never sends a carried copy that differs from the stored message; the stored one goes out", async () => {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      await c.poll({});
      const s = await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
      const stored = message(c.clientId, "the real payload");
      await ts.server.store.storeMessages([stored]);
      const forged = fromBinary(MessageSchema, toBinary(MessageSchema, stored));
      forged.data!.value = Buffer.from("forged");
      const before = await carried("fetched");
      const reply = await postNotification(
        ts.server.notificationAddress!,
        `/client/${bytesToHex(c.clientId)}`,
        toBinary(MessageSchema, forged),
      );
      assert.equal(reply.status, 200);
      const frame = await s.next(5_000);
      assert.equal(frame?.messages.length, 1);
      assert.equal(Buffer.from(frame!.messages[0]!.data!.value).toString(), "the real payload");
      assert.equal(await carried("fetched"), before + 1);
      s.close();
    });

    it("leaves a carried message to a regular fetch when the client has no allowance for its service", async () => {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      await c.poll({});
      const s = await c.stream({ AllowedMessages: { system: 100n, TestService: 0n } });
      const before = await carried("fetched");
      await ts.admin.insertMessage(message(c.clientId, "waits"));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await carried("fetched"), before + 1);
      s.send({ AllowedMessages: { TestService: 1n } });
      const frames = [await s.next(5_000), await s.next(5_000)];
      const sent = frames.flatMap((f) => f?.messages ?? []);
      assert.deepEqual(
        sent.map((m) => Buffer.from(m.data!.value).toString()),
        ["waits"],
      );
      s.close();
    });
  });
}
