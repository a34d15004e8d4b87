// gRPC edge cases for the Processor client (src/server/services/grpc-unary-client.ts), against a
// @grpc/grpc-js Processor and, for answers no real server gives, a raw HTTP/2 server.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as http2 from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { Processor } from "../../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { GrpcUnaryClient } from "../../../src/server/services/grpc-unary-client.js";
import { grpc, startGrpcJsServer, type UnaryHandler } from "../../support/grpc-js-peer.js";

const PATH = "/fleetspeak.grpcservice.Processor/Process";
const MAX = 4 * 1024 * 1024;
const request = (bytes = 16) => toBinary(MessageSchema, create(MessageSchema, { messageType: "t", data: { typeUrl: "x", value: randomBytes(bytes) } }));
const never = () => new AbortController().signal;

async function withProcessor(
  handler: UnaryHandler<typeof Processor.method.process>,
  body: (client: GrpcUnaryClient) => Promise<void>,
  options: grpc.ServerOptions = {},
): Promise<void> {
  const { server, address } = await startGrpcJsServer(Processor, { process: handler as UnaryHandler<never> }, options);
  const client = new GrpcUnaryClient({ baseUrl: `http://${address}` });
  try {
    await body(client);
  } finally {
    client.close();
    server.forceShutdown();
  }
}

/** A raw HTTP/2 server answering each request with `answer`; resolves with its base URL. */
async function withRawServer(
  answer: (stream: http2.ServerHttp2Stream, n: number, sockets: Socket[]) => void,
  body: (client: GrpcUnaryClient) => Promise<void>,
): Promise<void> {
  const server = http2.createServer();
  const sockets: Socket[] = [];
  server.on("connection", (socket: Socket) => sockets.push(socket));
  let n = 0;
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    stream.resume();
    stream.on("end", () => answer(stream, n++, sockets));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const client = new GrpcUnaryClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  try {
    await body(client);
  } finally {
    client.close();
    await new Promise((r) => server.close(r));
  }
}

async function failure(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("the call succeeded; a failure was expected");
}

function respondGrpc(stream: http2.ServerHttp2Stream, body: Buffer, trailers: http2.OutgoingHttpHeaders = { "grpc-status": "0" }, headers: http2.OutgoingHttpHeaders = {}) {
  stream.respond({ ":status": 200, "content-type": "application/grpc", ...headers }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers(trailers));
  stream.end(body);
}

describe("Processor client against grpc-js", () => {
  it("delivers the message and passes the Processor's status and text on", async () => {
    const seen: string[] = [];
    await withProcessor(
      (call, cb) => {
        seen.push(call.request.messageType);
        if (call.request.messageType === "bad") cb({ code: grpc.status.INVALID_ARGUMENT, details: "naïve 100% ✓ refusal" });
        else cb(null, {});
      },
      async (client) => {
        await client.call(PATH, request(), never());
        const bad = toBinary(MessageSchema, create(MessageSchema, { messageType: "bad" }));
        const e = await failure(client.call(PATH, bad, never()));
        assert.equal(e.code, Code.InvalidArgument);
        assert.equal(e.rawMessage, "naïve 100% ✓ refusal");
        assert.deepEqual(seen, ["t", "bad"]);
      },
    );
  });

  it("cancels a call when its signal aborts (the Processor sees it), and reports a budget timeout as DEADLINE_EXCEEDED", async () => {
    let cancelled = 0;
    let started = 0;
    await withProcessor(
      (call, cb) => {
        started++;
        if (call.request.messageType === "quick") return cb(null, {});
        call.on("cancelled", () => cancelled++);
      },
      async (client) => {
        const abort = new AbortController();
        const p = client.call(PATH, request(), abort.signal);
        while (started < 1) await new Promise((r) => setTimeout(r, 10));
        abort.abort(new Error("stopping"));
        assert.equal((await failure(p)).code, Code.Canceled);
        const timedOut = await failure(client.call(PATH, request(), AbortSignal.timeout(200)));
        assert.equal(timedOut.code, Code.DeadlineExceeded);
        for (let i = 0; i < 100 && cancelled < 2; i++) await new Promise((r) => setTimeout(r, 20));
        assert.equal(cancelled, 2);
        const quick = toBinary(MessageSchema, create(MessageSchema, { messageType: "quick" }));
        await client.call(PATH, quick, never());
      },
    );
  });

  it("sends a request near the limit, and reports the Processor's RESOURCE_EXHAUSTED for one over it", async () => {
    let largest = 0;
    await withProcessor(
      (call, cb) => {
        largest = Math.max(largest, call.request.data?.value.length ?? 0);
        cb(null, {});
      },
      async (client) => {
        await client.call(PATH, request(MAX - 1024), never());
        assert.equal(largest, MAX - 1024);
        const e = await failure(client.call(PATH, request(MAX + 1024), never()));
        assert.equal(e.code, Code.ResourceExhausted);
        assert.match(e.rawMessage, /larger than max/);
        await client.call(PATH, request(), never());
      },
    );
  });

  it("runs 500 concurrent calls on one connection", async () => {
    const peers = new Set<string>();
    await withProcessor(
      (call, cb) => {
        peers.add(call.getPeer());
        setTimeout(() => cb(null, {}), 20);
      },
      async (client) => {
        const results = await Promise.allSettled(Array.from({ length: 500 }, () => client.call(PATH, request(), never())));
        assert.deepEqual(
          results.filter((r) => r.status === "rejected"),
          [],
        );
        assert.equal(peers.size, 1, "one connection");
      },
    );
  });
});

