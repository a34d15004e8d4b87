// A lean gRPC client for unary calls over one HTTP/2 connection (grpc/doc/PROTOCOL-HTTP2.md), for
// forwarding every client message to the integrator's Processor. connect-node's client spends
// several hundred µs of CPU per call (bench/admin.ts), which made it the main cost of a frontend's
// message forwarding. Failures come back as ConnectErrors with the status codes grpc-go would
// report, since they decide whether a message is retried.
import * as http2 from "node:http2";
import { gunzip } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { whenAborted } from "../../common/abort-listeners.js";

/** Largest response message accepted. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** An idle connection is closed after this long (and made again on the next call). */
const IDLE_TIMEOUT_MS = 5 * 60 * 1000;
const USER_AGENT = "fleetspeak-ts grpc-unary-client";

/** HTTP status → gRPC code, for answers that are not gRPC (a proxy, a wrong port). */
function codeOfHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}

/** RST_STREAM error code → gRPC code, as grpc-go maps them. */
function codeOfReset(rst: number): Code {
  const c = http2.constants;
  switch (rst) {
    case c.NGHTTP2_REFUSED_STREAM:
      return Code.Unavailable;
    case c.NGHTTP2_CANCEL:
      return Code.Canceled;
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return Code.ResourceExhausted;
    case c.NGHTTP2_INADEQUATE_SECURITY:
      return Code.PermissionDenied;
    default:
      return Code.Internal;
  }
}

function grpcStatusOf(headers: http2.IncomingHttpHeaders | undefined, trailers: http2.IncomingHttpHeaders | undefined) {
  return trailers?.["grpc-status"] ?? headers?.["grpc-status"];
}

