// gRPC edge cases against the admin server (src/server/admin/grpc-server.ts behind
// startAdminServer), spoken by independent peers: @grpc/grpc-js, Python grpcio, and raw HTTP/2 for
// what no well-behaved client sends. Deadlines, cancellation, compression, sizes at and over the
// limit, many streams on one connection, callers that vanish, malformed frames.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as http2 from "node:http2";
import * as net from "node:net";
import { describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { createLogger } from "../../../src/common/log.js";
import { ListClientsRequestSchema } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { ADMIN_MAX_RECEIVE_BYTES, type AdminServer, startAdminServer } from "../../../src/server/admin/admin-server.js";
import { grpc, grpcJsClient, serverStream, statusOf, unary } from "../../support/grpc-js-peer.js";
import { runPythonScript } from "../../support/python-grpc.js";
import { startAdminHarness } from "./harness.js";

const logger = createLogger("grpc-edge-test");
const MAX = ADMIN_MAX_RECEIVE_BYTES;

/**
 * An Admin implementation whose calls can be held: KeepAlive waits until its call is cancelled
 * (counting the calls running and what ended them); ListClients echoes one client per id asked
 * for (none above 1000) and records how many were asked for; StreamClientIds streams forever.
 */
class Probe {
  running = 0;
  started = 0;
  readonly endings: unknown[] = [];
  lastListSize = -1;
  streamsRunning = 0;
  #onStart: (() => void) | undefined;

  readonly impl: Partial<ServiceImpl<typeof Admin>>;

  constructor() {
    const probe = this;
    this.impl = {
      keepAlive: (_req, ctx) => {
        this.running++;
        this.started++;
        this.#onStart?.();
        return new Promise((_resolve, reject) => {
          ctx.signal.addEventListener("abort", () => {
            this.running--;
            this.endings.push(ctx.signal.reason);
            reject(ctx.signal.reason);
          });
        });
      },
      listClients: (req) => {
        this.lastListSize = req.clientIds.length;
        return { clients: req.clientIds.length > 1000 ? [] : req.clientIds.map((clientId) => ({ clientId })) };
      },
      streamClientIds: async function* () {
        probe.streamsRunning++;
        try {
          for (let i = 0; ; i++) yield { clientId: new Uint8Array(8).fill(i % 256) };
        } finally {
          probe.streamsRunning--;
        }
      },
    };
  }

  /** Resolves once `n` KeepAlive calls have started in all. */
  startedCalls(n: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.started >= n) resolve();
      };
      this.#onStart = check;
      check();
    });
  }
}

async function withServer(
  body: (server: AdminServer, probe: Probe) => Promise<void>,
  opts: { keepAliveIdleMs?: number } = {},
): Promise<void> {
  const probe = new Probe();
  const server = await startAdminServer({ listenAddress: "127.0.0.1:0", service: probe.impl, logger, ...opts });
  try {
    await body(server, probe);
  } finally {
    await server.close();
  }
}

/** Waits (bounded) until `cond` holds; the bound is a hang guard, not a timing assertion. */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`never happened: ${what}`);
}

interface RawAnswer {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
  rstCode: number | undefined;
}

/** One raw HTTP/2 request on `session`; `send` writes the body (default: `body`, then end). */
function rawCall(
  session: http2.ClientHttp2Session,
  method: string,
  body: Buffer | undefined,
  extra: http2.OutgoingHttpHeaders = {},
  send?: (req: http2.ClientHttp2Stream) => void,
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const req = session.request({
      ":method": "POST",
      ":path": `/fleetspeak.server.Admin/${method}`,
      "content-type": "application/grpc",
      te: "trailers",
      ...extra,
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      headers = h;
    });
    req.on("trailers", (t) => {
      trailers = t;
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => {});
    req.on("close", () => resolve({ headers, trailers, body: Buffer.concat(chunks), rstCode: req.rstCode }));
    if (send) send(req);
    else req.end(body);
  });
}

/** An HTTP/2 session over a TCP socket the test holds, so that it can destroy it as a crash would. */
async function connectOwnSocket(address: string): Promise<{ session: http2.ClientHttp2Session; socket: net.Socket }> {
  const i = address.lastIndexOf(":");
  const socket = net.connect(Number(address.slice(i + 1)), address.slice(0, i));
  await new Promise((r) => socket.once("connect", r));
  const session = http2.connect(`http://${address}`, { createConnection: () => socket });
  session.on("error", () => {});
  return { session, socket };
}

