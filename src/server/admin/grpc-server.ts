// A small gRPC server (HTTP/2 framing as in grpc/doc/PROTOCOL-HTTP2.md) for one service whose
// methods are unary or server-streaming: the admin API. connect-node's adapter serves the same
// protocol but spends several times more CPU per call (measured by bench/admin.ts: ~400 µs against
// ~50 µs for the HTTP/2 exchange itself), which capped one admin process well below the
// InsertMessage rate GRR deployments need. Implementations are connect's ServiceImpl, so the
// service code does not depend on which server runs it.
import { createContextValues, Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  isMessage,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as http2 from "node:http2";
import { promisify } from "node:util";
import { gunzip, gzip } from "node:zlib";
import type { Logger } from "../../common/log.js";

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH } = http2.constants;
const GRPC_CONTENT_TYPE = /^application\/grpc(\+proto)?(;|$)/;
/** How long after answering a request that is still uploading its stream is reset. */
const ABANDONED_UPLOAD_RESET_MS = 1000;
const gunzipAsync = promisify(gunzip);
const gzipAsync = promisify(gzip);
const TIMEOUT_UNITS_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

interface Route {
  service: DescService;
  method: DescMethod & { methodKind: "unary" | "server_streaming" };
  impl: AnyImpl;
}

export interface GrpcHandlerOptions {
  /** Largest request message; larger ones are refused with RESOURCE_EXHAUSTED. */
  maxReceiveBytes: number;
  logger: Logger;
}

export interface GrpcHandler {
  /** The HTTP/2 server's 'stream' listener. */
  onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void;
  /** Resets at once the streams whose upload was refused (so that the server can close). */
  resetAbandoned(): void;
}

/** Serves `service` with `impl` on the streams of an HTTP/2 server. */
export function createGrpcHandler<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
  opts: GrpcHandlerOptions,
): GrpcHandler {
  const routes = new Map<string, Route>();
  const abandoned = new Abandoned();
  for (const method of service.methods) {
    const fn = (impl as Record<string, unknown>)[method.localName];
    if (typeof fn !== "function") continue;
    if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
      throw new Error(`${service.typeName}.${method.name}: ${method.methodKind} methods are not supported`);
    }
    routes.set(`/${service.typeName}/${method.name}`, {
      service,
      method: method as Route["method"],
      impl: (fn as AnyImpl).bind(impl),
    });
  }
  return {
    onStream(stream, headers) {
      stream.on("error", (err) => opts.logger.debug({ err: err.message }, "gRPC stream error"));
      if (headers[HTTP2_HEADER_METHOD] !== "POST") {
        stream.respond({ [HTTP2_HEADER_STATUS]: 405 }, { endStream: true });
        abandoned.add(stream);
        return;
      }
      const contentType = headers[HTTP2_HEADER_CONTENT_TYPE];
      if (typeof contentType !== "string" || !GRPC_CONTENT_TYPE.test(contentType)) {
        stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
        abandoned.add(stream);
        return;
      }
      new Call(stream, headers, routes, opts, abandoned).start();
    },
    resetAbandoned: () => abandoned.resetAll(),
  };
}

class Call {
  readonly #stream: http2.ServerHttp2Stream;
  readonly #headers: http2.IncomingHttpHeaders;
  readonly #route: Route | undefined;
  readonly #opts: GrpcHandlerOptions;
  readonly #abandoned: Abandoned;
  readonly #abort = new AbortController();
  #answered = false;
  #headersSent = false;
  #timer: NodeJS.Timeout | undefined;
  #context: CallContext | undefined;
  #gzipResponses = false;

  constructor(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    routes: Map<string, Route>,
    opts: GrpcHandlerOptions,
    abandoned: Abandoned,
  ) {
    this.#abandoned = abandoned;
    this.#stream = stream;
    this.#headers = headers;
    this.#route = routes.get(String(headers[HTTP2_HEADER_PATH]));
    this.#opts = opts;
  }

