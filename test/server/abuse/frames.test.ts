// Abuse of the frontend's request data, each against a live server while a well-behaved client
// keeps being served: oversized frames and bodies, large frames that are never finished (the
// server-wide buffer budget and the upload deadline), poll bodies sent a byte at a time, and a
// flood of tiny frames from a client that never reads the acknowledgements.
import assert from "node:assert/strict";
import { once } from "node:events";
import { request } from "node:https";
import { after, before, describe, it } from "node:test";
import type * as tls from "node:tls";
import { create } from "@bufbuild/protobuf";
import { anyPack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { encodeUvarint, MAGIC_BYTES } from "../../../src/common/framing.js";
import { MAX_CONTACT_BYTES } from "../../../src/common/limits.js";
import { outMessage, RawClient, wrap } from "../../support/raw-client.js";
import type { TestServer } from "../../support/server.js";
import { makeClientIdentity } from "../../support/tls.js";
import { closedWithin, MiB, memoryInUse, servedThroughout, startAbuseServer, tlsConnection } from "./abuse-support.js";

const CHUNKED_STREAM_HEAD =
  "POST /streaming-message HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

function chunk(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from("\r\n")]);
}

/**
 * Writes `size` bytes of `fill` as one HTTP chunk, as far as the server reads them within `ms`.
 * Every write shares one small buffer, so the attacker's own memory does not count.
 */
async function uploadAsFarAsAllowed(s: tls.TLSSocket, size: number, fill: number, ms: number): Promise<number> {
  s.write(`${size.toString(16)}\r\n`);
  const piece = Buffer.alloc(64 * 1024, fill);
  const until = Date.now() + ms;
  let sent = 0;
  while (sent < size && Date.now() < until && !s.destroyed) {
    const n = Math.min(piece.length, size - sent);
    const ok = s.write(piece.subarray(0, n));
    sent += n;
    if (!ok) {
      const drained = await Promise.race([
        once(s, "drain").then(() => true),
        new Promise((r) => setTimeout(() => r(false), Math.max(0, until - Date.now()))),
      ]);
      if (!drained) break;
    }
  }
  return sent;
}

/** Opens a stream whose first frame announces `frameBytes` and sends all but its last byte. */
async function unfinishedFrame(ts: TestServer, frameBytes: number, ms: number): Promise<{ socket: tls.TLSSocket; sent: number }> {
  const socket = await tlsConnection(ts);
  socket.write(CHUNKED_STREAM_HEAD);
  socket.write(chunk(Buffer.concat([MAGIC_BYTES, encodeUvarint(frameBytes)])));
  const sent = await uploadAsFarAsAllowed(socket, frameBytes - 1, 0x41, ms);
  return { socket, sent };
}