const statusIn = (a: RawAnswer) => a.trailers["grpc-status"] ?? a.headers["grpc-status"];
const messageIn = (a: RawAnswer) => decodeURIComponent(String(a.trailers["grpc-message"] ?? a.headers["grpc-message"]));

function framed(payload: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out[0] = flags;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

const listRequest = (n: number) => toBinary(ListClientsRequestSchema, create(ListClientsRequestSchema, { clientIds: Array.from({ length: n }, (_, i) => new Uint8Array(8).fill(i % 256)) }));

describe("admin gRPC server: deadlines", () => {
  it("ends a call with DEADLINE_EXCEEDED when its grpc-timeout passes, and tells the implementation", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address);
      try {
        const { response } = unary(client, Admin.method.keepAlive, {}, { timeoutMs: 200 });
        const st = await statusOf(response);
        assert.equal(st.code, grpc.status.DEADLINE_EXCEEDED, st.details);
        await eventually(() => probe.running === 0, "the implementation's signal aborted");
        assert.equal(ConnectError.from(probe.endings[0]).code, Code.DeadlineExceeded);
        // A deadline that does not pass changes nothing.
        const ok = await unary(client, Admin.method.listClients, { clientIds: [new Uint8Array(8)] }, { timeoutMs: 30_000 }).response;
        assert.equal(ok.clients.length, 1);
      } finally {
        client.close();
      }
    });
  });

  it("answers DEADLINE_EXCEEDED itself when the caller's deadline passes while its request is still arriving", async () => {
    await withServer(async (s, probe) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        // The prefix announces 100 bytes; 10 arrive and the stream is never ended.
        const a = await rawCall(session, "ListClients", undefined, { "grpc-timeout": "100m" }, (req) =>
          req.write(Buffer.concat([Buffer.from([0, 0, 0, 0, 100]), Buffer.alloc(10)])),
        );
        assert.equal(statusIn(a), String(Code.DeadlineExceeded));
        assert.equal(probe.lastListSize, -1, "the implementation never ran");
      } finally {
        session.close();
      }
    });
  });

  it("stops a server stream at its deadline and ends the producer", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address);
      try {
        const stream = serverStream(client, Admin.method.streamClientIds, {}, { timeoutMs: 300 });
        let got = 0;
        stream.on("data", () => {
          got++;
          // A slow reader: flow control holds the producer back.
          if (got % 100 === 0) {
            stream.pause();
            setTimeout(() => stream.resume(), 20);
          }
        });
        const code = await new Promise<grpc.status>((resolve) => stream.on("error", (e: grpc.ServiceError) => resolve(e.code)));
        assert.equal(code, grpc.status.DEADLINE_EXCEEDED);
        assert.ok(got > 0);
        await eventually(() => probe.streamsRunning === 0, "the stream's producer ended");
      } finally {
        client.close();
      }
    });
  });

  it("refuses a malformed grpc-timeout with INVALID_ARGUMENT", async () => {
    await withServer(async (s) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        const a = await rawCall(session, "ListClients", framed(listRequest(1)), { "grpc-timeout": "soon" });
        assert.equal(statusIn(a), String(Code.InvalidArgument));
        assert.match(messageIn(a), /malformed grpc-timeout "soon"/);
      } finally {
        session.close();
      }
    });
  });
});

describe("admin gRPC server: cancellation", () => {
  it("cancels the implementation when the caller cancels a unary call, and keeps serving the connection", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address);
      try {
        const { call, response } = unary(client, Admin.method.keepAlive, {});
        await probe.startedCalls(1);
        call.cancel();
        assert.equal((await statusOf(response)).code, grpc.status.CANCELLED);
        await eventually(() => probe.running === 0, "the implementation saw the cancellation");
        assert.equal(ConnectError.from(probe.endings[0]).code, Code.Canceled);
        const ok = await unary(client, Admin.method.listClients, { clientIds: [new Uint8Array(8)] }).response;
        assert.equal(ok.clients.length, 1);
      } finally {
        client.close();
      }
    });
  });

  it("ends a server stream's producer when the caller cancels it", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address);
      try {
        const stream = serverStream(client, Admin.method.streamClientIds, {});
        let got = 0;
        const code = await new Promise<grpc.status>((resolve) => {
          stream.on("data", () => {
            if (++got === 500) stream.cancel();
          });
          stream.on("error", (e: grpc.ServiceError) => resolve(e.code));
        });
        assert.equal(code, grpc.status.CANCELLED);
        await eventually(() => probe.streamsRunning === 0, "the stream's producer ended");
      } finally {
        client.close();
      }
    });
  });

  it("survives a caller that resets its stream halfway through the request", async () => {
    await withServer(async (s, probe) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        const a = await rawCall(session, "ListClients", undefined, {}, (req) => {
          req.write(Buffer.concat([Buffer.from([0, 0, 0, 1, 0]), Buffer.alloc(50)]));
          setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 50);
        });
        assert.equal(a.rstCode, http2.constants.NGHTTP2_CANCEL);
        assert.equal(probe.lastListSize, -1, "the implementation never ran");
        const b = await rawCall(session, "ListClients", framed(listRequest(2)));
        assert.equal(statusIn(b), "0");
        assert.equal(probe.lastListSize, 2);
      } finally {
        session.close();
      }
    });
  });
});

