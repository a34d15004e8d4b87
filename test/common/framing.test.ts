import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ChannelFrameDecoder,
  encodeChannelFrame,
  encodeStreamFrame,
  FrameError,
  MAGIC_BYTES,
  StreamFrameDecoder,
} from "../../src/common/framing.js";

function byteByByte<T>(input: Buffer, push: (b: Buffer) => T[]): T[] {
  const out: T[] = [];
  for (let i = 0; i < input.length; i++) out.push(...push(input.subarray(i, i + 1)));
  return out;
}

describe("streaming frames", () => {
  const payloads = [Buffer.alloc(0), Buffer.from([0x20, 0x01]), Buffer.alloc(300, 7), Buffer.alloc(20000, 9)];

  it("encodes the examples of the spec: an ack frame is 02 20 01", () => {
    assert.equal(encodeStreamFrame(Buffer.from([0x20, 0x01])).toString("hex"), "022001");
    assert.equal(encodeStreamFrame(Buffer.alloc(300)).subarray(0, 2).toString("hex"), "ac02");
  });

  it("decodes a request body with magic fed one byte at a time", () => {
    const body = Buffer.concat([MAGIC_BYTES, ...payloads.map(encodeStreamFrame)]);
    const dec = new StreamFrameDecoder({ expectMagic: true });
    const frames = byteByByte(body, (b) => dec.push(b));
    assert.deepEqual(frames.map((f) => Buffer.from(f)), payloads);
    assert.equal(dec.buffered, 0);
  });

  it("decodes a response body (no magic) in one piece", () => {
    const dec = new StreamFrameDecoder({ expectMagic: false });
    const frames = dec.push(Buffer.concat(payloads.map(encodeStreamFrame)));
    assert.deepEqual(frames.map((f) => Buffer.from(f)), payloads);
  });

  it("rejects a wrong magic", () => {
    const dec = new StreamFrameDecoder({ expectMagic: true, where: "client 127.0.0.1:5" });
    assert.throws(() => dec.push(Buffer.from("POST / HTTP/1.1")), (e: Error) => e instanceof FrameError && /127\.0\.0\.1:5.*magic/.test(e.message));
  });

  it("rejects an oversize length from its prefix alone, before the body arrives", () => {
    const dec = new StreamFrameDecoder({ expectMagic: false, maxFrameBytes: 1000 });
    // uvarint 1001 = e9 07; no body bytes follow.
    assert.throws(() => dec.push(Buffer.from([0xe9, 0x07])), /1001 bytes exceeds the limit of 1000/);
    const dec2 = new StreamFrameDecoder({ expectMagic: false });
    assert.throws(() => dec2.push(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f])), /exceeds the limit/);
    const dec3 = new StreamFrameDecoder({ expectMagic: false });
    assert.throws(() => dec3.push(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), /longer than 5 bytes/);
  });
});

describe("channel frames", () => {
  it("encodes LEN(LE32) || body || magic (42-byte example of the spec)", () => {
    const f = encodeChannelFrame(Buffer.alloc(42, 1));
    assert.equal(f.subarray(0, 4).toString("hex"), "2a000000");
    assert.deepEqual(f.subarray(46), MAGIC_BYTES);
    assert.equal(f.length, 50);
  });

  it("decodes magic then messages fed one byte at a time, and knows message boundaries", () => {
    const msgs = [Buffer.from("hello"), Buffer.alloc(0), Buffer.alloc(5000, 3)];
    const stream = Buffer.concat([MAGIC_BYTES, ...msgs.map(encodeChannelFrame)]);
    const dec = new ChannelFrameDecoder();
    assert.equal(dec.handshakeDone, false);
    const out = byteByByte(stream, (b) => dec.push(b));
    assert.deepEqual(out.map((b) => Buffer.from(b)), msgs);
    assert.equal(dec.handshakeDone, true);
    assert.equal(dec.atMessageBoundary, true);
    dec.push(Buffer.from([5, 0]));
    assert.equal(dec.atMessageBoundary, false);
  });

  it("rejects a wrong magic, a wrong trailer and an oversize length", () => {
    assert.throws(() => new ChannelFrameDecoder("daemon GRR").push(Buffer.from("oops")), /daemon GRR: expected the channel magic/);
    const bad = Buffer.concat([MAGIC_BYTES, Buffer.from([1, 0, 0, 0, 9]), Buffer.from("nope")]);
    assert.throws(() => new ChannelFrameDecoder().push(bad), /after a message/);
    const big = Buffer.concat([MAGIC_BYTES, Buffer.from([0x01, 0x00, 0x20, 0x00])]);
    assert.throws(() => new ChannelFrameDecoder().push(big), /exceeds the limit of 2097152/);
    assert.throws(() => encodeChannelFrame(Buffer.alloc(2 * 1024 * 1024 + 1)), /exceeds the limit/);
  });
});
