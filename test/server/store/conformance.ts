// The one behaviour suite every Store backend passes. Each backend's test file calls
// defineStoreConformance with a factory that opens a fresh, empty store.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  AddressSchema,
  AnnotationsSchema,
  LabelSchema,
  type Message,
  MessageResultSchema,
  MessageSchema,
  ValidationInfoSchema,
} from "../../../src/gen/fleetspeak/common_pb.js";
import {
  AggregatedResourceUsageSchema,
  ResourceUsageDataSchema,
} from "../../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { BroadcastSchema } from "../../../src/gen/fleetspeak_server/broadcasts_pb.js";
import { InvalidArgumentError, NotFoundError } from "../../../src/server/store/errors.js";
import { BROADCAST_UNLIMITED, MAX_STORED_PAYLOAD_BYTES, type Store } from "../../../src/server/store/store.js";

export type StoreFactory = () => Promise<{ store: Store; cleanup: () => Promise<void> }>;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const clientId = () => randomBytes(8);
const messageId = () => randomBytes(32);
const label = (serviceName: string, l: string) => create(LabelSchema, { serviceName, label: l });
const ok = (ms = Date.now()) => create(MessageResultSchema, { processedTime: timestampFromMs(ms) });
const failure = (reason: string, ms = Date.now()) =>
  create(MessageResultSchema, { processedTime: timestampFromMs(ms), failed: true, failedReason: reason });

interface MsgOpts {
  id?: Uint8Array;
  to?: Uint8Array;
  service?: string;
  from?: Uint8Array;
  data?: Uint8Array;
  createdMs?: number;
  result?: ReturnType<typeof ok>;
  type?: string;
}

/** A client-bound message by default; `to: empty` makes it server-bound. */
function msg(o: MsgOpts = {}): Message {
  const m = create(MessageSchema, {
    messageId: o.id ?? messageId(),
    source: create(AddressSchema, { clientId: o.from ?? new Uint8Array(0), serviceName: "src-svc" }),
    sourceMessageId: randomBytes(16),
    destination: create(AddressSchema, { clientId: o.to ?? clientId(), serviceName: o.service ?? "dst-svc" }),
    messageType: o.type ?? "TestType",
    creationTime: timestampFromMs(o.createdMs ?? Date.now()),
    validationInfo: create(ValidationInfoSchema, { tags: { k: "v" } }),
    annotations: create(AnnotationsSchema, { entries: [{ key: "a", value: "b" }] }),
  });
  if (o.data) m.data = create(AnySchema, { typeUrl: "type.googleapis.com/test.Payload", value: o.data });
  if (o.result) m.result = o.result;
  return m;
}

const ids = (ms: Message[]) => ms.map((m) => hex(m.messageId)).sort();

async function newClient(store: Store, labels = [label("client", "linux")]): Promise<Buffer> {
  const id = clientId();
  await store.addClient(id, { key: randomBytes(91), labels, blacklisted: false });
  return id;
}

function useStore(makeStore: StoreFactory): () => Store {
  let store: Store | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  before(async () => {
    ({ store, cleanup } = await makeStore());
  });
  after(async () => {
    await cleanup?.();
  });
  return () => store!;
}

