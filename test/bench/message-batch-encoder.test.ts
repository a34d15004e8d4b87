// The load generator's hand-encoded ingest frames (bench/loadgen/wire.ts MessageBatchEncoder) must
// be what a client would send: a WrappedContactData whose ContactData carries the given fields and
// `count` messages like clientMessage's, each with a source_message_id never used before.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { MessageBatchEncoder } from "../../bench/loadgen/wire.js";
import { ContactDataSchema, WrappedContactDataSchema } from "../../src/gen/fleetspeak/common_pb.js";

describe("MessageBatchEncoder", () => {
  it("encodes frames that decode to the ContactData fields and fresh messages", () => {
    const enc = new MessageBatchEncoder("GRR", 10, 300);
    const seen = new Set<string>();
    let payload: string | undefined;
    for (let frame = 0; frame < 3; frame++) {
      const wcd = fromBinary(WrappedContactDataSchema, enc.wrapped({ sequencingNonce: 77n, AllowedMessages: { GRR: 5n } }));
      const cd = fromBinary(ContactDataSchema, wcd.contactData);
      assert.equal(cd.sequencingNonce, 77n);
      assert.deepEqual(cd.AllowedMessages, { GRR: 5n });
      assert.ok(cd.clientClock && cd.clientClock.seconds > 0n, "the frame carries the client clock");
      assert.equal(cd.messages.length, 10);
      for (const m of cd.messages) {
        assert.equal(m.source?.serviceName, "GRR");
        assert.equal(m.destination?.serviceName, "GRR");
        assert.equal(m.messageType, "BenchData");
        assert.equal(m.sourceMessageId.length, 16);
        assert.equal(m.data?.typeUrl, "type.googleapis.com/fleetspeak.bench.Data");
        assert.equal(m.data?.value.length, 300);
        payload ??= Buffer.from(m.data!.value).toString("hex");
        assert.equal(Buffer.from(m.data!.value).toString("hex"), payload);
        seen.add(Buffer.from(m.sourceMessageId).toString("hex"));
      }
    }
    assert.equal(seen.size, 30, "every message has its own source_message_id");
  });

  it("carries a large batch (lengths past one varint byte)", () => {
    const enc = new MessageBatchEncoder("GRR", 50, 4096);
    const cd = fromBinary(ContactDataSchema, fromBinary(WrappedContactDataSchema, enc.wrapped({})).contactData);
    assert.equal(cd.messages.length, 50);
    assert.ok(cd.messages.every((m) => m.data?.value.length === 4096));
  });
});
