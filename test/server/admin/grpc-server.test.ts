// The admin API's own gRPC server: protocol details beyond what the RPC tests exercise.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger } from "../../../src/common/log.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { type AdminServer, startAdminServer } from "../../../src/server/admin/admin-server.js";

const logger = createLogger("grpc-server-test");

async function withServer(
  service: Parameters<typeof startAdminServer>[0]["service"],
  body: (server: AdminServer) => Promise<void>,
): Promise<void> {
  const server = await startAdminServer({ listenAddress: "127.0.0.1:0", service, logger });
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

/** One raw HTTP/2 request; resolves with the response headers, trailers and body. */
function rawRequest(
  address: string,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer,
): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", reject);
    const req = session.request(headers);
    let h: http2.IncomingHttpHeaders = {};
    let t: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on("response", (x) => {
      h = x;
    });
    req.on("trailers", (x) => {
      t = x;
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", reject);
    req.on("close", () => {
      session.close();
      resolve({ headers: h, trailers: t, body: Buffer.concat(chunks) });
    });
    req.end(body);
  });
}

const grpcHeaders = (method: string, extra: http2.OutgoingHttpHeaders = {}): http2.OutgoingHttpHeaders => ({
  ":method": "POST",
  ":path": `/fleetspeak.server.Admin/${method}`,
  "content-type": "application/grpc",
  te: "trailers",
  ...extra,
});
const EMPTY_FRAME = Buffer.from([0, 0, 0, 0, 0]);

describe("admin gRPC server protocol", () => {
  it("answers a unary call with headers, one message and grpc-status 0 trailers", async () => {
    await withServer({ keepAlive: () => ({}) }, async (s) => {
      const r = await rawRequest(s.address, grpcHeaders("KeepAlive"), EMPTY_FRAME);
      assert.equal(r.headers[":status"], 200);
      assert.equal(r.headers["content-type"], "application/grpc");
      assert.deepEqual([...r.body], [0, 0, 0, 0, 0]);
      assert.equal(r.trailers["grpc-status"], "0");
    });
  });

  it("refuses non-POST and non-gRPC content types at the HTTP level", async () => {
    await withServer({ keepAlive: () => ({}) }, async (s) => {
      const get = await rawRequest(s.address, { ":method": "GET", ":path": "/fleetspeak.server.Admin/KeepAlive" });
      assert.equal(get.headers[":status"], 405);
      const json = await rawRequest(s.address, grpcHeaders("KeepAlive", { "content-type": "application/json" }), Buffer.from("{}"));
      assert.equal(json.headers[":status"], 415);
    });
  });

  it("answers UNIMPLEMENTED for an unknown method and an unsupported grpc-encoding", async () => {
    await withServer({ keepAlive: () => ({}) }, async (s) => {
      const unknown = await rawRequest(s.address, grpcHeaders("Frobnicate"), EMPTY_FRAME);
      assert.equal(unknown.headers["grpc-status"], String(Code.Unimplemented));
      assert.match(String(unknown.headers["grpc-message"]), /unknown method \/fleetspeak.server.Admin\/Frobnicate/);
      const snappy = await rawRequest(s.address, grpcHeaders("KeepAlive", { "grpc-encoding": "snappy" }), EMPTY_FRAME);
      assert.equal(snappy.headers["grpc-status"], String(Code.Unimplemented));
    });
  });

  it("refuses a request that is not one well-formed message", async () => {
    await withServer({ keepAlive: () => ({}), listClients: () => ({}) }, async (s) => {
      const none = await rawRequest(s.address, grpcHeaders("KeepAlive"));
      assert.equal(none.headers["grpc-status"], String(Code.Internal));
      const two = await rawRequest(s.address, grpcHeaders("KeepAlive"), Buffer.concat([EMPTY_FRAME, EMPTY_FRAME]));
      assert.equal(two.headers["grpc-status"], String(Code.Internal));
      const garbage = Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
      const bad = await rawRequest(s.address, grpcHeaders("ListClients"), garbage);
      assert.equal(bad.headers["grpc-status"], String(Code.InvalidArgument));
      assert.match(String(bad.headers["grpc-message"]), /^cannot parse the request as fleetspeak.server.ListClientsRequest/);
    });
  });

  it("accepts gzip-compressed requests", async () => {
    await withServer({ listClients: (req) => ({ clients: req.clientIds.map((clientId) => ({ clientId })) }) }, async (s) => {
      const client = createClient(
        Admin,
        createGrpcTransport({
          baseUrl: `http://${s.address}`,
          sendCompression: compressionGzip,
          compressMinBytes: 1,
        }),
      );
      const ids = Array.from({ length: 50 }, () => new Uint8Array(8).fill(7));
      const res = await client.listClients({ clientIds: ids });
      assert.equal(res.clients.length, 50);
    });
  });

  it("enforces grpc-timeout with DEADLINE_EXCEEDED and tells the implementation through its signal", async () => {
    let aborted: unknown;
    await withServer(
      {
        keepAlive: (_req, ctx) =>
          new Promise((_resolve, reject) => {
            ctx.signal.addEventListener("abort", () => {
              aborted = ctx.signal.reason;
              reject(ctx.signal.reason);
            });
          }),
      },
      async (s) => {
        const r = await rawRequest(s.address, grpcHeaders("KeepAlive", { "grpc-timeout": "50m" }), EMPTY_FRAME);
        assert.equal(r.headers["grpc-status"], String(Code.DeadlineExceeded));
        assert.ok(aborted instanceof ConnectError);
      },
    );
  });

  it("percent-encodes grpc-message so that any text survives", async () => {
    const text = "naïve 100% ✓ failure\nsecond line";
    await withServer(
      {
        keepAlive: () => {
          throw new ConnectError(text, Code.FailedPrecondition);
        },
      },
      async (s) => {
        const client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${s.address}` }));
        await assert.rejects(client.keepAlive({}), (e: unknown) => {
          const ce = ConnectError.from(e);
          return ce.code === Code.FailedPrecondition && ce.rawMessage === text;
        });
      },
    );
  });

  it("streams with flow control, and stops the producer when the caller cancels", async () => {
    let produced = 0;
    let stopped = false;
    await withServer(
      {
        streamClientIds: async function* () {
          try {
            for (;;) {
              produced++;
              yield { clientId: new Uint8Array(8).fill(produced % 256) };
            }
          } finally {
            stopped = true;
          }
        },
      },
      async (s) => {
        const client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${s.address}` }));
        const cancel = new AbortController();
        let got = 0;
        await assert.rejects(async () => {
          for await (const _ of client.streamClientIds({}, { signal: cancel.signal })) {
            if (++got === 1000) cancel.abort();
          }
        }, (e: unknown) => ConnectError.from(e).code === Code.Canceled);
        while (!stopped) await new Promise((r) => setTimeout(r, 10));
        assert.ok(produced >= 1000);
        assert.ok(produced < 1_000_000, "the producer was held back by flow control");
      },
    );
  });

  it("reports an error raised in the middle of a stream in the trailers", async () => {
    await withServer(
      {
        streamClientIds: async function* () {
          yield { clientId: new Uint8Array(8) };
          throw new ConnectError("database went away", Code.Unavailable);
        },
      },
      async (s) => {
        const client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${s.address}` }));
        let got = 0;
        await assert.rejects(
          (async () => {
            for await (const _ of client.streamClientIds({})) got++;
          })(),
          (e: unknown) => ConnectError.from(e).code === Code.Unavailable,
        );
        assert.equal(got, 1);
      },
    );
  });
});
