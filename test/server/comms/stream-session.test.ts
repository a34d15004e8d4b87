// The order of what a stream writes when a carried message and the end of the stream's lifespan
// meet: done_sending is the stream's last word, so a carried message whose lease is still under
// way when the lifespan ends is written before it, never after.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { bytesToHex, clientIdFromSpki } from "../../../src/common/ids.js";
import { createLogger } from "../../../src/common/log.js";
import { type ContactData, ContactDataSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { ClientCache } from "../../../src/server/comms/client-cache.js";
import { type Contact, Comms } from "../../../src/server/comms/comms.js";
import { Dispatcher } from "../../../src/server/comms/dispatcher.js";
import { StreamSession } from "../../../src/server/comms/stream-session.js";
import type { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import type { Store } from "../../../src/server/store/store.js";
import { clientBoundMessage } from "../../support/notify.js";
import { openTestStore, type TestStore } from "../../support/stores.js";

/** One written stream frame (a uvarint length, then a ContactData). */
function decodeFrame(bytes: Buffer): ContactData {
  let length = 0;
  let shift = 0;
  let i = 0;
  for (;;) {
    const b = bytes[i++]!;
    length += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
    shift += 7;
  }
  assert.equal(bytes.length - i, length, "one frame per write");
  return fromBinary(ContactDataSchema, bytes.subarray(i));
}

describe("stream session: carried messages and done_sending", () => {
  let ts: TestStore;
  let store: SqliteStore;

  before(async () => {
    ts = await openTestStore("fs-session-");
    store = ts.store;
  });
  after(async () => {
    await ts.close();
  });

  it("writes a carried message whose lease is under way before done_sending", async () => {
    const key = Buffer.from(`client key ${Date.now()}`);
    const clientId = clientIdFromSpki(key);
    const data = { key, labels: [], blacklisted: false };
    await store.addClient(clientId, data);
    const contactId = await store.recordClientContact({ clientId, sentNonce: 1n, receivedNonce: 2n, address: "127.0.0.1:1" });
    const m = clientBoundMessage(clientId, Buffer.from("carried"));
    await store.storeMessages([m]);

    // The store answers leases slowly, so that the lifespan ends while this one is under way.
    const slow = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === "leaseCarriedMessages") {
          return async (...args: Parameters<Store["leaseCarriedMessages"]>) => {
            await new Promise((r) => setTimeout(r, 300));
            return target.leaseCarriedMessages(...args);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    }) as Store;
    const logger = createLogger("session-test");
    const cache = new ClientCache(slow);
    const comms = new Comms({
      store: slow,
      cache,
      handler: { handleClientMessages: async () => {} },
      logger,
      streamingAddress: "local",
    });
    const dispatcher = new Dispatcher({ store: slow, logger, sweepIntervalMs: 0 });
    const frames: ContactData[] = [];
    let closed = false;
    const contact: Contact = {
      clientId,
      clientIdHex: bytesToHex(clientId),
      address: "127.0.0.1:1",
      contactId,
      nonce: 7n,
      data,
      tokens: undefined,
      broadcastsPending: false,
      rekeySent: false,
    };
    const session = new StreamSession(
      comms,
      contact,
      {
        write: (bytes) => {
          frames.push(decodeFrame(bytes));
          return true;
        },
        onDrain: () => {},
        close: () => {
          closed = true;
        },
      },
      dispatcher,
      { lifespanMs: 2_000, closeBeforeMs: 1_900 },
    );
    try {
      session.start();
      session.offer(m);
      const deadline = Date.now() + 5_000;
      while (!frames.some((f) => f.doneSending) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        frames.map((f) => (f.doneSending ? "done_sending" : f.messages.map((x) => Buffer.from(x.data!.value).toString()).join())),
        ["carried", "done_sending"],
      );
      assert.equal(closed, false, "the stream stays open until its lifespan ends");
    } finally {
      session.close();
      dispatcher.close();
      cache.close();
    }
  });
});