function percentDecode(s: string): string {
  if (!s.includes("%")) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export interface GrpcUnaryClientOptions {
  /** "http://host:port" (plaintext HTTP/2) or "https://host:port" (TLS). */
  baseUrl: string;
  /** TLS settings for https: trusted CAs (ca; the system's when absent), client certificate and key. */
  tls?: Pick<http2.SecureClientSessionOptions, "ca" | "cert" | "key">;
}

/** What the GRPC service forwards with: unary calls of serialized messages. */
export interface UnaryCaller {
  call(path: string, request: Uint8Array, signal: AbortSignal): Promise<Uint8Array>;
  close(): void;
}

export class GrpcUnaryClient implements UnaryCaller {
  readonly #authority: string;
  readonly #connectOptions: http2.SecureClientSessionOptions;
  #conn: { session: http2.ClientHttp2Session; inFlight: number } | undefined;
  #closed = false;

  constructor(opts: GrpcUnaryClientOptions) {
    this.#authority = opts.baseUrl;
    this.#connectOptions = { ...opts.tls };
  }

  /**
   * Calls `path` (/package.Service/Method) with a serialized request and resolves with the
   * serialized response. Rejects with a ConnectError: UNAVAILABLE when the server cannot be
   * reached, CANCELED when `signal` aborts, else the status the server answered.
   */
  call(path: string, request: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      if (this.#closed) {
        reject(new ConnectError("connection unavailable: the client was closed", Code.Unavailable));
        return;
      }
      if (signal.aborted) {
        reject(new ConnectError(`canceled before sending: ${String(signal.reason)}`, Code.Canceled));
        return;
      }
      let req: http2.ClientHttp2Stream;
      let conn: { session: http2.ClientHttp2Session; inFlight: number };
      try {
        conn = this.#connection();
        req = conn.session.request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc",
          te: "trailers",
          "user-agent": USER_AGENT,
          "grpc-accept-encoding": "identity,gzip",
        });
      } catch (e) {
        reject(new ConnectError(`connection error: ${(e as Error).message}`, Code.Unavailable, undefined, undefined, e));
        return;
      }
      // An idle connection to the integrator must not keep the process alive; a running call must.
      if (conn.inFlight++ === 0) conn.session.ref();
      req.once("close", () => {
        if (--conn.inFlight === 0 && !conn.session.destroyed) conn.session.unref();
      });
      let headers: http2.IncomingHttpHeaders | undefined;
      let trailers: http2.IncomingHttpHeaders | undefined;
      let error: Error | undefined;
      let canceled = false;
      const chunks: Buffer[] = [];
      let received = 0;
      let declared = -1;
      let tooLarge = 0;
      const onAbort = () => {
        canceled = true;
        req.close(http2.constants.NGHTTP2_CANCEL);
      };
      const stopListening = whenAborted(signal, onAbort);
      req.on("response", (h) => {
        headers = h;
      });
      req.on("trailers", (t) => {
        trailers = t;
      });
      req.on("data", (c: Buffer) => {
        received += c.length;
        chunks.push(c);
        if (declared < 0 && received >= 5) declared = (chunks.length === 1 ? c : Buffer.concat(chunks)).readUInt32BE(1);
        if (declared > MAX_RESPONSE_BYTES || received > MAX_RESPONSE_BYTES + 5) {
          tooLarge = Math.max(declared, received - 5);
          chunks.length = 0;
          req.close(http2.constants.NGHTTP2_CANCEL);
        }
      });
      req.on("error", (e) => {
        error ??= e;
      });
      req.on("close", () => {
        stopListening();
        const fail = (message: string, code: Code, cause?: unknown) =>
          reject(new ConnectError(message, code, undefined, undefined, cause));
        if (canceled) {
          // As grpc-go reports a call whose context's deadline passed.
          const deadline = (signal.reason as Error | undefined)?.name === "TimeoutError";
          return fail(`${deadline ? "deadline exceeded" : "canceled"}: ${String(signal.reason)}`, deadline ? Code.DeadlineExceeded : Code.Canceled, signal.reason);
        }
        if (tooLarge) return fail(`grpc: received message larger than max (${tooLarge} vs. ${MAX_RESPONSE_BYTES})`, Code.ResourceExhausted);
        // The connection went (the Processor's process or host died): worth retrying, as grpc-go
        // reports a transport that closes under a call.
        const lost = grpcStatusOf(headers, trailers) === undefined && conn.session.destroyed;
        if (lost) return fail(`connection to the Processor lost before its answer${error ? `: ${error.message}` : ""}`, Code.Unavailable, error);
        if (!headers) {
          const rst = req.rstCode;
          if (error) return fail(`connection error: ${error.message}`, Code.Unavailable, error);
          return fail(`stream reset before an answer (HTTP/2 error ${rst})`, rst ? codeOfReset(rst) : Code.Unavailable);
        }
        const status = Number(headers[":status"]);
        const grpcStatus = grpcStatusOf(headers, trailers);
        if (grpcStatus === undefined) {
          if (status !== 200) return fail(`HTTP ${status} instead of a gRPC answer`, codeOfHttpStatus(status));
          if (error) return fail(`stream error: ${error.message}`, Code.Internal, error);
          const rst = req.rstCode;
          return fail(`the server ended the call without a grpc-status (HTTP/2 error ${rst ?? 0})`, rst ? codeOfReset(rst) : Code.Internal);
        }
        const code = Number(grpcStatus);
        if (code !== 0) {
          const message = trailers?.["grpc-message"] ?? headers["grpc-message"];
          return fail(percentDecode(typeof message === "string" ? message : ""), code in Code ? (code as Code) : Code.Unknown);
        }
        const contentType = String(headers["content-type"]);
        if (!/^application\/grpc(\+proto)?(;|$)/.test(contentType)) {
          return fail(`the server answered with content-type ${contentType}, not application/grpc`, Code.Internal);
        }
        const body = Buffer.concat(chunks);
        if (body.length < 5) return fail(`truncated response: ${body.length} bytes where a message was expected`, Code.Internal);
        const length = body.readUInt32BE(1);
        if (body.length < 5 + length) {
          return fail(`truncated response: the message prefix announces ${length} bytes, ${body.length - 5} arrived`, Code.Internal);
        }
        if (body.length > 5 + length) return fail("the server answered OK with more than one response message", Code.Internal);
        if (body[0]! > 1) return fail(`grpc: received unexpected payload format ${body[0]}`, Code.Internal);
        const payload = body.subarray(5);
        if ((body[0]! & 1) === 0) return resolve(payload);
        if (headers["grpc-encoding"] !== "gzip") {
          return fail(`compressed response with grpc-encoding ${String(headers["grpc-encoding"])}`, Code.Internal);
        }
        gunzip(payload, { maxOutputLength: MAX_RESPONSE_BYTES }, (e, out) => {
          if (!e) return resolve(out);
          if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
            return fail(`grpc: received message after decompression larger than max (${MAX_RESPONSE_BYTES})`, Code.ResourceExhausted);
          }
          fail(`cannot decompress the response: ${e.message}`, Code.Internal, e);
        });
      });
      const framed = Buffer.allocUnsafe(5 + request.length);
      framed[0] = 0;
      framed.writeUInt32BE(request.length, 1);
      framed.set(request, 5);
      req.end(framed);
    });
  }

  close(): void {
    this.#closed = true;
    this.#conn?.session.destroy();
    this.#conn = undefined;
  }

  /** The open connection, or a new one (a broken or draining one is replaced). */
  #connection(): { session: http2.ClientHttp2Session; inFlight: number } {
    const current = this.#conn;
    if (current && !current.session.closed && !current.session.destroyed) return current;
    const session = http2.connect(this.#authority, this.#connectOptions);
    const conn = { session, inFlight: 0 };
    session.on("error", () => {
      // Reported to the calls running on it, through their streams.
    });
    const forget = () => {
      if (this.#conn === conn) this.#conn = undefined;
    };
    session.on("close", forget);
    session.on("goaway", forget);
    session.setTimeout(IDLE_TIMEOUT_MS, () => session.close());
    session.unref();
    this.#conn = conn;
    return conn;
  }
}