describe("Processor client against a broken server", () => {
  it("reports a server that vanishes mid-call as UNAVAILABLE and reconnects for the next call", async () => {
    await withRawServer(
      (stream, n, sockets) => {
        // The server's host dies: its end of the connection is gone without a word.
        if (n === 0) for (const socket of sockets) socket.destroy();
        else respondGrpc(stream, Buffer.from([0, 0, 0, 0, 0]));
      },
      async (client) => {
        const e = await failure(client.call(PATH, request(), never()));
        assert.equal(e.code, Code.Unavailable, e.message);
        const answer = await client.call(PATH, request(), never());
        assert.equal(answer.length, 0);
      },
    );
  });

  it("reports a server that vanishes in the middle of its answer as UNAVAILABLE (worth retrying)", async () => {
    await withRawServer(
      (stream, _n, sockets) => {
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        stream.write(Buffer.from([0, 0, 0, 0, 10, 1, 2]), () =>
          setTimeout(() => {
            for (const s of sockets) s.destroy();
          }, 20),
        );
      },
      async (client) => {
        const e = await failure(client.call(PATH, request(), never()));
        assert.equal(e.code, Code.Unavailable, e.message);
      },
    );
  });

  it("refuses an answer over the size limit with RESOURCE_EXHAUSTED, before reading it all", async () => {
    await withRawServer(
      (stream) => {
        const head = Buffer.from([0, 0, 0, 0, 0]);
        head.writeUInt32BE(MAX + 100, 1);
        respondGrpc(stream, Buffer.concat([head, Buffer.alloc(MAX + 100)]));
      },
      async (client) => {
        const e = await failure(client.call(PATH, request(), never()));
        assert.equal(e.code, Code.ResourceExhausted);
        assert.equal(e.rawMessage, `grpc: received message larger than max (${MAX + 100} vs. ${MAX})`);
      },
    );
  });

  it("reads a gzip-compressed answer, and refuses one that inflates past the limit", async () => {
    const gz = (b: Buffer) => {
      const z = gzipSync(b);
      const head = Buffer.from([1, 0, 0, 0, 0]);
      head.writeUInt32BE(z.length, 1);
      return Buffer.concat([head, z]);
    };
    await withRawServer(
      (stream, n) =>
        respondGrpc(stream, gz(n === 0 ? Buffer.from("answer") : Buffer.alloc(MAX + 1)), { "grpc-status": "0" }, { "grpc-encoding": "gzip" }),
      async (client) => {
        assert.equal(Buffer.from(await client.call(PATH, request(), never())).toString(), "answer");
        const e = await failure(client.call(PATH, request(), never()));
        assert.equal(e.code, Code.ResourceExhausted);
        assert.match(e.rawMessage, /after decompression larger than max/);
      },
    );
  });

  it("reports each malformed answer as INTERNAL with what was wrong, and keeps working", async () => {
    const answers: [(s: http2.ServerHttp2Stream) => void, RegExp][] = [
      [(s) => respondGrpc(s, Buffer.from([0, 0, 0])), /truncated response: 3 bytes/],
      [(s) => respondGrpc(s, Buffer.concat([Buffer.from([0, 0, 0, 0, 50]), Buffer.alloc(10)])), /announces 50 bytes, 10 arrived/],
      [(s) => respondGrpc(s, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), /more than one response message/],
      [(s) => respondGrpc(s, Buffer.from([4, 0, 0, 0, 0])), /unexpected payload format 4/],
      [(s) => respondGrpc(s, Buffer.from([1, 0, 0, 0, 2, 1, 2]), { "grpc-status": "0" }, { "grpc-encoding": "br" }), /compressed response with grpc-encoding br/],
      [(s) => respondGrpc(s, Buffer.from([1, 0, 0, 0, 2, 1, 2]), { "grpc-status": "0" }, { "grpc-encoding": "gzip" }), /cannot decompress the response/],
      [(s) => respondGrpc(s, Buffer.from([0, 0, 0, 0, 0]), {}), /without a grpc-status/],
      [(s) => respondGrpc(s, Buffer.from([0, 0, 0, 0, 0]), { "grpc-status": "0" }, { "content-type": "text/html" }), /content-type text\/html, not application\/grpc/],
    ];
    await withRawServer(
      (stream, n) => answers[n]![0](stream),
      async (client) => {
        for (const [, message] of answers) {
          const e = await failure(client.call(PATH, request(), never()));
          assert.equal(e.code, Code.Internal, String(message));
          assert.match(e.rawMessage, message);
        }
      },
    );
  });

  it("maps a non-gRPC HTTP error to the code grpc-go gives it", async () => {
    await withRawServer(
      (stream) => stream.respond({ ":status": 503 }, { endStream: true }),
      async (client) => {
        const e = await failure(client.call(PATH, request(), never()));
        assert.equal(e.code, Code.Unavailable);
        assert.match(e.rawMessage, /HTTP 503/);
      },
    );
  });
});

// The request the Processor got is the message sent, decoded by grpc-js's stack and encoded again.
describe("Processor client framing", () => {
  it("sends the serialized message unchanged", async () => {
    const msg = create(MessageSchema, { messageType: "check", data: { typeUrl: "u", value: randomBytes(100) } });
    let got: Uint8Array | undefined;
    await withProcessor(
      (call, cb) => {
        got = toBinary(MessageSchema, call.request);
        cb(null, {});
      },
      async (client) => {
        await client.call(PATH, toBinary(MessageSchema, msg), never());
      },
    );
    assert.deepEqual(Buffer.from(got!), Buffer.from(toBinary(MessageSchema, msg)));
  });
});
