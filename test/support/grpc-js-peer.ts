// @grpc/grpc-js as an independent gRPC peer for tests of our own gRPC code: a client calling any
// unary or server-streaming method of a generated protobuf-es service, and a server for one.
import { create, type DescMessage, type DescMethod, type DescService, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

type Unary<I extends DescMessage, O extends DescMessage> = DescMethod & { methodKind: "unary"; input: I; output: O };
type ServerStreaming<I extends DescMessage, O extends DescMessage> = DescMethod & {
  methodKind: "server_streaming";
  input: I;
  output: O;
};

export interface CallOpts {
  /** Milliseconds from now; sent as grpc-timeout. */
  timeoutMs?: number;
  metadata?: Record<string, string>;
}

function serializer<D extends DescMessage>(schema: D) {
  return (m: MessageShape<D>) => Buffer.from(toBinary(schema, m));
}

function deserializer<D extends DescMessage>(schema: D) {
  return (b: Buffer) => fromBinary(schema, b);
}

function metadataOf(opts: CallOpts): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  return md;
}

function callOptions(opts: CallOpts): grpc.CallOptions {
  return opts.timeoutMs === undefined ? {} : { deadline: Date.now() + opts.timeoutMs };
}

/** A plaintext grpc-js client for 127.0.0.1:port (one HTTP/2 connection). */
export function grpcJsClient(address: string, options: grpc.ChannelOptions = {}): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure(), options);
}

/** A unary call; `call` cancels it. The promise rejects with grpc-js's ServiceError. */
export function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: Unary<I, O>,
  request: MessageInitShape<I>,
  opts: CallOpts = {},
): { call: grpc.ClientUnaryCall; response: Promise<MessageShape<O>> } {
  let call!: grpc.ClientUnaryCall;
  const response = new Promise<MessageShape<O>>((resolve, reject) => {
    call = client.makeUnaryRequest(
      `/${method.parent.typeName}/${method.name}`,
      serializer(method.input),
      deserializer(method.output),
      create(method.input, request),
      metadataOf(opts),
      callOptions(opts),
      (err, res) => (err ? reject(err) : resolve(res!)),
    );
  });
  return { call, response };
}

/** A server-streaming call, read as a Node stream of messages. */
export function serverStream<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: ServerStreaming<I, O>,
  request: MessageInitShape<I>,
  opts: CallOpts = {},
): grpc.ClientReadableStream<MessageShape<O>> {
  return client.makeServerStreamRequest(
    `/${method.parent.typeName}/${method.name}`,
    serializer(method.input),
    deserializer(method.output),
    create(method.input, request),
    metadataOf(opts),
    callOptions(opts),
  );
}

/** Resolves with the gRPC status code a call failed with (and its details); rejects if it succeeded. */
export async function statusOf(p: Promise<unknown>): Promise<{ code: grpc.status; details: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    if (typeof err.code !== "number") throw e;
    return { code: err.code, details: err.details };
  }
  throw new Error("the call succeeded; an error status was expected");
}

export type UnaryHandler<D extends DescMethod> = (
  call: grpc.ServerUnaryCall<MessageShape<D["input"]>, MessageShape<D["output"]>>,
  callback: grpc.sendUnaryData<MessageInitShape<D["output"]>>,
) => void;

/**
 * A grpc-js server on 127.0.0.1:`port` (0: any) serving the unary methods of `service` given in
 * `handlers` (keyed by the method's localName).
 */
export async function startGrpcJsServer(
  service: DescService,
  handlers: Record<string, UnaryHandler<DescMethod>>,
  options: grpc.ServerOptions = {},
  port = 0,
): Promise<{ server: grpc.Server; port: number; address: string }> {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const impl: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler = handlers[method.localName];
    if (!handler) continue;
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
      requestDeserialize: deserializer(method.input),
      responseSerialize: (m: unknown) => Buffer.from(toBinary(method.output, create(method.output, m as never))),
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
    impl[method.localName] = handler as grpc.handleUnaryCall<unknown, unknown>;
  }
  const server = new grpc.Server(options);
  server.addService(definition, impl);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { server, port: bound, address: `127.0.0.1:${bound}` };
}

export { grpc };