export function defineStoreConformance(name: string, makeStore: StoreFactory): void {
  describe(`Store conformance: ${name}`, () => {
    describe("storing messages (Fleetspeak's merge rules)", () => {
      const s = useStore(makeStore);

      it("stores a new client-bound message as pending, due at once, payload kept", async () => {
        const to = clientId();
        const m = msg({ to, data: Buffer.from("hello") });
        await s().storeMessages([m]);
        const [got] = await s().getMessages([m.messageId], true);
        assert.ok(got);
        assert.equal(hex(got.messageId), hex(m.messageId));
        assert.equal(hex(got.destination!.clientId), hex(to));
        assert.equal(got.destination!.serviceName, "dst-svc");
        assert.equal(got.source!.serviceName, "src-svc");
        assert.equal(hex(got.sourceMessageId), hex(m.sourceMessageId));
        assert.equal(got.messageType, "TestType");
        assert.equal(timestampMs(got.creationTime!), timestampMs(m.creationTime!));
        assert.deepEqual(got.validationInfo?.tags, { k: "v" });
        assert.equal(got.annotations?.entries[0]?.key, "a");
        assert.equal(Buffer.from(got.data!.value).toString(), "hello");
        assert.equal(got.data!.typeUrl, "type.googleapis.com/test.Payload");
        assert.equal(got.result, undefined);
        assert.equal(await s().getPendingMessageCount([to]), 1n);
        const claimed = await s().claimClientMessages(to, { limit: 10, leaseMs: 60_000 });
        assert.deepEqual(ids(claimed), ids([m]));
      });

      it("leaves the payload out unless asked", async () => {
        const m = msg({ data: Buffer.from("x") });
        await s().storeMessages([m]);
        const [got] = await s().getMessages([m.messageId], false);
        assert.equal(got!.data, undefined);
      });

      it("records a message that arrives with a success as processed, keeping no payload", async () => {
        const to = clientId();
        const m = msg({ to, data: Buffer.from("x"), result: ok(1_700_000_000_000) });
        await s().storeMessages([m]);
        const st = await s().getMessageStatus(m.messageId);
        assert.equal(st!.result!.failed, false);
        assert.equal(timestampMs(st!.result!.processedTime!), 1_700_000_000_000);
        assert.equal(await s().getPendingMessageCount([to]), 0n);
        const [got] = await s().getMessages([m.messageId], true);
        assert.equal(got!.data, undefined);
        assert.equal(got!.result!.failed, false);
      });

      it("records a new message that arrives failed as failed, not pending", async () => {
        const to = clientId();
        const m = msg({ to, result: failure("boom") });
        await s().storeMessages([m]);
        const st = await s().getMessageStatus(m.messageId);
        assert.equal(st!.result!.failed, true);
        assert.equal(st!.result!.failedReason, "boom");
        assert.equal(await s().getPendingMessageCount([to]), 0n);
      });

      it("lets a success overwrite an earlier failure", async () => {
        const m = msg({ result: failure("first") });
        await s().storeMessages([m]);
        m.result = ok(1_700_000_001_000);
        await s().storeMessages([m]);
        const st = await s().getMessageStatus(m.messageId);
        assert.equal(st!.result!.failed, false);
        assert.equal(st!.result!.failedReason, "");
        assert.equal(timestampMs(st!.result!.processedTime!), 1_700_000_001_000);
      });

      it("lets a later success overwrite an earlier success's processed time", async () => {
        const m = msg({ result: ok(1_700_000_000_000) });
        await s().storeMessages([m]);
        m.result = ok(1_700_000_005_000);
        await s().storeMessages([m]);
        const st = await s().getMessageStatus(m.messageId);
        assert.equal(timestampMs(st!.result!.processedTime!), 1_700_000_005_000);
      });

      it("turns a pending message that now carries a failure into a failed one", async () => {
        const to = clientId();
        const m = msg({ to, data: Buffer.from("x") });
        await s().storeMessages([m]);
        m.result = failure("client said no");
        await s().storeMessages([m]);
        const st = await s().getMessageStatus(m.messageId);
        assert.equal(st!.result!.failed, true);
        assert.equal(st!.result!.failedReason, "client said no");
        assert.equal(await s().getPendingMessageCount([to]), 0n);
        const [got] = await s().getMessages([m.messageId], true);
        assert.equal(got!.data, undefined);
      });

      it("keeps the first failure when a second failure arrives", async () => {
        const m = msg({ result: failure("first") });
        await s().storeMessages([m]);
        m.result = failure("second");
        await s().storeMessages([m]);
        assert.equal((await s().getMessageStatus(m.messageId))!.result!.failedReason, "first");
      });

      it("ignores a failure for a message already processed", async () => {
        const m = msg({ result: ok() });
        await s().storeMessages([m]);
        m.result = failure("late");
        await s().storeMessages([m]);
        assert.equal((await s().getMessageStatus(m.messageId))!.result!.failed, false);
      });

      it("does not make a processed message pending again when it is stored again without a result", async () => {
        const to = clientId();
        const m = msg({ to, result: ok() });
        await s().storeMessages([m]);
        m.result = undefined;
        await s().storeMessages([m]);
        assert.equal(await s().getPendingMessageCount([to]), 0n);
        assert.equal((await s().getMessageStatus(m.messageId))!.result!.failed, false);
      });

      it("never resets the schedule or payload of a pending message that is stored again", async () => {
        const to = clientId();
        const m = msg({ to, data: Buffer.from("original") });
        await s().storeMessages([m]);
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 })).length, 1);
        m.data = create(AnySchema, { typeUrl: "t", value: Buffer.from("changed") });
        await s().storeMessages([m]);
        assert.deepEqual(await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 }), []);
        const [got] = await s().getMessages([m.messageId], true);
        assert.equal(Buffer.from(got!.data!.value).toString(), "original");
      });

      it("stores a batch with mixed outcomes in one call", async () => {
        const to = clientId();
        const pending = msg({ to });
        const done = msg({ to, result: ok() });
        const failed = msg({ to, result: failure("f") });
        await s().storeMessages([pending, done, failed]);
        assert.equal(await s().getPendingMessageCount([to]), 1n);
        assert.equal((await s().getMessages([pending.messageId, done.messageId, failed.messageId], false)).length, 3);
      });

      it("links messages to a contact, ignoring duplicate links", async () => {
        const c = await newClient(s());
        const contactId = await s().recordClientContact({
          clientId: c,
          sentNonce: 1n,
          receivedNonce: 2n,
          address: "10.0.0.1:1234",
        });
        const m = msg({ from: c, to: new Uint8Array(0) });
        await s().storeMessages([m], { contactId });
        await s().storeMessages([m], { contactId });
        await s().linkMessagesToContact(contactId, [m.messageId]);
        await assert.rejects(s().linkMessagesToContact(contactId, [messageId()]), NotFoundError);
        await assert.rejects(s().storeMessages([msg()], { contactId: "ffffffff" }), NotFoundError);
      });

      it("stores concurrent calls independently: one naming an unknown contact fails alone", async () => {
        const to = clientId();
        const [a, b, c] = [msg({ to }), msg({ to }), msg({ to })];
        const results = await Promise.allSettled([
          s().storeMessages([a]),
          s().storeMessages([b], { contactId: "fffffffe" }),
          s().storeMessages([c]),
        ]);
        assert.deepEqual(
          results.map((r) => r.status),
          ["fulfilled", "rejected", "fulfilled"],
        );
        assert.ok((results[1] as PromiseRejectedResult).reason instanceof NotFoundError);
        assert.deepEqual(ids(await s().getMessages([a.messageId, b.messageId, c.messageId], false)), ids([a, c]));
      });

      it("rejects an oversize payload before storing anything of the batch", async () => {
        const to = clientId();
        const small = msg({ to });
        const big = msg({ to, data: Buffer.alloc(MAX_STORED_PAYLOAD_BYTES + 1) });
        await assert.rejects(s().storeMessages([small, big]), (e: Error) => {
          assert.ok(e instanceof InvalidArgumentError);
          assert.match(e.message, new RegExp(hex(big.messageId)));
          assert.match(e.message, /limit/);
          return true;
        });
        assert.deepEqual(await s().getMessages([small.messageId, big.messageId], false), []);
      });

      it("rejects malformed messages with InvalidArgumentError", async () => {
        await assert.rejects(s().storeMessages([msg({ id: randomBytes(31) })]), InvalidArgumentError);
        const noDest = msg();
        noDest.destination = undefined;
        await assert.rejects(s().storeMessages([noDest]), InvalidArgumentError);
        const noTime = msg();
        noTime.creationTime = undefined;
        await assert.rejects(s().storeMessages([noTime]), /creation_time/);
      });

      it("treats empty lists as no-ops", async () => {
        await s().storeMessages([]);
        assert.deepEqual(await s().getMessages([], true), []);
        assert.deepEqual(await s().clientsWithDueMessages([]), []);
        await s().deletePendingMessages([]);
        assert.equal(await s().getPendingMessageCount([]), 0n);
        assert.deepEqual(await s().getPendingMessages({ clientIds: [], offset: 0, limit: 0, wantData: true }), []);
        await s().disableBroadcasts([]);
        await s().linkMessagesToContact("1", []);
      });
    });

    describe("reading messages and results", () => {
      const s = useStore(makeStore);

      it("returns only the messages that exist", async () => {
        const a = msg();
        await s().storeMessages([a]);
        const got = await s().getMessages([messageId(), a.messageId], false);
        assert.deepEqual(ids(got), ids([a]));
      });

      it("gives the status: unknown, pending (creation time only), then with a result", async () => {
        assert.equal(await s().getMessageStatus(messageId()), undefined);
        const m = msg({ createdMs: 1_700_000_123_456 });
        await s().storeMessages([m]);
        const st = await s().getMessageStatus(m.messageId);
        assert.equal(st!.creationTime.seconds, m.creationTime!.seconds);
        assert.equal(st!.creationTime.nanos, m.creationTime!.nanos);
        assert.equal(st!.result, undefined);
        assert.equal(await s().setMessageResult(m.destination!.clientId, m.messageId, ok(1_700_000_200_000)), true);
        const st2 = await s().getMessageStatus(m.messageId);
        assert.equal(timestampMs(st2!.result!.processedTime!), 1_700_000_200_000);
      });

      it("sets a result only for the message's own destination client, and drops its payload", async () => {
        const to = clientId();
        const m = msg({ to, data: Buffer.from("x") });
        await s().storeMessages([m]);
        assert.equal(await s().setMessageResult(clientId(), m.messageId, ok()), false);
        assert.equal((await s().getMessageStatus(m.messageId))!.result, undefined);
        assert.equal(await s().setMessageResult(new Uint8Array(0), m.messageId, ok()), false);
        assert.equal(await s().setMessageResult(to, m.messageId, failure("nope")), true);
        assert.equal((await s().getMessageStatus(m.messageId))!.result!.failedReason, "nope");
        assert.equal(await s().getPendingMessageCount([to]), 0n);
        assert.equal((await s().getMessages([m.messageId], true))[0]!.data, undefined);
      });

      it("sets the result of a server-bound message with an empty destination client", async () => {
        const m = msg({ to: new Uint8Array(0) });
        await s().storeMessages([m]);
        assert.equal(await s().setMessageResult(new Uint8Array(0), m.messageId, ok()), true);
        assert.equal((await s().getMessageStatus(m.messageId))!.result!.failed, false);
        assert.equal(await s().setMessageResult(new Uint8Array(0), messageId(), ok()), false);
      });

      it("sets several results in one call, each only for its own destination client", async () => {
        const to = clientId();
        const [a, b, c] = [msg({ to }), msg({ to }), msg({ to })];
        await s().storeMessages([a, b, c]);
        const done = await s().setMessageResults([
          { destinationClientId: to, id: a.messageId, result: ok() },
          { destinationClientId: clientId(), id: b.messageId, result: ok() },
          { destinationClientId: to, id: messageId(), result: ok() },
          { destinationClientId: to, id: c.messageId, result: failure("bad") },
        ]);
        assert.deepEqual(done, [true, false, false, true]);
        assert.equal((await s().getMessageStatus(a.messageId))!.result!.failed, false);
        assert.equal((await s().getMessageStatus(b.messageId))!.result, undefined);
        assert.equal((await s().getMessageStatus(c.messageId))!.result!.failedReason, "bad");
        assert.equal(await s().getPendingMessageCount([to]), 1n);
        assert.deepEqual(await s().setMessageResults([]), []);
      });
    });

    describe("client acknowledgements (MessageAck)", () => {
      const s = useStore(makeStore);

      it("marks acked messages processed and drops their pending entries, per client, in one call", async () => {
        const [a, b] = [clientId(), clientId()];
        const [a1, a2, b1] = [msg({ to: a, data: Buffer.from("x") }), msg({ to: a }), msg({ to: b })];
        await s().storeMessages([a1, a2, b1]);
        const at = Date.now() - 5_000;
        const marked = await s().ackClientMessages(
          [
            { clientId: a, ids: [a1.messageId, a2.messageId] },
            { clientId: b, ids: [b1.messageId] },
          ],
          at,
        );
        assert.deepEqual(marked, [2, 1]);
        for (const m of [a1, a2, b1]) {
          const { result } = (await s().getMessageStatus(m.messageId))!;
          assert.equal(result!.failed, false);
          assert.equal(Number(result!.processedTime!.seconds), Math.floor(at / 1000));
        }
        assert.equal(await s().getPendingMessageCount([a, b]), 0n);
        assert.equal((await s().getMessages([a1.messageId], true))[0]!.data, undefined);
        assert.deepEqual(await s().claimClientMessages(a, { limit: 10, leaseMs: 1 }), []);
      });

      it("counts only messages addressed to that client and still without a result", async () => {
        const to = clientId();
        const other = clientId();
        const [done, open, foreign] = [msg({ to }), msg({ to }), msg({ to: other })];
        await s().storeMessages([done, open, foreign]);
        await s().setMessageResult(to, done.messageId, failure("earlier"));
        const marked = await s().ackClientMessages(
          [{ clientId: to, ids: [done.messageId, open.messageId, foreign.messageId, messageId()] }, { clientId: to, ids: [] }],
          Date.now(),
        );
        assert.deepEqual(marked, [1, 0]);
        assert.equal((await s().getMessageStatus(done.messageId))!.result!.failedReason, "earlier");
        assert.equal((await s().getMessageStatus(foreign.messageId))!.result, undefined);
        assert.equal(await s().getPendingMessageCount([other]), 1n);
        assert.deepEqual(await s().ackClientMessages([], Date.now()), []);
      });

      it("refuses malformed IDs before touching anything", async () => {
        const to = clientId();
        const m = msg({ to });
        await s().storeMessages([m]);
        await assert.rejects(
          s().ackClientMessages([{ clientId: to, ids: [m.messageId, new Uint8Array(3)] }], Date.now()),
          /message ID/,
        );
        assert.equal(await s().getPendingMessageCount([to]), 1n);
      });
    });

    describe("releasing recent leases (a client's new stream, its old one perhaps lost with its frontend)", () => {
      const s = useStore(makeStore);
      const LEASE = 600_000;

      it("makes messages leased moments ago due at the given time; older leases and due messages are left", async () => {
        const to = await newClient(s());
        const [recent, older, due] = [msg({ to }), msg({ to }), msg({ to })];
        await s().storeMessages([recent]);
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: LEASE })).length, 1);
        // Leased with a shorter lease: as if taken two minutes before now with the usual one.
        await s().storeMessages([older]);
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: LEASE - 120_000 })).length, 1);
        await s().storeMessages([due]);

        const released = await s().releaseRecentLeases(to, { leaseMs: LEASE, recentMs: 60_000, dueAtMs: Date.now() - 1 });
        assert.equal(released, 1);
        assert.deepEqual(ids(await s().claimClientMessages(to, { limit: 10, leaseMs: LEASE })), ids([recent, due]));
      });

      it("leaves released messages leased until the grace ends, and other clients' alone", async () => {
        const [to, other] = [await newClient(s()), await newClient(s())];
        const [a, b] = [msg({ to }), msg({ to: other })];
        await s().storeMessages([a, b]);
        await s().claimClientMessages(to, { limit: 10, leaseMs: LEASE });
        await s().claimClientMessages(other, { limit: 10, leaseMs: LEASE });
        assert.equal(await s().releaseRecentLeases(to, { leaseMs: LEASE, recentMs: 60_000, dueAtMs: Date.now() + 200 }), 1);
        assert.deepEqual(await s().claimClientMessages(to, { limit: 10, leaseMs: LEASE }), []);
        await new Promise((r) => setTimeout(r, 250));
        assert.deepEqual(ids(await s().claimClientMessages(to, { limit: 10, leaseMs: LEASE })), ids([a]));
        assert.deepEqual(await s().claimClientMessages(other, { limit: 10, leaseMs: LEASE }), []);
      });
    });

    describe("leasing carried messages (a notification brought the message)", () => {
      const s = useStore(makeStore);
      const copy = (m: Message) => fromBinary(MessageSchema, toBinary(MessageSchema, m));

      it("leases a message stored exactly as carried, as a claim would", async () => {
        const to = await newClient(s());
        const contactId = await s().recordClientContact({ clientId: to, sentNonce: 1n, receivedNonce: 2n, address: "127.0.0.1:1" });
        const [a, b] = [msg({ to, data: Buffer.from("a") }), msg({ to })];
        await s().storeMessages([a, b]);
        assert.deepEqual(await s().leaseCarriedMessages([{ message: copy(a), contactId }], 150), [
          { leased: true, othersDue: true },
        ]);
        assert.deepEqual(await s().leaseCarriedMessages([{ message: copy(b) }], 150), [{ leased: true, othersDue: false }]);
        assert.deepEqual(await s().claimClientMessages(to, { limit: 10, leaseMs: 1000 }), [], "leased, not due");
        assert.equal((await s().leaseCarriedMessages([{ message: copy(a) }], 150))[0]!.leased, false, "no second lease");
        await sleep(300);
        const again = await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 });
        assert.deepEqual(ids(again), ids([a, b]), "due again when the lease ends");
      });

      it("refuses a carried copy that differs from what is stored, in any field", async () => {
        const to = clientId();
        const m = msg({ to, data: Buffer.from("real payload") });
        await s().storeMessages([m]);
        const changes: ((c: Message) => void)[] = [
          (c) => {
            c.data!.value = Buffer.from("forged payload");
          },
          (c) => {
            c.data!.typeUrl = "type.googleapis.com/other";
          },
          (c) => {
            c.messageType = "Other";
          },
          (c) => {
            c.source!.serviceName = "other";
          },
          (c) => {
            c.annotations = undefined;
          },
          (c) => {
            c.creationTime!.nanos += 1;
          },
        ];
        for (const change of changes) {
          const c = copy(m);
          change(c);
          assert.deepEqual(await s().leaseCarriedMessages([{ message: c }], 600_000), [{ leased: false, othersDue: true }]);
        }
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 })).length, 1, "still due");
      });

      it("refuses claimed, processed, unknown and server-bound messages, and leases the rest of the batch", async () => {
        const to = clientId();
        const claimed = msg({ to });
        await s().storeMessages([claimed]);
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 })).length, 1);
        const [done, fresh] = [msg({ to }), msg({ to })];
        const forServer = msg({ to: new Uint8Array(0) });
        await s().storeMessages([done, fresh, forServer]);
        await s().setMessageResult(to, done.messageId, ok());
        const got = await s().leaseCarriedMessages(
          [claimed, done, msg({ to }), forServer, fresh].map((m) => ({ message: copy(m) })),
          600_000,
        );
        assert.deepEqual(
          got.map((g) => g.leased),
          [false, false, false, false, true],
        );
        assert.deepEqual(await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 }), []);
      });

      it("answers an unknown contact with NotFoundError", async () => {
        const to = clientId();
        const m = msg({ to });
        await s().storeMessages([m]);
        await assert.rejects(s().leaseCarriedMessages([{ message: copy(m), contactId: "123456789" }], 600_000), NotFoundError);
      });
    });

    describe("claiming client messages", () => {
      const s = useStore(makeStore);

      it("claims at most `limit` due messages, with metadata and payload", async () => {
        const to = clientId();
        const all = Array.from({ length: 5 }, (_, i) => msg({ to, data: Buffer.from(`p${i}`) }));
        await s().storeMessages(all);
        const first = await s().claimClientMessages(to, { limit: 3, leaseMs: 600_000 });
        assert.equal(first.length, 3);
        for (const m of first) {
          assert.match(Buffer.from(m.data!.value).toString(), /^p\d$/);
          assert.equal(hex(m.destination!.clientId), hex(to));
          assert.equal(m.result, undefined);
        }
        const rest = await s().claimClientMessages(to, { limit: 3, leaseMs: 600_000 });
        assert.equal(rest.length, 2);
        assert.deepEqual([...ids(first), ...ids(rest)].sort(), ids(all));
        assert.deepEqual(await s().claimClientMessages(to, { limit: 3, leaseMs: 600_000 }), []);
      });

      it("claims only the named client's messages", async () => {
        const a = clientId();
        const b = clientId();
        await s().storeMessages([msg({ to: a }), msg({ to: b })]);
        const got = await s().claimClientMessages(a, { limit: 10, leaseMs: 600_000 });
        assert.equal(got.length, 1);
        assert.equal(hex(got[0]!.destination!.clientId), hex(a));
      });

      it("makes a message due again when its lease ends", async () => {
        const to = clientId();
        const m = msg({ to });
        await s().storeMessages([m]);
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: 150 })).length, 1);
        assert.deepEqual(await s().claimClientMessages(to, { limit: 10, leaseMs: 150 }), []);
        assert.deepEqual(await s().clientsWithDueMessages([to]), []);
        await sleep(300);
        assert.equal((await s().clientsWithDueMessages([to])).length, 1);
        const again = await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 });
        assert.deepEqual(ids(again), ids([m]));
      });

      it("stops claiming a message once it has a result", async () => {
        const to = clientId();
        const m = msg({ to });
        await s().storeMessages([m]);
        await s().claimClientMessages(to, { limit: 10, leaseMs: 100 });
        await s().setMessageResult(to, m.messageId, ok());
        await sleep(200);
        assert.deepEqual(await s().claimClientMessages(to, { limit: 10, leaseMs: 100 }), []);
      });

      it("respects per-service limits; a service missing from the map gets nothing", async () => {
        const to = clientId();
        const a = Array.from({ length: 4 }, () => msg({ to, service: "A" }));
        const b = Array.from({ length: 3 }, () => msg({ to, service: "B" }));
        const c = Array.from({ length: 2 }, () => msg({ to, service: "C" }));
        await s().storeMessages([...a, ...b, ...c]);
        const got = await s().claimClientMessages(to, {
          limit: 100,
          leaseMs: 600_000,
          serviceLimits: new Map([
            ["A", 2],
            ["B", 0],
          ]),
        });
        assert.equal(got.length, 2);
        for (const m of got) assert.equal(m.destination!.serviceName, "A");
        const rest = await s().claimClientMessages(to, { limit: 100, leaseMs: 600_000 });
        assert.equal(rest.length, 7);
      });

      it("applies the overall limit on top of per-service limits", async () => {
        const to = clientId();
        await s().storeMessages([
          ...Array.from({ length: 4 }, () => msg({ to, service: "A" })),
          ...Array.from({ length: 4 }, () => msg({ to, service: "B" })),
        ]);
        const got = await s().claimClientMessages(to, {
          limit: 5,
          leaseMs: 600_000,
          serviceLimits: new Map([
            ["A", 3],
            ["B", 3],
          ]),
        });
        assert.equal(got.length, 5);
        const perService = new Map<string, number>();
        for (const m of got) {
          const svc = m.destination!.serviceName;
          perService.set(svc, (perService.get(svc) ?? 0) + 1);
        }
        assert.ok((perService.get("A") ?? 0) <= 3 && (perService.get("B") ?? 0) <= 3);
      });

      it("finds a service's due messages behind a window filled by a service at its quota", async () => {
        const to = clientId();
        const a = Array.from({ length: 5 }, () => msg({ to, service: "A" }));
        await s().storeMessages(a);
        await sleep(5);
        const b = Array.from({ length: 2 }, () => msg({ to, service: "B" }));
        await s().storeMessages(b);
        const got = await s().claimClientMessages(to, {
          limit: 3,
          leaseMs: 600_000,
          serviceLimits: new Map([
            ["A", 1],
            ["B", 5],
          ]),
        });
        assert.deepEqual(got.map((m) => m.destination!.serviceName).sort(), ["A", "B", "B"]);
        assert.equal(await s().getPendingMessageCount([to]), 7n);
        const rest = await s().claimClientMessages(to, { limit: 100, leaseMs: 600_000 });
        assert.equal(rest.length, 4);
        for (const m of rest) assert.equal(m.destination!.serviceName, "A");
      });

      it("claims nothing with a limit of 0", async () => {
        const to = clientId();
        await s().storeMessages([msg({ to })]);
        assert.deepEqual(await s().claimClientMessages(to, { limit: 0, leaseMs: 1000 }), []);
      });

      it("never hands a message to two concurrent claimers", async () => {
        const to = clientId();
        await s().storeMessages(Array.from({ length: 40 }, () => msg({ to })));
        const rounds = await Promise.all(
          Array.from({ length: 8 }, () => s().claimClientMessages(to, { limit: 7, leaseMs: 600_000 })),
        );
        const seen = rounds.flat().map((m) => hex(m.messageId));
        assert.equal(new Set(seen).size, seen.length);
        const rest = await s().claimClientMessages(to, { limit: 100, leaseMs: 600_000 });
        assert.equal(seen.length + rest.length, 40);
      });

      it("tells which clients have due messages", async () => {
        const due = clientId();
        const leased = clientId();
        const none = clientId();
        await s().storeMessages([msg({ to: due }), msg({ to: leased })]);
        await s().claimClientMessages(leased, { limit: 10, leaseMs: 600_000 });
        const got = await s().clientsWithDueMessages([due, leased, none, due]);
        assert.deepEqual(got.map(hex), [hex(due)]);
      });
    });

    describe("server-bound messages (the service backlog)", () => {
      const s = useStore(makeStore);

      it("keeps a new server-bound message out of reach for one to two minutes by default", async () => {
        const m = msg({ to: new Uint8Array(0) });
        await s().storeMessages([m]);
        assert.deepEqual(await s().claimServerMessages(100, () => Date.now() + 600_000), []);
        assert.equal((await s().getMessageStatus(m.messageId))!.result, undefined);
      });

      it("claims due server messages, counting retries and rescheduling with retryAtMs", async () => {
        const m = msg({ to: new Uint8Array(0), service: "backlog", data: Buffer.from("d") });
        await s().storeMessages([m], { serverDueMs: Date.now() - 1 });
        const counts: number[] = [];
        const got = await s().claimServerMessages(10, (n) => {
          counts.push(n);
          return Date.now() + 150;
        });
        assert.deepEqual(ids(got), ids([m]));
        assert.equal(Buffer.from(got[0]!.data!.value).toString(), "d");
        assert.deepEqual(counts, [1]);
        assert.deepEqual(await s().claimServerMessages(10, () => Date.now() + 600_000), []);
        await sleep(300);
        const again = await s().claimServerMessages(10, (n) => {
          counts.push(n);
          return Date.now() + 600_000;
        });
        assert.deepEqual(ids(again), ids([m]));
        assert.deepEqual(counts, [1, 2]);
      });

      it("respects the limit and leaves client-bound messages alone", async () => {
        const server = Array.from({ length: 5 }, () => msg({ to: new Uint8Array(0) }));
        const to = clientId();
        await s().storeMessages([...server, msg({ to })], { serverDueMs: Date.now() - 1 });
        const a = await s().claimServerMessages(3, () => Date.now() + 600_000);
        const b = await s().claimServerMessages(3, () => Date.now() + 600_000);
        assert.equal(a.length, 3);
        assert.equal(b.length, 2);
        assert.deepEqual([...ids(a), ...ids(b)].sort(), ids(server));
        assert.equal((await s().claimClientMessages(to, { limit: 10, leaseMs: 600_000 })).length, 1);
      });

      it("never returns server-bound messages to client claims or pending listings", async () => {
        const m = msg({ to: new Uint8Array(0) });
        await s().storeMessages([m], { serverDueMs: Date.now() - 1 });
        assert.equal(await s().getPendingMessageCount([clientId()]), 0n);
        const got = await s().claimServerMessages(100, () => Date.now() + 600_000);
        assert.deepEqual(ids(got), ids([m]));
      });

      it("drops a message from the backlog once its result is stored", async () => {
        const m = msg({ to: new Uint8Array(0) });
        await s().storeMessages([m], { serverDueMs: Date.now() - 1 });
        m.result = ok();
        await s().storeMessages([m]);
        assert.deepEqual(await s().claimServerMessages(100, () => Date.now() + 600_000), []);
      });
    });

    describe("pending messages (admin)", () => {
      const s = useStore(makeStore);

      it("lists pending client messages ordered by message ID, with offset and limit", async () => {
        const a = clientId();
        const b = clientId();
        const mine = Array.from({ length: 6 }, (_, i) => msg({ to: i % 2 ? a : b, data: Buffer.from("x") }));
        const other = msg({ to: clientId() });
        const done = msg({ to: a, result: ok() });
        await s().storeMessages([...mine, other, done]);
        const sorted = ids(mine);
        const all = await s().getPendingMessages({ clientIds: [a, b], offset: 0, limit: 0, wantData: false });
        assert.deepEqual(
          all.map((m) => hex(m.messageId)),
          sorted,
        );
        for (const m of all) {
          assert.equal(m.data, undefined);
          assert.equal(m.result, undefined);
          assert.equal(m.messageType, "TestType");
        }
        const page = await s().getPendingMessages({ clientIds: [a, b], offset: 2, limit: 3, wantData: true });
        assert.deepEqual(
          page.map((m) => hex(m.messageId)),
          sorted.slice(2, 5),
        );
        for (const m of page) assert.equal(Buffer.from(m.data!.value).toString(), "x");
      });

      it("refuses an offset without a limit", async () => {
        await assert.rejects(
          s().getPendingMessages({ clientIds: [clientId()], offset: 1, limit: 0, wantData: false }),
          /limit must be provided/,
        );
      });

      it("counts pending messages over several clients", async () => {
        const a = clientId();
        const b = clientId();
        await s().storeMessages([msg({ to: a }), msg({ to: a }), msg({ to: b }), msg({ to: a, result: ok() })]);
        assert.equal(await s().getPendingMessageCount([a, b]), 3n);
        assert.equal(await s().getPendingMessageCount([b]), 1n);
      });

      it("deletes pending messages by marking them failed 'Removed by admin action.'", async () => {
        const a = clientId();
        const keep = clientId();
        const gone = [msg({ to: a, data: Buffer.from("x") }), msg({ to: a })];
        const kept = msg({ to: keep });
        await s().storeMessages([...gone, kept]);
        await s().deletePendingMessages([a]);
        assert.equal(await s().getPendingMessageCount([a]), 0n);
        assert.equal(await s().getPendingMessageCount([keep]), 1n);
        for (const m of gone) {
          const st = await s().getMessageStatus(m.messageId);
          assert.equal(st!.result!.failed, true);
          assert.equal(st!.result!.failedReason, "Removed by admin action.");
        }
        assert.deepEqual(await s().claimClientMessages(a, { limit: 10, leaseMs: 1000 }), []);
      });
    });

    describe("clients", () => {
      const s = useStore(makeStore);

      it("adds a client and reads its data back", async () => {
        const id = clientId();
        const key = randomBytes(91);
        await s().addClient(id, { key, labels: [label("client", "a"), label("client", "b")], blacklisted: false });
        const d = await s().getClientData(id);
        assert.equal(hex(d!.key), hex(key));
        assert.equal(d!.blacklisted, false);
        assert.deepEqual(d!.labels.map((l) => `${l.serviceName}:${l.label}`).sort(), ["client:a", "client:b"]);
        assert.equal(await s().getClientData(clientId()), undefined);
        await assert.rejects(s().addClient(id, { key, labels: [], blacklisted: false }), /already exists/);
      });

      it("adds and removes labels; labels are case-sensitive", async () => {
        const id = await newClient(s(), []);
        await s().addClientLabel(id, label("client", "x"));
        await s().addClientLabel(id, label("client", "x"));
        await s().addClientLabel(id, label("client", "X"));
        await s().addClientLabel(id, label("other", "x"));
        let d = await s().getClientData(id);
        assert.deepEqual(d!.labels.map((l) => `${l.serviceName}:${l.label}`).sort(), [
          "client:X",
          "client:x",
          "other:x",
        ]);
        await s().removeClientLabel(id, label("client", "x"));
        await s().removeClientLabel(id, label("client", "nope"));
        d = await s().getClientData(id);
        assert.deepEqual(d!.labels.map((l) => `${l.serviceName}:${l.label}`).sort(), ["client:X", "other:x"]);
        await assert.rejects(s().addClientLabel(clientId(), label("client", "x")), NotFoundError);
      });

      it("records contacts with nonces, address, stream holder and client clock", async () => {
        const id = await newClient(s());
        const before = Date.now();
        const c1 = await s().recordClientContact({
          clientId: id,
          sentNonce: 0xfedcba9876543210n,
          receivedNonce: 42n,
          address: "192.0.2.1:40000",
          clientClock: { seconds: 1_700_000_000n, nanos: 5 },
          streamingTo: "frontend-1:8081",
        });
        assert.match(c1, /^[0-9a-f]+$/);
        let [cl] = await s().listClients([id]);
        assert.equal(cl!.lastContactAddress, "192.0.2.1:40000");
        assert.equal(cl!.lastContactStreamingTo, "frontend-1:8081");
        assert.equal(cl!.lastClock!.seconds, 1_700_000_000n);
        assert.equal(cl!.lastClock!.nanos, 5);
        assert.ok(timestampMs(cl!.lastContactTime!) >= before - 1);
        const c2 = await s().recordClientContact({
          clientId: id,
          sentNonce: 1n,
          receivedNonce: 2n,
          address: "[2001:db8::1]:443",
        });
        assert.notEqual(c1, c2);
        [cl] = await s().listClients([id]);
        assert.equal(cl!.lastContactStreamingTo, "");
        assert.equal(cl!.lastContactAddress, "[2001:db8::1]:443");
        assert.equal(cl!.lastClock, undefined);
        const contacts = await s().listClientContacts(id);
        assert.equal(contacts.length, 2);
        const first = contacts.find((c) => c.observedAddress === "192.0.2.1:40000")!;
        assert.equal(first.sentNonce, 0xfedcba9876543210n);
        assert.equal(first.receivedNonce, 42n);
        assert.ok(timestampMs(first.timestamp!) >= before - 1);
        assert.deepEqual(await s().listClientContacts(clientId()), []);
        await assert.rejects(
          s().recordClientContact({ clientId: clientId(), sentNonce: 0n, receivedNonce: 0n, address: "x:1" }),
          NotFoundError,
        );
      });

      it("lists clients by ID with their labels, leaving unknown IDs out; empty = all", async () => {
        const a = await newClient(s(), [label("client", "alpha")]);
        const b = await newClient(s(), []);
        await s().blacklistClient(b);
        const got = await s().listClients([a, b, clientId()]);
        assert.equal(got.length, 2);
        const ga = got.find((c) => hex(c.clientId) === hex(a))!;
        const gb = got.find((c) => hex(c.clientId) === hex(b))!;
        assert.deepEqual(
          ga.labels.map((l) => l.label),
          ["alpha"],
        );
        assert.equal(ga.blacklisted, false);
        assert.equal(gb.blacklisted, true);
        assert.ok(ga.lastContactTime);
        assert.equal(ga.lastContactStreamingTo, "");
        const all = await s().listClients([]);
        const allIds = new Set(all.map((c) => hex(c.clientId)));
        assert.ok(allIds.has(hex(a)) && allIds.has(hex(b)));
        assert.deepEqual(all.find((c) => hex(c.clientId) === hex(a))!.labels.map((l) => l.label), ["alpha"]);
      });

      it("blacklists clients; an unknown client is not an error", async () => {
        const id = await newClient(s());
        await s().blacklistClient(id);
        assert.equal((await s().getClientData(id))!.blacklisted, true);
        await s().blacklistClient(clientId());
      });

      it("streams client IDs filtered by last contact (strictly after) and blacklist", async () => {
        const old = await newClient(s());
        await sleep(30);
        const mid = Date.now();
        await sleep(30);
        const fresh = await newClient(s());
        const black = await newClient(s());
        await s().blacklistClient(black);
        const collect = async (inc: boolean, afterMs: number) => {
          const out = new Set<string>();
          await s().streamClientIds(inc, afterMs, async (id) => {
            out.add(hex(id));
          });
          return out;
        };
        const all = await collect(true, 0);
        assert.ok(all.has(hex(old)) && all.has(hex(fresh)) && all.has(hex(black)));
        const noBlack = await collect(false, 0);
        assert.ok(noBlack.has(hex(old)) && noBlack.has(hex(fresh)) && !noBlack.has(hex(black)));
        const recent = await collect(true, mid);
        assert.ok(!recent.has(hex(old)) && recent.has(hex(fresh)) && recent.has(hex(black)));
      });

      it("streams many client IDs, each once", async () => {
        const made = new Set<string>();
        for (let i = 0; i < 1200; i += 100) {
          await Promise.all(
            Array.from({ length: 100 }, async () => made.add(hex(await newClient(s(), [])))),
          );
        }
        const seen: string[] = [];
        await s().streamClientIds(true, 0, (id) => {
          seen.push(hex(id));
        });
        assert.equal(new Set(seen).size, seen.length);
        for (const id of made) assert.ok(seen.includes(id));
      });

      it("records resource usage, memory in MiB truncated, fetched by server time window", async () => {
        const id = await newClient(s());
        const start = Date.now() - 1;
        await s().recordResourceUsageData(
          id,
          create(ResourceUsageDataSchema, {
            scope: "system",
            pid: 1234n,
            processStartTime: timestampFromMs(1_700_000_000_000),
            dataTimestamp: timestampFromMs(1_700_000_060_000),
            processTerminated: true,
            resourceUsage: create(AggregatedResourceUsageSchema, {
              meanUserCpuRate: 1.5,
              maxUserCpuRate: 2.5,
              meanSystemCpuRate: 0.25,
              maxSystemCpuRate: 0.75,
              meanResidentMemory: 3 * 1048576 - 1,
              maxResidentMemory: 5n * 1048576n + 1048575n,
              meanNumFds: 7.9,
              maxNumFds: 11,
            }),
          }),
        );
        const end = Date.now() + 1;
        const [r] = await s().fetchResourceUsageRecords(id, start, end);
        assert.ok(r);
        assert.equal(r.scope, "system");
        assert.equal(r.pid, 1234n);
        assert.equal(r.processTerminated, true);
        assert.equal(r.meanUserCpuRate, 1.5);
        assert.equal(r.maxSystemCpuRate, 0.75);
        assert.equal(r.meanResidentMemoryMib, 2);
        assert.equal(r.maxResidentMemoryMib, 5);
        assert.equal(r.meanNumFds, 7);
        assert.equal(r.maxNumFds, 11);
        assert.equal(timestampMs(r.processStartTime!), 1_700_000_000_000);
        assert.equal(timestampMs(r.clientTimestamp!), 1_700_000_060_000);
        const st = timestampMs(r.serverTimestamp!);
        assert.ok(st >= start && st < end);
        assert.deepEqual(await s().fetchResourceUsageRecords(id, end, end + 1000), []);
        assert.deepEqual(await s().fetchResourceUsageRecords(id, start - 1000, start), []);
        await assert.rejects(
          s().recordResourceUsageData(id, create(ResourceUsageDataSchema, { scope: "x" })),
          InvalidArgumentError,
        );
        await assert.rejects(
          s().recordResourceUsageData(
            clientId(),
            create(ResourceUsageDataSchema, {
              scope: "system",
              processStartTime: timestampFromMs(1),
              dataTimestamp: timestampFromMs(2),
            }),
          ),
          NotFoundError,
        );
      });
    });

    describe("broadcasts", () => {
      const s = useStore(makeStore);
      const broadcast = (o: { expiresMs?: number; labels?: ReturnType<typeof label>[] } = {}) =>
        create(BroadcastSchema, {
          broadcastId: randomBytes(8),
          source: create(AddressSchema, { serviceName: "bsrc" }),
          destination: create(AddressSchema, { serviceName: "bdst" }),
          messageType: "BType",
          requiredLabels: o.labels ?? [label("client", "linux")],
          data: create(AnySchema, { typeUrl: "t/b", value: Buffer.from("payload") }),
          ...(o.expiresMs === undefined ? {} : { expirationTime: timestampFromMs(o.expiresMs) }),
        });
      const bmsg = (to: Uint8Array) => msg({ to, service: "bdst", data: Buffer.from("payload") });
      const active = async (id: Uint8Array) =>
        (await s().listActiveBroadcasts()).find((a) => hex(a.broadcast.broadcastId) === hex(id));

      it("lists a new broadcast as active with everything it was created with", async () => {
        const b = broadcast({ expiresMs: Date.now() + 3_600_000 });
        await s().createBroadcast(b, 10n);
        const a = await active(b.broadcastId);
        assert.ok(a);
        assert.equal(a.sent, 0n);
        assert.equal(a.limit, 10n);
        assert.equal(a.broadcast.source!.serviceName, "bsrc");
        assert.equal(a.broadcast.destination!.serviceName, "bdst");
        assert.equal(a.broadcast.messageType, "BType");
        assert.equal(Buffer.from(a.broadcast.data!.value).toString(), "payload");
        assert.equal(timestampMs(a.broadcast.expirationTime!), timestampMs(b.expirationTime!));
        assert.deepEqual(
          a.broadcast.requiredLabels.map((l) => l.label),
          ["linux"],
        );
        await assert.rejects(s().createBroadcast(b, 10n), /already exists/);
      });

      it("sends to at most `limit` clients, once each", async () => {
        const b = broadcast();
        await s().createBroadcast(b, 2n);
        const [c1, c2, c3] = [await newClient(s()), await newClient(s()), await newClient(s())];
        const m1 = bmsg(c1);
        assert.equal(await s().saveBroadcastMessage(m1, b.broadcastId, c1), true);
        const dup = bmsg(c1);
        assert.equal(await s().saveBroadcastMessage(dup, b.broadcastId, c1), false);
        assert.deepEqual(await s().getMessages([dup.messageId], false), []);
        assert.equal((await active(b.broadcastId))!.sent, 1n);
        assert.equal(await s().saveBroadcastMessage(bmsg(c2), b.broadcastId, c2), true);
        const late = bmsg(c3);
        assert.equal(await s().saveBroadcastMessage(late, b.broadcastId, c3), false);
        assert.deepEqual(await s().getMessages([late.messageId], false), []);
        assert.equal(await active(b.broadcastId), undefined);
        assert.deepEqual((await s().listSentBroadcasts(c1)).map(hex), [hex(b.broadcastId)]);
        assert.deepEqual(await s().listSentBroadcasts(c3), []);
        const [stored] = await s().getMessages([m1.messageId], true);
        assert.equal(Buffer.from(stored!.data!.value).toString(), "payload");
        assert.equal(await s().getPendingMessageCount([c1]), 1n);
        const claimed = await s().claimClientMessages(c1, { limit: 10, leaseMs: 600_000 });
        assert.deepEqual(ids(claimed), ids([m1]));
      });

      it("sends an unlimited broadcast to every client", async () => {
        const b = broadcast();
        await s().createBroadcast(b, BROADCAST_UNLIMITED);
        for (let i = 0; i < 5; i++) {
          const c = await newClient(s());
          assert.equal(await s().saveBroadcastMessage(bmsg(c), b.broadcastId, c), true);
        }
        const a = await active(b.broadcastId);
        assert.equal(a!.sent, 5n);
        assert.equal(a!.limit, BROADCAST_UNLIMITED);
      });

      it("never sends a disabled broadcast", async () => {
        const off = broadcast();
        await s().createBroadcast(off, 0n);
        assert.equal(await active(off.broadcastId), undefined);
        const c = await newClient(s());
        assert.equal(await s().saveBroadcastMessage(bmsg(c), off.broadcastId, c), false);
        const on = broadcast();
        await s().createBroadcast(on, BROADCAST_UNLIMITED);
        assert.ok(await active(on.broadcastId));
        await s().disableBroadcasts([on.broadcastId, randomBytes(8)]);
        assert.equal(await active(on.broadcastId), undefined);
        assert.equal(await s().saveBroadcastMessage(bmsg(c), on.broadcastId, c), false);
        assert.deepEqual(await s().listSentBroadcasts(c), []);
      });

      it("stops sending an expired broadcast", async () => {
        const b = broadcast({ expiresMs: Date.now() - 1000 });
        await s().createBroadcast(b, 100n);
        assert.equal(await active(b.broadcastId), undefined);
        const c = await newClient(s());
        assert.equal(await s().saveBroadcastMessage(bmsg(c), b.broadcastId, c), false);
        assert.equal(await s().saveBroadcastMessage(bmsg(c), randomBytes(8), c), false);
      });

      it("never exceeds the limit under concurrent saves", async () => {
        const b = broadcast();
        await s().createBroadcast(b, 3n);
        const clients = await Promise.all(Array.from({ length: 10 }, () => newClient(s())));
        const results = await Promise.all(clients.map((c) => s().saveBroadcastMessage(bmsg(c), b.broadcastId, c)));
        assert.equal(results.filter(Boolean).length, 3);
      });

      it("rejects group_name and a broadcast without source", async () => {
        const g = broadcast();
        g.groupName = "g";
        await assert.rejects(s().createBroadcast(g, 1n), InvalidArgumentError);
        const n = broadcast();
        n.source = undefined;
        await assert.rejects(s().createBroadcast(n, 1n), InvalidArgumentError);
      });
    });

    describe("files", () => {
      const s = useStore(makeStore);

      it("stores, replaces, stats, reads and deletes files", async () => {
        assert.equal(await s().statFile("svc", "f"), undefined);
        assert.equal(await s().readFile("svc", "f"), undefined);
        const t0 = Date.now();
        await s().storeFile("svc", "f", Buffer.from("one"));
        const m1 = await s().statFile("svc", "f");
        assert.ok(m1 !== undefined && m1 >= t0 - 1 && m1 <= Date.now() + 1);
        await sleep(5);
        await s().storeFile("svc", "f", Buffer.from("two!"));
        const r = await s().readFile("svc", "f");
        assert.equal(Buffer.from(r!.data).toString(), "two!");
        assert.ok(r!.modifiedMs >= m1);
        await s().storeFile("svc", "empty", new Uint8Array(0));
        assert.equal((await s().readFile("svc", "empty"))!.data.length, 0);
        await s().deleteFile("svc", "f");
        await s().deleteFile("svc", "f");
        assert.equal(await s().statFile("svc", "f"), undefined);
        assert.equal(await s().readFile("other", "empty"), undefined);
      });

      it("stores binary content exactly", async () => {
        const data = randomBytes(256 * 1024);
        await s().storeFile("svc", "bin", data);
        assert.equal(hex((await s().readFile("svc", "bin"))!.data), hex(data));
      });

      it("rejects an oversize file before touching the database", async () => {
        await assert.rejects(
          s().storeFile("svc", "huge", Buffer.alloc(MAX_STORED_PAYLOAD_BYTES + 1)),
          InvalidArgumentError,
        );
      });
    });

    describe("pruning", () => {
      const s = useStore(makeStore);

      it("deletes processed and failed messages created before the cutoff, in batches", async () => {
        const oldMs = Date.now() - 10 * 24 * 3600 * 1000;
        const cutoff = Date.now() - 24 * 3600 * 1000;
        const c = await newClient(s());
        const contactId = await s().recordClientContact({ clientId: c, sentNonce: 0n, receivedNonce: 0n, address: "a:1" });
        const oldDone = Array.from({ length: 5 }, () => msg({ createdMs: oldMs, result: ok() }));
        const oldFailed = msg({ createdMs: oldMs, result: failure("x") });
        const oldPending = msg({ createdMs: oldMs });
        const newDone = msg({ result: ok() });
        await s().storeMessages([...oldDone, oldFailed, oldPending, newDone], { contactId });
        const n = await s().pruneMessages(cutoff, 2);
        assert.equal(n, 6);
        assert.deepEqual(
          ids(await s().getMessages([...oldDone, oldFailed, oldPending, newDone].map((m) => m.messageId), false)),
          ids([oldPending, newDone]),
        );
        assert.equal(await s().pruneMessages(cutoff, 2), 0);
        assert.equal(await s().getPendingMessageCount([oldPending.destination!.clientId]), 1n);
      });
    });

    describe("console: fleet counts", () => {
      const s = useStore(makeStore);

      it("counts clients in total and seen after each given time, in one answer", async () => {
        assert.deepEqual(await s().countClients([0]), { total: 0, seenAfter: [0] });
        const t0 = Date.now() - 1;
        const old = await newClient(s());
        await sleep(5);
        const t1 = Date.now();
        await sleep(5);
        await newClient(s());
        const recent = await newClient(s());
        await s().recordClientContact({ clientId: recent, sentNonce: 1n, receivedNonce: 2n, address: "a:1" });
        assert.deepEqual(await s().countClients([t0, t1, Date.now() + 60_000]), { total: 3, seenAfter: [3, 2, 0] });
        await s().recordClientContact({ clientId: old, sentNonce: 1n, receivedNonce: 2n, address: "a:1" });
        assert.deepEqual(await s().countClients([t1]), { total: 3, seenAfter: [3] });
        assert.deepEqual(await s().countClients([]), { total: 3, seenAfter: [] });
      });
    });

    describe("console: labels and stream holders", () => {
      const s = useStore(makeStore);

      it("counts clients per label, most common first, up to the limit", async () => {
        await newClient(s(), [label("client", "linux"), label("client", "web")]);
        await newClient(s(), [label("client", "linux"), label("admin", "web")]);
        await newClient(s(), [label("client", "linux")]);
        const counts = await s().countClientsByLabel(10);
        assert.deepEqual(
          counts.map((c) => [c.label.serviceName, c.label.label, c.clients]),
          [
            ["client", "linux", 3],
            ["admin", "web", 1],
            ["client", "web", 1],
          ],
        );
        assert.equal((await s().countClientsByLabel(1)).length, 1);
        await assert.rejects(s().countClientsByLabel(0), InvalidArgumentError);
      });

      it("counts recent streaming clients per notification address, leaving out pollers and older contacts", async () => {
        const [a, b, c, d] = [await newClient(s()), await newClient(s()), await newClient(s()), await newClient(s())];
        await s().recordClientContact({ clientId: a, sentNonce: 0n, receivedNonce: 0n, address: "x:1", streamingTo: "fe1:8081" });
        await sleep(5);
        const after = Date.now();
        await sleep(5);
        await s().recordClientContact({ clientId: b, sentNonce: 0n, receivedNonce: 0n, address: "x:2", streamingTo: "fe1:8081" });
        await s().recordClientContact({ clientId: c, sentNonce: 0n, receivedNonce: 0n, address: "x:3", streamingTo: "fe2:8081" });
        await s().recordClientContact({ clientId: d, sentNonce: 0n, receivedNonce: 0n, address: "x:4" });
        assert.deepEqual(await s().countStreamHolders(after), [
          { address: "fe1:8081", clients: 1 },
          { address: "fe2:8081", clients: 1 },
        ]);
        assert.deepEqual(await s().countStreamHolders(0), [
          { address: "fe1:8081", clients: 2 },
          { address: "fe2:8081", clients: 1 },
        ]);
      });
    });

    describe("console: finding clients", () => {
      const s = useStore(makeStore);
      const idA = Buffer.from("abcd000000000001", "hex");
      const idB = Buffer.from("abcd0000000000ff", "hex");
      const idC = Buffer.from("abce000000000000", "hex");

      before(async () => {
        for (const [id, labels] of [
          [idB, [label("client", "<script>"), label("client", "linux")]],
          [idA, [label("client", "linux")]],
          [idC, [label("admin", "linux")]],
        ] as const) {
          await s().addClient(id, { key: randomBytes(91), labels: [...labels], blacklisted: false });
          await sleep(5);
        }
      });

      it("lists the most recently seen clients first, with their labels", async () => {
        await s().recordClientContact({ clientId: idA, sentNonce: 0n, receivedNonce: 0n, address: "1.2.3.4:5" });
        const got = await s().searchClients({ by: "recent", limit: 2 });
        assert.deepEqual(got.map((c) => hex(c.clientId)), [hex(idA), hex(idC)]);
        assert.equal(got[0]!.lastContactAddress, "1.2.3.4:5");
        assert.deepEqual(got[0]!.labels.map((l) => l.label), ["linux"]);
      });

      it("finds clients by ID prefix in ID order, odd-length prefixes included", async () => {
        const by = async (prefix: string, limit = 10) =>
          (await s().searchClients({ by: "idPrefix", prefix, limit })).map((c) => hex(c.clientId));
        assert.deepEqual(await by("abcd"), [hex(idA), hex(idB)]);
        assert.deepEqual(await by("ABC"), [hex(idA), hex(idB), hex(idC)]);
        assert.deepEqual(await by("abc", 1), [hex(idA)]);
        assert.deepEqual(await by(hex(idB)), [hex(idB)]);
        assert.deepEqual(await by("0"), []);
        await assert.rejects(s().searchClients({ by: "idPrefix", prefix: "xyz", limit: 10 }), InvalidArgumentError);
        await assert.rejects(s().searchClients({ by: "idPrefix", prefix: "", limit: 10 }), InvalidArgumentError);
      });

      it("finds clients by label, of any service or of one, byte for byte", async () => {
        const by = async (l: string, serviceName?: string) =>
          (await s().searchClients({ by: "label", label: l, limit: 10, ...(serviceName ? { serviceName } : {}) })).map(
            (c) => hex(c.clientId),
          );
        assert.deepEqual(await by("linux"), [hex(idA), hex(idB), hex(idC)]);
        assert.deepEqual(await by("linux", "admin"), [hex(idC)]);
        assert.deepEqual(await by("<script>"), [hex(idB)]);
        assert.deepEqual(await by("LINUX"), []);
      });

      it("lists a client's latest contacts, newest first", async () => {
        for (const n of [1, 2, 3]) {
          await s().recordClientContact({ clientId: idC, sentNonce: BigInt(n), receivedNonce: 0n, address: `h:${n}` });
        }
        const got = await s().listRecentClientContacts(idC, 2);
        assert.deepEqual(got.map((c) => c.observedAddress), ["h:3", "h:2"]);
        assert.deepEqual(got.map((c) => c.sentNonce), [3n, 2n]);
        await assert.rejects(s().listRecentClientContacts(idC, 100_000), InvalidArgumentError);
      });
    });

    describe("console: one client's messages", () => {
      const s = useStore(makeStore);

      it("counts a client's pending messages per service with the oldest and the next due", async () => {
        const c = await newClient(s());
        const oldMs = Date.now() - 3_600_000;
        const a1 = msg({ to: c, service: "a", createdMs: oldMs });
        const a2 = msg({ to: c, service: "a" });
        const b1 = msg({ to: c, service: "b" });
        const before = Date.now();
        await s().storeMessages([a1, a2, b1, msg({ service: "a" })]);
        const got = await s().countPendingByService(c);
        assert.deepEqual(
          got.map((p) => [p.service, p.count]),
          [
            ["a", 2],
            ["b", 1],
          ],
        );
        assert.equal(got[0]!.oldestMs, Math.floor(oldMs / 1000) * 1000);
        assert.ok(got[0]!.nextDueMs >= before - 1 && got[0]!.nextDueMs <= Date.now());
        await s().ackClientMessages([{ clientId: c, ids: [a1.messageId, b1.messageId] }], Date.now());
        assert.deepEqual(
          (await s().countPendingByService(c)).map((p) => [p.service, p.count]),
          [["a", 1]],
        );
      });

      it("lists failed messages of the client's latest contacts with their reasons, newest contact first", async () => {
        const c = await newClient(s());
        const contact = (n: number) => s().recordClientContact({ clientId: c, sentNonce: BigInt(n), receivedNonce: 0n, address: "a:1" });
        const first = await contact(1);
        const early = msg({ from: c, to: new Uint8Array(0), result: failure("early failure") });
        await s().storeMessages([early], { contactId: first });
        const second = await contact(2);
        const failed = msg({ from: c, to: new Uint8Array(0), service: "GRR" });
        const fine = msg({ from: c, to: new Uint8Array(0), result: ok() });
        await s().storeMessages([failed, fine], { contactId: second });
        await s().setMessageResult(new Uint8Array(0), failed.messageId, failure("processor said no"));
        const got = await s().listRecentFailedMessages(c, 10, 10);
        assert.deepEqual(ids(got), ids([failed, early]));
        assert.equal(hex(got[0]!.messageId), hex(failed.messageId), "newest contact first");
        assert.equal(got[0]!.result?.failedReason, "processor said no");
        assert.equal(got[0]!.destination?.serviceName, "GRR");
        assert.equal(got[0]!.data, undefined, "no payloads");
        assert.deepEqual(ids(await s().listRecentFailedMessages(c, 1, 10)), ids([failed]), "only the latest contact");
        assert.equal((await s().listRecentFailedMessages(c, 10, 1)).length, 1);
        assert.deepEqual(await s().listRecentFailedMessages(clientId(), 10, 10), []);
      });
    });

    describe("console: service queues", () => {
      const s = useStore(makeStore);

      it("counts pending messages per service: server-bound due now and later, client-bound", async () => {
        const now = Date.now();
        await s().storeMessages([msg({ to: new Uint8Array(0), service: "GRR" })], { serverDueMs: now - 1000 });
        await s().storeMessages(
          [msg({ to: new Uint8Array(0), service: "GRR" }), msg({ to: new Uint8Array(0), service: "GRR" })],
          { serverDueMs: now + 600_000 },
        );
        await s().storeMessages([msg({ service: "GRR" }), msg({ service: "other" }), msg({ service: "other", result: ok() })]);
        assert.deepEqual(await s().listServiceQueues(1000), [
          { service: "GRR", serverDueNow: 1, serverDueLater: 2, clientPending: 1 },
          { service: "other", serverDueNow: 0, serverDueLater: 0, clientPending: 1 },
        ]);
        const capped = await s().listServiceQueues(2);
        const counted = capped.reduce((n, q) => n + q.serverDueNow + q.serverDueLater + q.clientPending, 0);
        assert.equal(counted, 2, "reads at most maxRows pending messages");
      });
    });

    describe("console: server heartbeats", () => {
      const s = useStore(makeStore);

      it("keeps one heartbeat per server, lists recent ones by server ID and prunes old ones", async () => {
        const now = Date.now();
        await s().recordServerHeartbeat({ serverId: "fe-2:4443", timeMs: now - 1000, report: '{"n":1}' });
        await s().recordServerHeartbeat({ serverId: "fe-1:4443", timeMs: now - 600_000, report: "{}" });
        await s().recordServerHeartbeat({ serverId: "fe-2:4443", timeMs: now, report: '{"n":2}' });
        assert.deepEqual(await s().listServerHeartbeats(now - 3_600_000), [
          { serverId: "fe-1:4443", timeMs: now - 600_000, report: "{}" },
          { serverId: "fe-2:4443", timeMs: now, report: '{"n":2}' },
        ]);
        assert.deepEqual(
          (await s().listServerHeartbeats(now - 60_000)).map((h) => h.serverId),
          ["fe-2:4443"],
        );
        assert.equal(await s().pruneServerHeartbeats(now - 60_000), 1);
        assert.deepEqual(
          (await s().listServerHeartbeats(0)).map((h) => h.serverId),
          ["fe-2:4443"],
        );
        await assert.rejects(s().recordServerHeartbeat({ serverId: "", timeMs: now, report: "{}" }), InvalidArgumentError);
      });
    });

    describe("health", () => {
      const s = useStore(makeStore);

      it("answers ping and names its backend", async () => {
        await s().ping();
        assert.match(s().backend, /^(sqlite|mysql)$/);
      });
    });
  });
}