describe("admin gRPC server: callers that vanish", () => {
  it("cancels every running call of a connection whose socket is destroyed, and serves the next caller", async () => {
    await withServer(async (s, probe) => {
      for (let round = 0; round < 3; round++) {
        const { session, socket } = await connectOwnSocket(s.address);
        const before = probe.started;
        const calls = Array.from({ length: 20 }, () => rawCall(session, "KeepAlive", framed(new Uint8Array(0))));
        const stream = rawCall(session, "StreamClientIds", framed(new Uint8Array(0)));
        await probe.startedCalls(before + 20);
        await eventually(() => probe.streamsRunning === 1, "the stream started");
        socket.destroy();
        await Promise.all([...calls, stream]);
        await eventually(() => probe.running === 0, "every held call was cancelled");
        await eventually(() => probe.streamsRunning === 0, "the stream's producer ended");
      }
      assert.ok(probe.endings.every((e) => ConnectError.from(e).code === Code.Canceled));
      const client = grpcJsClient(s.address);
      try {
        const ok = await unary(client, Admin.method.listClients, { clientIds: [new Uint8Array(8)] }).response;
        assert.equal(ok.clients.length, 1);
      } finally {
        client.close();
      }
    });
  });

  it("survives a socket destroyed in the middle of a request body", async () => {
    await withServer(async (s, probe) => {
      const { session, socket } = await connectOwnSocket(s.address);
      const a = rawCall(session, "ListClients", undefined, {}, (req) => {
        req.write(Buffer.concat([Buffer.from([0, 0, 1, 0, 0]), Buffer.alloc(1000)]));
        setTimeout(() => socket.destroy(), 50);
      });
      await a;
      assert.equal(probe.lastListSize, -1);
      const other = http2.connect(`http://${s.address}`);
      try {
        assert.equal(statusIn(await rawCall(other, "ListClients", framed(listRequest(3)))), "0");
        assert.equal(probe.lastListSize, 3);
      } finally {
        other.close();
      }
    });
  });
});

describe("admin gRPC server: compression", () => {
  it("takes a gzip-compressed request and answers gzip-compressed, which grpc-js reads", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address, { "grpc.default_compression_algorithm": 2 });
      try {
        const ids = Array.from({ length: 200 }, (_, i) => new Uint8Array(8).fill(i));
        const res = await unary(client, Admin.method.listClients, { clientIds: ids }).response;
        assert.equal(probe.lastListSize, 200);
        assert.deepEqual(
          res.clients.map((c) => [...c.clientId]),
          ids.map((id) => [...id]),
        );
      } finally {
        client.close();
      }
      const session = http2.connect(`http://${s.address}`);
      try {
        const a = await rawCall(session, "ListClients", framed(gzipSync(listRequest(5)), 1), { "grpc-encoding": "gzip", "grpc-accept-encoding": "gzip" });
        assert.equal(statusIn(a), "0");
        assert.equal(a.headers["grpc-encoding"], "gzip");
        assert.equal(a.body[0], 1, "the response message is flagged compressed");
      } finally {
        session.close();
      }
    });
  });

  it("refuses an encoding it does not support with UNIMPLEMENTED, naming the ones it does", async () => {
    await withServer(async (s) => {
      const client = grpcJsClient(s.address, { "grpc.default_compression_algorithm": 1 });
      try {
        const st = await statusOf(unary(client, Admin.method.listClients, { clientIds: [new Uint8Array(8)] }).response);
        assert.equal(st.code, grpc.status.UNIMPLEMENTED);
        assert.match(st.details, /grpc-encoding "deflate" is not supported; use identity or gzip/);
      } finally {
        client.close();
      }
    });
  });

  it("refuses a compressed message without grpc-encoding, a corrupt one, and a gzip bomb", async () => {
    await withServer(async (s, probe) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        const noEncoding = await rawCall(session, "ListClients", framed(gzipSync(listRequest(1)), 1));
        assert.equal(statusIn(noEncoding), String(Code.Internal));
        assert.match(messageIn(noEncoding), /compressed message without grpc-encoding/);
        const corrupt = await rawCall(session, "ListClients", framed(Buffer.from("not gzip at all"), 1), { "grpc-encoding": "gzip" });
        assert.equal(statusIn(corrupt), String(Code.InvalidArgument));
        assert.match(messageIn(corrupt), /cannot decompress request/);
        const bomb = gzipSync(Buffer.alloc(MAX + 1024));
        assert.ok(bomb.length < 64 * 1024);
        const big = await rawCall(session, "ListClients", framed(bomb, 1), { "grpc-encoding": "gzip" });
        assert.equal(statusIn(big), String(Code.ResourceExhausted));
        assert.match(messageIn(big), /after decompression larger than max \(4194304\)/);
        assert.equal(probe.lastListSize, -1);
      } finally {
        session.close();
      }
    });
  });
});

