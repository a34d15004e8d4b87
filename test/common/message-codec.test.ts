// encodeMessage (src/common/message-codec.ts) writes fleetspeak.Message by hand for speed; it must
// give exactly the bytes @bufbuild/protobuf's toBinary gives for the same message, whatever is set:
// every field, none, negative and 64-bit numbers, non-ASCII strings, empty map values, and unknown
// fields kept from a newer peer's message.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { encodeMessage } from "../../src/common/message-codec.js";
import { Message_Priority, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";

type Init = MessageInitShape<typeof MessageSchema>;

function same(init: Init, what: string): void {
  const m = create(MessageSchema, init);
  assert.equal(Buffer.from(encodeMessage(m)).toString("hex"), Buffer.from(toBinary(MessageSchema, m)).toString("hex"), what);
}

const full: Init = {
  messageId: randomBytes(32),
  source: { clientId: randomBytes(8), serviceName: "GRR" },
  isBlocklistedSource: true,
  sourceMessageId: randomBytes(16),
  destination: { serviceName: "GRR" },
  messageType: "MessageList",
  creationTime: { seconds: 1_765_000_000n, nanos: 123_456_789 },
  data: { typeUrl: "type.googleapis.com/grr.MessageList", value: randomBytes(300) },
  validationInfo: { tags: { b: "2", a: "1", empty: "", "ключ": "значение" } },
  result: { processedTime: { seconds: 5n, nanos: 6 }, failed: true, failedReason: "bad 💥" },
  priority: Message_Priority.HIGH,
  background: true,
  annotations: { entries: [{ key: "k", value: "v" }, { key: "", value: "only value" }, { key: "only key", value: "" }] },
};

describe("encodeMessage", () => {
  it("gives toBinary's bytes for a message with every field set", () => same(full, "full"));

  it("gives toBinary's bytes for an empty message and for each field alone", () => {
    same({}, "empty");
    for (const [k, v] of Object.entries(full)) same({ [k]: v } as Init, k);
  });

  it("writes empty nested messages that are set, and leaves out proto3 defaults", () => {
    same({ source: {}, destination: { serviceName: "" }, creationTime: {}, data: {}, validationInfo: {}, result: {}, annotations: {} }, "empty nested");
    same({ priority: Message_Priority.MEDIUM, background: false, messageType: "", messageId: new Uint8Array() }, "defaults");
  });

  it("encodes negative and large numbers as protobuf does", () => {
    same({ creationTime: { seconds: -62_135_596_800n, nanos: -1 } }, "negative timestamp");
    same({ creationTime: { seconds: 9_223_372_036_854_775_807n, nanos: 999_999_999 } }, "max int64");
    same({ creationTime: { seconds: -9_223_372_036_854_775_808n } }, "min int64");
    same({ creationTime: { seconds: BigInt(Number.MAX_SAFE_INTEGER) + 1n } }, "past 2^53");
    same({ priority: -5 as Message_Priority }, "negative enum");
    same({ priority: 1000 as Message_Priority }, "unknown enum value");
  });

  it("encodes lengths of more than one varint byte", () => {
    same({ data: { typeUrl: "t".repeat(200), value: randomBytes(70_000) }, messageType: "x".repeat(130) }, "long");
  });

  it("keeps unknown fields, at every level, after the known ones", () => {
    // A newer peer's message: unknown fields on Message (numbers 14 and 20000), on Address and on
    // Timestamp, built by appending their encodings to known ones and decoding.
    const extra = Buffer.from([
      0x70, 0x2a, // field 14 varint 42
      0x82, 0xf1, 0x04, 0x03, 0x61, 0x62, 0x63, // field 20000 LEN "abc"
    ]);
    const address = Buffer.concat([Buffer.from([0x12, 0x07, 0x12, 0x03, 0x47, 0x52, 0x52, 0x18, 0x07])]); // source {service_name "GRR", field 3 = 7}
    const time = Buffer.from([0x32, 0x04, 0x08, 0x01, 0x28, 0x09]); // creation_time {seconds 1, field 5 = 9}
    const base = toBinary(MessageSchema, create(MessageSchema, { messageType: "T", data: { typeUrl: "u", value: Buffer.from("v") } }));
    const decoded = fromBinary(MessageSchema, Buffer.concat([base, address, time, extra]));
    assert.ok((decoded as { $unknown?: unknown[] }).$unknown?.length === 2, "the message keeps its two unknown fields");
    assert.equal(
      Buffer.from(encodeMessage(decoded)).toString("hex"),
      Buffer.from(toBinary(MessageSchema, decoded)).toString("hex"),
    );
    assert.deepEqual(fromBinary(MessageSchema, encodeMessage(decoded)), decoded);
  });

  it("gives toBinary's bytes for many random messages", () => {
    const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
    const maybe = <T>(v: () => T): T | undefined => (Math.random() < 0.5 ? v() : undefined);
    for (let i = 0; i < 500; i++) {
      const init: Init = {};
      const str = () => pick(["", "a", "GRR", "ü", "x".repeat(Math.floor(Math.random() * 300))]);
      const bytes = () => randomBytes(pick([0, 1, 16, 32, 127, 128, 1000]));
      if (Math.random() < 0.5) init.messageId = bytes();
      init.source = maybe(() => ({ clientId: bytes(), serviceName: str() }));
      init.destination = maybe(() => ({ clientId: bytes(), serviceName: str() }));
      if (Math.random() < 0.5) init.messageType = str();
      init.creationTime = maybe(() => ({ seconds: BigInt(Math.floor((Math.random() - 0.3) * 2 ** 40)), nanos: Math.floor((Math.random() - 0.2) * 1e9) }));
      init.data = maybe(() => ({ typeUrl: str(), value: bytes() }));
      init.validationInfo = maybe(() => ({ tags: Object.fromEntries(Array.from({ length: Math.floor(Math.random() * 4) }, () => [str(), str()])) }));
      init.result = maybe(() => ({ failed: Math.random() < 0.5, failedReason: str(), processedTime: maybe(() => ({ seconds: 1n })) }));
      if (Math.random() < 0.5) init.priority = pick([0, 1, 2]);
      if (Math.random() < 0.5) init.background = Math.random() < 0.5;
      init.annotations = maybe(() => ({ entries: Array.from({ length: Math.floor(Math.random() * 3) }, () => ({ key: str(), value: str() })) }));
      if (Math.random() < 0.5) init.isBlocklistedSource = true;
      same(init, `random ${i}: ${JSON.stringify(init, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`.slice(0, 400));
    }
  });
});