  start(): void {
    const stream = this.#stream;
    const route = this.#route;
    if (!route) {
      this.#fail(new ConnectError(`unknown method ${String(this.#headers[HTTP2_HEADER_PATH])}`, Code.Unimplemented));
      return;
    }
    const encoding = this.#headers["grpc-encoding"] ?? "identity";
    if (encoding !== "identity" && encoding !== "gzip") {
      this.#fail(new ConnectError(`grpc-encoding ${JSON.stringify(encoding)} is not supported; use identity or gzip`, Code.Unimplemented));
      return;
    }
    this.#gzipResponses = encoding === "gzip";
    let timeoutMs: number | undefined;
    const timeout = this.#headers["grpc-timeout"];
    if (typeof timeout === "string") {
      const m = /^(\d{1,8})([HMSmun])$/.exec(timeout);
      if (!m) {
        this.#fail(new ConnectError(`malformed grpc-timeout ${JSON.stringify(timeout)}`, Code.InvalidArgument));
        return;
      }
      timeoutMs = Number(m[1]) * TIMEOUT_UNITS_MS[m[2]!]!;
      this.#timer = setTimeout(() => {
        const err = new ConnectError("the caller's deadline passed", Code.DeadlineExceeded);
        this.#abort.abort(err);
        this.#fail(err);
      }, timeoutMs);
    }
    stream.once("close", () => {
      clearTimeout(this.#timer);
      // Only a call still running is cancelled (building the reason is not free, and most calls
      // have been answered by the time their stream closes).
      if (!this.#answered && !this.#abort.signal.aborted) {
        this.#abort.abort(new ConnectError("the caller went away", Code.Canceled));
      }
    });
    this.#context = new CallContext(route, this.#abort.signal, this.#headers, timeoutMs);

    const chunks: Buffer[] = [];
    let received = 0;
    let declared = -1;
    const max = this.#opts.maxReceiveBytes;
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      chunks.push(chunk);
      if (declared < 0 && received >= 5) {
        const head = chunks.length === 1 ? chunk : Buffer.concat(chunks);
        declared = head.readUInt32BE(1);
      }
      if (declared > max || received > max + 5) {
        stream.off("data", onData);
        stream.pause();
        this.#fail(
          new ConnectError(
            `grpc: received message larger than max (${Math.max(declared, received - 5)} vs. ${max})`,
            Code.ResourceExhausted,
          ),
        );
      }
    };
    stream.on("data", onData);
    stream.once("end", () => {
      if (this.#answered) return;
      void this.#handle(route, Buffer.concat(chunks), encoding === "gzip");
    });
  }

  async #handle(route: Route, body: Buffer, gzipped: boolean): Promise<void> {
    try {
      const bytes = await this.#requestBytes(body, gzipped, route.method.input.typeName);
      let req: unknown;
      try {
        req = fromBinary(route.method.input, bytes);
      } catch (e) {
        throw new ConnectError(
          `cannot parse the request as ${route.method.input.typeName}: ${(e as Error).message}`,
          Code.InvalidArgument,
        );
      }
      if (route.method.methodKind === "unary") {
        const out = await route.impl(req, this.#context!);
        this.#sendUnary(await this.#frame(toBinary(route.method.output, asMessage(route.method.output, out))));
      } else {
        await this.#sendStream(route.method.output, route.impl(req, this.#context!) as AsyncIterable<unknown>);
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  async #requestBytes(body: Buffer, gzipped: boolean, typeName: string): Promise<Uint8Array> {
    if (body.length === 0) throw new ConnectError(`no ${typeName} request message was sent`, Code.Internal);
    if (body.length < 5) {
      throw new ConnectError(`truncated request: ${body.length} bytes where a 5-byte message prefix was expected`, Code.Internal);
    }
    const flags = body[0]!;
    const length = body.readUInt32BE(1);
    if (flags > 1) throw new ConnectError(`grpc: received unexpected payload format ${flags}`, Code.Internal);
    if (body.length < 5 + length) {
      throw new ConnectError(`truncated request: the message prefix announces ${length} bytes, ${body.length - 5} arrived`, Code.Internal);
    }
    if (body.length > 5 + length) {
      throw new ConnectError("a unary or server-streaming call must carry exactly one request message", Code.Internal);
    }
    const payload = body.subarray(5);
    if ((flags & 1) === 0) return payload;
    if (!gzipped) throw new ConnectError("compressed message without grpc-encoding", Code.Internal);
    try {
      return await gunzipAsync(payload, { maxOutputLength: this.#opts.maxReceiveBytes });
    } catch (e) {
      const tooLarge = (e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE";
      throw new ConnectError(
        tooLarge ? `grpc: received message after decompression larger than max (${this.#opts.maxReceiveBytes})` : `cannot decompress request: ${(e as Error).message}`,
        tooLarge ? Code.ResourceExhausted : Code.InvalidArgument,
      );
    }
  }

  /** A response message framed, gzip-compressed when the request was (as grpc-go answers). */
  async #frame(bytes: Uint8Array): Promise<Buffer> {
    return this.#gzipResponses ? frame(await gzipAsync(bytes), 1) : frame(bytes, 0);
  }

  #sendUnary(framed: Buffer): void {
    if (this.#answered || this.#stream.closed) return;
    this.#answered = true;
    clearTimeout(this.#timer);
    const stream = this.#stream;
    stream.respond(this.#responseHeaders(), { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers(this.#trailers(0)));
    stream.end(framed);
  }

  async #sendStream(schema: DescMessage, items: AsyncIterable<unknown>): Promise<void> {
    const stream = this.#stream;
    for await (const item of items) {
      if (this.#answered || stream.closed) return;
      const framed = await this.#frame(toBinary(schema, asMessage(schema, item)));
      if (this.#answered || stream.closed) return;
      if (!this.#headersSent) {
        this.#headersSent = true;
        stream.respond(this.#responseHeaders(), { waitForTrailers: true });
      }
      if (!stream.write(framed)) await drainedOrClosed(stream);
    }
    if (this.#answered || stream.closed) return;
    if (!this.#headersSent) {
      this.#trailersOnly(this.#trailers(0));
      return;
    }
    this.#answered = true;
    clearTimeout(this.#timer);
    stream.once("wantTrailers", () => stream.sendTrailers(this.#trailers(0)));
    stream.end();
  }

  /** Ends the call with an error status (the service's ConnectError, or INTERNAL). */
  #fail(err: unknown): void {
    if (this.#answered || this.#stream.closed) return;
    const ce =
      err instanceof ConnectError
        ? err
        : new ConnectError(`internal error: ${err instanceof Error ? err.message : String(err)}`, Code.Internal);
    if (!(err instanceof ConnectError)) this.#opts.logger.error({ err: ce.rawMessage }, "gRPC handler failed");
    if (this.#headersSent) {
      this.#answered = true;
      clearTimeout(this.#timer);
      const stream = this.#stream;
      stream.once("wantTrailers", () => stream.sendTrailers(this.#trailers(ce.code, ce.rawMessage)));
      stream.end();
      return;
    }
    this.#trailersOnly(this.#trailers(ce.code, ce.rawMessage));
  }

  #trailersOnly(trailers: http2.OutgoingHttpHeaders): void {
    this.#answered = true;
    clearTimeout(this.#timer);
    this.#stream.respond({ ...this.#responseHeaders(), ...trailers }, { endStream: true });
    this.#abandoned.add(this.#stream);
  }

  #responseHeaders(): http2.OutgoingHttpHeaders {
    const h: http2.OutgoingHttpHeaders = {
      [HTTP2_HEADER_STATUS]: 200,
      [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
      "grpc-accept-encoding": "identity,gzip",
    };
    if (this.#gzipResponses) h["grpc-encoding"] = "gzip";
    this.#context?.copyResponseHeader(h);
    return h;
  }

  /** Trailers with grpc-status `status` (0 = OK, else a Code). */
  #trailers(status: 0 | Code, message?: string): http2.OutgoingHttpHeaders {
    const t: http2.OutgoingHttpHeaders = {};
    this.#context?.copyResponseTrailer(t);
    t["grpc-status"] = String(status);
    if (message) t["grpc-message"] = percentEncode(message);
    return t;
  }
}

/** The HandlerContext given to implementations; headers are made only when used. */
class CallContext implements HandlerContext {
  readonly method: DescMethod;
  readonly service: DescService;
  readonly signal: AbortSignal;
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly url: string;
  readonly values = createContextValues();
  readonly #rawHeaders: http2.IncomingHttpHeaders;
  readonly #deadline: number | undefined;
  #requestHeader: Headers | undefined;
  #responseHeader: Headers | undefined;
  #responseTrailer: Headers | undefined;

  constructor(route: Route, signal: AbortSignal, headers: http2.IncomingHttpHeaders, timeoutMs: number | undefined) {
    this.method = route.method;
    this.service = route.service;
    this.signal = signal;
    this.url = String(headers[HTTP2_HEADER_PATH]);
    this.#rawHeaders = headers;
    this.#deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  }

  timeoutMs = (): number | undefined => (this.#deadline === undefined ? undefined : this.#deadline - Date.now());

  get requestHeader(): Headers {
    if (!this.#requestHeader) {
      this.#requestHeader = new Headers();
      for (const [k, v] of Object.entries(this.#rawHeaders)) {
        if (k.startsWith(":") || v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) this.#requestHeader.append(k, one);
      }
    }
    return this.#requestHeader;
  }

  get responseHeader(): Headers {
    this.#responseHeader ??= new Headers();
    return this.#responseHeader;
  }

  get responseTrailer(): Headers {
    this.#responseTrailer ??= new Headers();
    return this.#responseTrailer;
  }

  copyResponseHeader(into: http2.OutgoingHttpHeaders): void {
    this.#responseHeader?.forEach((v, k) => {
      into[k] = v;
    });
  }

  copyResponseTrailer(into: http2.OutgoingHttpHeaders): void {
    this.#responseTrailer?.forEach((v, k) => {
      into[k] = v;
    });
  }
}

/**
 * Waits until the stream can take more or has closed. Not events.once() raced: the losing waiter
 * would stay registered, one per pause, for as long as the stream lives.
 */
function drainedOrClosed(stream: http2.ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

function asMessage<Desc extends DescMessage>(schema: Desc, value: unknown): MessageShape<Desc> {
  return isMessage(value, schema) ? value : create(schema, value as Parameters<typeof create<Desc>>[1]);
}

/** A gRPC length-prefixed message; flags 1: compressed. */
function frame(bytes: Uint8Array, flags: 0 | 1): Buffer {
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out[0] = flags;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** grpc-message is percent-encoded: bytes outside printable ASCII, and "%". */
function percentEncode(s: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(s)) return s;
  let out = "";
  for (const b of Buffer.from(s, "utf8")) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * An answer sent before the request was read to its end (an oversized message refused) must also
 * stop the caller's upload (RST_STREAM NO_ERROR, RFC 9113 §8.1); otherwise the stream stays
 * half-open with its flow-control window full and holds the connection. The reset waits a moment
 * so that the caller reads the status first (some clients report the reset instead of the status
 * when both arrive together). destroy() rather than close(): unread data keeps a closed stream.
 */
class Abandoned {
  readonly #streams = new Set<http2.ServerHttp2Stream>();

  add(stream: http2.ServerHttp2Stream): void {
    if (stream.readableEnded || stream.destroyed) return;
    this.#streams.add(stream);
    stream.once("close", () => this.#streams.delete(stream));
    setTimeout(() => this.#reset(stream), ABANDONED_UPLOAD_RESET_MS).unref();
  }

  resetAll(): void {
    for (const s of this.#streams) this.#reset(s);
  }

  #reset(stream: http2.ServerHttp2Stream): void {
    this.#streams.delete(stream);
    if (!stream.destroyed) stream.destroy();
  }
}
