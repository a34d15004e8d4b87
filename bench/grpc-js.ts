// @grpc/grpc-js in place of the project's own gRPC code, for the A/B of bench/admin.ts
// (`--grpc grpc-js`): the same AdminService (a connect ServiceImpl) served by a grpc-js Server, and
// the GRPC service's Processor calls made by a grpc-js Client. Messages are (de)serialized with
// the generated protobuf-es schemas, as our own server does, so the difference measured is the
// gRPC stack's.
import { createContextValues, Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { create, type DescMethod, type DescService, fromBinary, isMessage, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { GrpcUnaryClientOptions, UnaryCaller } from "../src/server/services/grpc-unary-client.js";

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const ce = ConnectError.from(err);
  return { code: ce.code as number as grpc.status, details: ce.rawMessage };
}

function context(service: DescService, method: DescMethod, call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, signal: AbortSignal): HandlerContext {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  const requestHeader = new Headers();
  for (const [k, v] of Object.entries(call.metadata.getMap())) {
    if (typeof v === "string") requestHeader.set(k, v);
  }
  return {
    method,
    service,
    signal,
    requestMethod: "POST",
    protocolName: "grpc",
    url: `/${service.typeName}/${method.name}`,
    values: createContextValues(),
    requestHeader,
    responseHeader: new Headers(),
    responseTrailer: new Headers(),
    timeoutMs: () => (Number.isFinite(deadlineMs) ? deadlineMs - Date.now() : undefined),
  };
}

/** Starts a grpc-js server for `service` on 127.0.0.1:0; resolves with its address and a close(). */
export async function startGrpcJsServer<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
  maxReceiveBytes: number,
): Promise<{ address: string; close(): Promise<void> }> {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const fn = (impl as Record<string, unknown>)[method.localName];
    if (typeof fn !== "function") continue;
    const run = (fn as AnyImpl).bind(impl);
    const streaming = method.methodKind === "server_streaming";
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: streaming,
      requestSerialize: (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: unknown) =>
        Buffer.from(toBinary(method.output, isMessage(m, method.output) ? m : create(method.output, m as never))),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
      originalName: method.localName,
    };
    if (!streaming) {
      handlers[method.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const abort = new AbortController();
        call.once("cancelled", () => abort.abort(new ConnectError("the caller went away", Code.Canceled)));
        Promise.resolve()
          .then(() => run(call.request, context(service, method, call, abort.signal)))
          .then(
            (out) => callback(null, out),
            (err: unknown) => callback(toServiceError(err)),
          );
      };
    } else {
      handlers[method.localName] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const abort = new AbortController();
        call.once("cancelled", () => abort.abort(new ConnectError("the caller went away", Code.Canceled)));
        void (async () => {
          try {
            for await (const item of run(call.request, context(service, method, call, abort.signal)) as AsyncIterable<unknown>) {
              if (abort.signal.aborted) return;
              if (!call.write(item)) await new Promise((r) => call.once("drain", r));
            }
            call.end();
          } catch (err) {
            call.emit("error", toServiceError(err));
          }
        })();
      };
    }
  }
  const server = new grpc.Server({ "grpc.max_receive_message_length": maxReceiveBytes });
  server.addService(definition, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => server.forceShutdown(), 5000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}

const identity = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.length));

/** A UnaryCaller (what the GRPC service forwards with) made of a grpc-js Client. */
export function grpcJsUnaryClient(opts: GrpcUnaryClientOptions): UnaryCaller {
  const url = new URL(opts.baseUrl);
  const tls = opts.tls;
  const credentials =
    url.protocol === "https:"
      ? grpc.credentials.createSsl(
          tls?.ca ? Buffer.from(tls.ca as Buffer) : null,
          tls?.key ? Buffer.from(tls.key as Buffer) : null,
          tls?.cert ? Buffer.from(tls.cert as Buffer) : null,
        )
      : grpc.credentials.createInsecure();
  const client = new grpc.Client(url.host, credentials);
  return {
    call(path, request, signal) {
      return new Promise<Uint8Array>((resolve, reject) => {
        const call = client.makeUnaryRequest(path, identity, identity, request, new grpc.Metadata(), {}, (err, res) => {
          signal.removeEventListener("abort", onAbort);
          if (err) reject(new ConnectError(err.details, err.code as number as Code, undefined, undefined, err));
          else resolve(res!);
        });
        const onAbort = () => call.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
    close: () => client.close(),
  };
}