describe("admin gRPC server: message sizes", () => {
  it("takes a request just under the limit and refuses one just over it with RESOURCE_EXHAUSTED", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address);
      try {
        // A ListClientsRequest of n ids is 10 n bytes.
        const n = Math.floor(MAX / 10);
        const ids = Array.from({ length: n }, () => new Uint8Array(8));
        const res = await unary(client, Admin.method.listClients, { clientIds: ids }).response;
        assert.equal(res.clients.length, 0);
        assert.equal(probe.lastListSize, n);
        ids.push(new Uint8Array(8));
        const st = await statusOf(unary(client, Admin.method.listClients, { clientIds: ids }).response);
        assert.equal(st.code, grpc.status.RESOURCE_EXHAUSTED);
        assert.equal(st.details, `grpc: received message larger than max (${10 * (n + 1)} vs. ${MAX})`);
        assert.equal(probe.lastListSize, n);
        // The connection is still good.
        assert.equal((await unary(client, Admin.method.listClients, { clientIds: [new Uint8Array(8)] }).response).clients.length, 1);
      } finally {
        client.close();
      }
    });
  });

  it("serves several near-limit requests at once on one connection", async () => {
    await withServer(async (s, probe) => {
      const client = grpcJsClient(s.address);
      try {
        const ids = Array.from({ length: Math.floor(MAX / 10) - 100 }, () => randomBytes(8));
        const results = await Promise.allSettled(
          Array.from({ length: 4 }, () => unary(client, Admin.method.listClients, { clientIds: ids }).response),
        );
        assert.deepEqual(
          results.map((r) => (r.status === "fulfilled" ? "ok" : `${(r.reason as grpc.ServiceError).code} ${(r.reason as grpc.ServiceError).details}`)),
          ["ok", "ok", "ok", "ok"],
        );
        assert.equal(probe.lastListSize, ids.length);
      } finally {
        client.close();
      }
    });
  });

  it("refuses a length prefix over the limit at once, before the body arrives", async () => {
    await withServer(async (s, probe) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        // 0xffffffff bytes announced, a few sent, the stream left open: the answer cannot wait for the rest.
        const a = await rawCall(session, "ListClients", undefined, {}, (req) => req.write(Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])));
        assert.equal(statusIn(a), String(Code.ResourceExhausted));
        assert.equal(messageIn(a), `grpc: received message larger than max (${0xffffffff} vs. ${MAX})`);
        assert.equal(probe.lastListSize, -1);
        assert.equal(statusIn(await rawCall(session, "ListClients", framed(listRequest(1)))), "0");
      } finally {
        session.close();
      }
    });
  });
});

