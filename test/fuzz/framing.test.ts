// Fuzzing the two frame decoders that read bytes from outside: the /streaming-message framing
// (magic, then uvarint-length frames) and the local channel framing. Any split of valid input
// decodes to the same frames; any bytes give frames or FrameError; an oversize length is refused
// before its body arrives; and a peer dribbling bytes one at a time costs memory in proportion to
// the bytes, not to the number of pieces.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import {
  ChannelFrameDecoder,
  encodeChannelFrame,
  encodeStreamFrame,
  encodeUvarint,
  FrameError,
  MAGIC_BYTES,
  StreamFrameDecoder,
} from "../../src/common/framing.js";
import { fuzzParams, fuzzTimeout, onlyThrows } from "./fuzz-params.js";
import { mutatedBytes, splits } from "./mutate.js";

const frames = fc.array(
  fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    // Large frames span several chunks and need multi-byte lengths; their contents matter less.
    fc.tuple(fc.integer({ min: 128, max: 70_000 }), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([n, fill]) =>
      Buffer.alloc(n, Buffer.from(fill)),
    ),
  ),
  { maxLength: 6 },
);

function hex(list: Uint8Array[]): string[] {
  return list.map((b) => Buffer.from(b).toString("hex"));
}

describe("fuzz: streaming frame decoder", { timeout: fuzzTimeout(60_000) }, () => {
  it("decodes any split of magic + frames to the same frames, and reports the pending frame's size", () => {
    fc.assert(
      fc.property(frames, fc.array(fc.nat(), { maxLength: 10 }), (payloads, cuts) => {
        const wire = Buffer.concat([MAGIC_BYTES, ...payloads.map((p) => encodeStreamFrame(p))]);
        const d = new StreamFrameDecoder({ expectMagic: true });
        const out: Buffer[] = [];
        let fed = 0;
        for (const chunk of splits(wire, cuts)) {
          out.push(...d.push(chunk));
          fed += chunk.length;
          const pending = d.pendingFrameBytes;
          if (pending > 0) {
            // The frame being received is the next one not yet returned, announced in full.
            assert.equal(pending, payloads[out.length]!.length);
            assert.ok(fed < wire.length);
          }
        }
        assert.deepEqual(hex(out), hex(payloads));
        assert.equal(d.buffered, 0);
        assert.equal(d.pendingFrameBytes, 0);
      }),
      fuzzParams(600),
    );
  });

  it("any bytes give frames or FrameError, and a length over the limit is refused before its body", () => {
    const corpus = [
      Buffer.concat([MAGIC_BYTES, encodeStreamFrame(Buffer.from("hello")), encodeStreamFrame(Buffer.alloc(0))]),
      Buffer.concat([MAGIC_BYTES, encodeUvarint(1000), Buffer.alloc(10)]),
      Buffer.concat([MAGIC_BYTES, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f])]),
    ];
    const tokens = [MAGIC_BYTES, Buffer.from([0x80]), Buffer.from([0xff, 0xff, 0xff, 0x0f]), Buffer.from([0])];
    fc.assert(
      fc.property(fc.oneof(mutatedBytes(corpus, tokens, 5), fc.uint8Array({ maxLength: 64 })), fc.array(fc.nat(), { maxLength: 5 }), (data, cuts) => {
        const d = new StreamFrameDecoder({ expectMagic: true, maxFrameBytes: 4096 });
        onlyThrows(() => {
          for (const chunk of splits(data, cuts)) {
            for (const f of d.push(chunk)) assert.ok(f.length <= 4096);
            assert.ok(d.pendingFrameBytes <= 4096);
          }
        }, FrameError);
      }),
      fuzzParams(4000),
    );
    const d = new StreamFrameDecoder({ expectMagic: false, maxFrameBytes: 4096 });
    assert.throws(() => d.push(encodeUvarint(4097)), /frame of 4097 bytes exceeds the limit of 4096 bytes/);
  });

  it("holds a frame sent one byte at a time in about its own size (regression: ~100 bytes per piece)", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const size = 200_000;
    const wire = Buffer.concat([MAGIC_BYTES, encodeStreamFrame(Buffer.alloc(size, 7))]);
    const d = new StreamFrameDecoder({ expectMagic: true });
    gc();
    const before = process.memoryUsage();
    for (let i = 0; i < wire.length - 1; i++) d.push(Buffer.from([wire[i]!]));
    gc();
    const after = process.memoryUsage();
    const grown = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
    assert.ok(grown < 4 * size, `holding ${size - 1} bytes cost ${grown} bytes`);
    const [frame] = d.push(wire.subarray(wire.length - 1));
    assert.equal(frame?.length, size);
    assert.ok(frame!.every((b) => b === 7));
  });
});

describe("fuzz: channel frame decoder", { timeout: fuzzTimeout(30_000) }, () => {
  it("decodes any split of the channel framing to the same messages", () => {
    fc.assert(
      fc.property(frames, fc.array(fc.nat(), { maxLength: 10 }), (payloads, cuts) => {
        const wire = Buffer.concat([MAGIC_BYTES, ...payloads.map((p) => encodeChannelFrame(p))]);
        const d = new ChannelFrameDecoder("fuzz");
        const out: Buffer[] = [];
        for (const chunk of splits(wire, cuts)) out.push(...d.push(chunk));
        assert.deepEqual(hex(out), hex(payloads));
        assert.ok(d.atMessageBoundary);
      }),
      fuzzParams(600),
    );
  });

  it("any bytes give messages or FrameError", () => {
    const corpus = [
      Buffer.concat([MAGIC_BYTES, encodeChannelFrame(Buffer.from("abc")), encodeChannelFrame(Buffer.alloc(0))]),
      Buffer.concat([MAGIC_BYTES, Buffer.from([0xff, 0xff, 0xff, 0x7f])]),
    ];
    fc.assert(
      fc.property(fc.oneof(mutatedBytes(corpus, [MAGIC_BYTES], 5), fc.uint8Array({ maxLength: 64 })), fc.array(fc.nat(), { maxLength: 5 }), (data, cuts) => {
        const d = new ChannelFrameDecoder();
        onlyThrows(() => {
          for (const chunk of splits(data, cuts)) d.push(chunk);
        }, FrameError);
      }),
      fuzzParams(4000),
    );
  });
});