describe("abuse: request data", { timeout: 60_000 }, () => {
  let ts: TestServer;

  before(async () => {
    ts = await startAbuseServer({ maxBufferedRequestBytes: 4 * MiB, uploadGraceMs: 500 });
  });
  after(() => ts?.stop());

  it("an oversized frame or body is refused from its announced length, before its bytes are read", async () => {
    const s = await tlsConnection(ts);
    let answer = "";
    s.on("data", (d: Buffer) => {
      answer += d.toString("latin1");
    });
    s.write(CHUNKED_STREAM_HEAD);
    s.write(chunk(Buffer.concat([MAGIC_BYTES, encodeUvarint(MAX_CONTACT_BYTES + 1)])));
    assert.ok(await closedWithin(s, 2000), "the stream announcing an oversized frame was not closed");
    assert.match(answer, /^HTTP\/1\.1 400 [\s\S]*exceeds the limit of 20971520 bytes/);

    const status = await new Promise<number>((resolve, reject) => {
      const identity = makeClientIdentity();
      const req = request(
        {
          host: "127.0.0.1",
          port: ts.port,
          path: "/message",
          method: "POST",
          ca: ts.caPem,
          servername: "localhost",
          cert: identity.certPem,
          key: identity.keyPem,
          headers: { "content-length": String(MAX_CONTACT_BYTES + 1) },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      // Only the headers: the answer must not wait for 20 MiB.
      req.flushHeaders();
    });
    assert.equal(status, 400);
  });

  it("large frames that are never finished hold at most the buffer budget; small contacts go on, large polls are told to retry", async () => {
    const baseline = memoryInUse();
    const attackers: tls.TLSSocket[] = [];
    await servedThroughout(
      ts,
      (async () => {
        // Four streams each try to park a 3 MiB frame in memory, against a 4 MiB budget.
        const sends = await Promise.all([0, 1, 2, 3].map(() => unfinishedFrame(ts, 3 * MiB, 1500)));
        attackers.push(...sends.map((s) => s.socket));
        const held = memoryInUse() - baseline;
        // One frame's worth (3 MiB) is admitted; the other three wait with little more than a
        // read buffer each. Without the budget this would be 12 MiB.
        assert.ok(held < 7 * MiB, `the server holds ${(held / MiB).toFixed(1)} MiB for four unfinished frames`);
        // A well-behaved stream with small frames is served meanwhile.
        const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
        const stream = await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
        stream.send({ messages: [outMessage("TestService", "Small")] });
        assert.equal((await stream.next())?.ackIndex, 1n);
        stream.close();
        // A 1 MiB poll does not fit beside the parked frame: 503, come back later.
        const payload = anyPack(BytesValueSchema, create(BytesValueSchema, { value: Buffer.alloc(MiB) }));
        const big = await c.poll({ messages: [outMessage("TestService", "Big", payload)] });
        assert.equal(big.status, 503, big.text);
        assert.match(big.text, /max_buffered_request_bytes/);
      })(),
    );
    // The admitted frame had 500 ms + 48 s to arrive; the others never got memory. All go away
    // when their owners do.
    for (const a of attackers) a.destroy();
  });

  it("a large frame that stops arriving is cut at its upload deadline", async () => {
    // 192 KiB: 500 ms grace + 3 s at 64 KiB/s.
    const { socket } = await unfinishedFrame(ts, 192 * 1024, 500);
    const started = Date.now();
    assert.ok(await closedWithin(socket, 10_000), "the stalled frame was not cut");
    const waited = Date.now() - started;
    assert.ok(waited > 2_000, `cut after ${waited} ms, before its deadline`);
  });

  it("a poll body sent a byte at a time is cut at its upload deadline (408), not held forever", async () => {
    const s = await tlsConnection(ts);
    let answer = "";
    s.on("data", (d: Buffer) => {
      answer += d.toString("latin1");
    });
    const body = wrap({ messages: [outMessage("TestService", "Slow")] });
    s.write(`POST /message HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${body.length}\r\n\r\n`);
    const dribble = setInterval(() => {
      if (!s.destroyed) s.write(body.subarray(0, 1));
    }, 200);
    try {
      // 500 ms grace + 1 s for up to 64 KiB.
      assert.ok(await closedWithin(s, 5000), "the slow poll was not cut");
      assert.match(answer, /^HTTP\/1\.1 408 [\s\S]*request body not received within 1500 ms/);
    } finally {
      clearInterval(dribble);
    }
  });
});

describe("abuse: a flood of tiny frames", { timeout: 30_000 }, () => {
  let ts: TestServer;
  before(async () => {
    ts = await startAbuseServer({ maxStreamFramesPerSecond: 50 });
  });
  after(() => ts?.stop());

  it("a stream is processed at most max_stream_frames_per_second, however fast it sends; others are served", async () => {
    const s = await tlsConnection(ts);
    let acks = 0;
    let pending: Buffer = Buffer.alloc(0);
    let inBody = false;
    s.on("data", (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      if (!inBody) {
        const head = pending.indexOf("\r\n\r\n");
        if (head < 0) return;
        pending = pending.subarray(head + 4);
        inBody = true;
      }
      // Each chunk the server writes holds one response frame.
      const { frames, rest } = completeChunks(pending);
      acks += frames;
      pending = rest;
    });
    s.write(CHUNKED_STREAM_HEAD);
    s.write(chunk(Buffer.concat([MAGIC_BYTES, encodeUvarint(0)])));
    // Every 0x00 byte is a frame: an empty WrappedContactData, each owed an acknowledgement.
    const { result: sent } = await servedThroughout(ts, uploadAsFarAsAllowed(s, 64 * MiB, 0, 2000), 100);
    await new Promise((r) => setTimeout(r, 200));
    // 2 s at 50 frames/s plus a burst of 50 (and frame 0): about 150 processed of the millions sent.
    assert.ok(sent > 100_000, `only ${sent} bytes could be sent`);
    assert.ok(acks > 20 && acks < 400, `${acks} frames were acknowledged`);
    s.destroy();
  });
});

/** Counts the complete chunks at the start of a chunked HTTP body; returns what follows them. */
function completeChunks(data: Buffer): { frames: number; rest: Buffer } {
  let frames = 0;
  let i = 0;
  for (;;) {
    const eol = data.indexOf("\r\n", i);
    if (eol < 0) break;
    const size = Number.parseInt(data.subarray(i, eol).toString("latin1"), 16);
    if (!Number.isFinite(size) || eol + 2 + size + 2 > data.length) break;
    frames++;
    i = eol + 2 + size + 2;
  }
  return { frames, rest: data.subarray(i) };
}