describe("admin gRPC server: many streams on one connection", () => {
  it("serves 500 concurrent InsertMessage calls from one grpc-js channel into the real store", async () => {
    const h = await startAdminHarness("sqlite");
    const client = grpcJsClient(h.server.address);
    try {
      const clientId = randomBytes(8);
      await h.store.addClient(clientId, { key: randomBytes(91), labels: [], blacklisted: false });
      const results = await Promise.allSettled(
        Array.from(
          { length: 500 },
          (_, i) =>
            unary(client, Admin.method.insertMessage, {
              messageId: randomBytes(32),
              source: { serviceName: "GRR" },
              destination: { clientId, serviceName: "GRR" },
              messageType: `m${i}`,
            }).response,
        ),
      );
      const failed = results.filter((r) => r.status === "rejected");
      assert.deepEqual(failed, []);
      assert.equal(await h.store.getPendingMessageCount([clientId]), 500n);
    } finally {
      client.close();
      await h.close();
    }
  });

  it("holds 500 concurrent calls open on one HTTP/2 connection and ends them all at their deadline", async () => {
    await withServer(async (s, probe) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        const answers = await Promise.all(
          Array.from({ length: 500 }, () => rawCall(session, "KeepAlive", framed(new Uint8Array(0)), { "grpc-timeout": "2S" })),
        );
        const statuses = new Set(answers.map(statusIn));
        assert.deepEqual([...statuses], [String(Code.DeadlineExceeded)]);
        assert.equal(probe.started, 500);
        await eventually(() => probe.running === 0, "every call ended");
      } finally {
        session.close();
      }
    });
  });
});

describe("admin gRPC server: malformed frames", () => {
  it("answers each malformed request with INTERNAL and a sentence saying what was wrong", async () => {
    await withServer(async (s, probe) => {
      const session = http2.connect(`http://${s.address}`);
      try {
        const cases: [Buffer, RegExp][] = [
          [Buffer.from([0, 0, 0]), /truncated request: 3 bytes where a 5-byte message prefix was expected/],
          [Buffer.concat([Buffer.from([0, 0, 0, 0, 100]), Buffer.alloc(10)]), /truncated request: the message prefix announces 100 bytes, 10 arrived/],
          [Buffer.concat([framed(listRequest(1)), Buffer.from([0, 0])]), /exactly one request message/],
          [framed(listRequest(1), 0x80), /unexpected payload format 128/],
          [Buffer.alloc(0), /no fleetspeak.server.ListClientsRequest request message was sent/],
        ];
        for (const [body, message] of cases) {
          const a = await rawCall(session, "ListClients", body);
          assert.equal(statusIn(a), String(Code.Internal), String(message));
          assert.match(messageIn(a), message);
        }
        assert.equal(probe.lastListSize, -1);
        assert.equal(statusIn(await rawCall(session, "ListClients", framed(listRequest(1)))), "0");
      } finally {
        session.close();
      }
    });
  });

  it("drops a connection that sends garbage or dies in the middle of a frame, and keeps serving others", async () => {
    await withServer(async (s) => {
      const [host, port] = [s.address.slice(0, s.address.lastIndexOf(":")), Number(s.address.slice(s.address.lastIndexOf(":") + 1))];
      for (const garbage of [
        Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), randomBytes(200)]),
        // A valid preface, then a HEADERS frame whose length runs past what is sent, then FIN (a
        // client that died mid-write).
        Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), Buffer.from([0, 0xff, 0xff, 1, 5, 0, 0, 0, 1, 0x82])]),
      ]) {
        const sock = net.connect(port, host);
        sock.on("error", () => {});
        sock.resume();
        sock.write(garbage);
        sock.end();
        // The server closes its side: the socket closes (after the idle ping, for the last case).
        await new Promise((r) => sock.on("close", r));
      }
      const session = http2.connect(`http://${s.address}`);
      try {
        assert.equal(statusIn(await rawCall(session, "ListClients", framed(listRequest(1)))), "0");
      } finally {
        session.close();
      }
    }, { keepAliveIdleMs: 300 });
  });
});

describe("admin gRPC server from Python grpcio", () => {
  it("honours Python's deadline, takes gzip, refuses deflate and oversized requests", async () => {
    await withServer(async (s) => {
      const report = JSON.parse(await runPythonScript("grpc_edge_client.py", [s.address, String(MAX)])) as Record<
        string,
        { code: string; details?: string; value?: number }
      >;
      assert.equal(report.deadline!.code, "DEADLINE_EXCEEDED");
      assert.deepEqual(report.gzip, { code: "OK", value: 1000 });
      assert.equal(report.deflate!.code, "UNIMPLEMENTED");
      assert.match(String(report.deflate!.details), /grpc-encoding "deflate" is not supported/);
      assert.deepEqual(report.near_max, { code: "OK", value: 0 });
      assert.equal(report.over_max!.code, "RESOURCE_EXHAUSTED");
      assert.match(String(report.over_max!.details), /received message larger than max \(\d+ vs\. 4194304\)/);
      assert.deepEqual(report.after, { code: "OK", value: 3 });
    });
  });
});
