// A real fleetspeak.grpcservice.Processor gRPC server (connect-node, h2c) for tests and benchmarks:
// it records what it receives and answers as the test's `handle` decides (return = OK, throw a
// ConnectError = that status).
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { EmptyMessageSchema, type Message } from "../../src/gen/fleetspeak/common_pb.js";
import { Processor } from "../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { freePort } from "./haproxy.js";

export interface TestProcessor {
  /** "127.0.0.1:<port>", usable as a grpcservice.Config target. */
  readonly address: string;
  readonly port: number;
  /** Every call, in arrival order, including the ones answered with an error. */
  readonly calls: Message[];
  /** Messages answered OK. */
  readonly processed: Message[];
  /** Resolves once `n` messages have been answered OK. */
  waitProcessed(n: number): Promise<void>;
  close(): Promise<void>;
}

export async function startProcessor(
  opts: {
    port?: number;
    handle?: (msg: Message, callIndex: number) => void | Promise<void>;
    /** Serve TLS with this certificate (chain) and key instead of h2c. */
    tls?: { certPem: string; keyPem: string };
  } = {},
): Promise<TestProcessor> {
  const calls: Message[] = [];
  const processed: Message[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const handler = connectNodeAdapter({
    grpc: true,
    grpcWeb: false,
    connect: false,
    routes: (router) =>
      router.service(Processor, {
        async process(msg) {
          const index = calls.push(msg) - 1;
          await opts.handle?.(msg, index);
          processed.push(msg);
          for (const w of waiters.filter((w) => processed.length >= w.n)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve();
          }
          return create(EmptyMessageSchema);
        },
      }),
  });
  const server = opts.tls
    ? http2.createSecureServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, handler)
    : http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    port,
    calls,
    processed,
    waitProcessed(n) {
      if (processed.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.destroy();
      });
    },
  };
}

/** A port that was free a moment ago: for a Processor that must be down first and come up later. */
export function reservePort(): Promise<number> {
  return freePort();
}
