// The frontend's transport edge: a TCP listener that reads the PROXY header (when the deployment
// has a load balancer that sends one), then hands each connection to an HTTPS (or, in the
// cleartext frontend modes, HTTP) server that never listens itself. Every failure stays on its
// own connection and is logged once with the peer's address.
//
// HTTP/1.1 only (no h2): Go clients that prefer HTTP/2 also offer http/1.1 and fall back to it.
// Measured with 1000 idle TLS connections each holding an open streaming POST, an https.Server
// costs ~47 KiB RSS per connection and http2.createSecureServer({allowHTTP1}) the same for
// HTTP/1.1 clients, but ~64 KiB for clients that do negotiate h2.
import type { Server as HttpServer, IncomingMessage, ServerResponse } from "node:http";
import * as http from "node:http";
import type { Server as HttpsServer } from "node:https";
import * as https from "node:https";
import { constants as cryptoConstants } from "node:crypto";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../../common/log.js";
import { listen } from "../../common/listen.js";
import { formatHostPort } from "../../common/net-address.js";
import type { FrontendLimits } from "../../gen/fleetspeak_components/config_pb.js";
import { DEFAULT_MAX_BUFFERED_REQUEST_BYTES, DEFAULT_UPLOAD_GRACE_MS } from "../security/buffer-budget.js";
import { LogThrottle } from "../security/log-throttle.js";
import {
  ProxyHeaderParser,
  ProxyProtocolError,
  SIGNATURE_DECISION_BYTES,
  startsWithProxySignature,
} from "./proxy-protocol.js";
import { FLEETSPEAK_CIPHERS } from "../../common/tls.js";

export interface FrontendListenerLimits {
  /** With proxy_protocol: the complete PROXY header must arrive within this. */
  proxyHeaderTimeoutMs: number;
  /** Without proxy_protocol: a connection that sends no byte at all is closed after this. */
  firstByteTimeoutMs: number;
  tlsHandshakeTimeoutMs: number;
  /**
   * Request headers must be complete within this, counted from the end of the TLS handshake
   * (or the hand-over, in cleartext) for the first request and from its first byte for later
   * ones. Request bodies have no time limit: streams last ~10 minutes by design.
   */
  headersTimeoutMs: number;
  /** An idle keep-alive connection (between polls) is closed after this. */
  keepAliveTimeoutMs: number;
  /** close() lets running requests finish for this long, then cuts them. */
  closeGraceMs: number;
  /**
   * Open TCP connections (https_config.limits.max_connections). At the limit, the oldest
   * connection that has not sent a request yet is closed to make room; only when there is none is
   * the new one closed at accept.
   */
  maxConnections: number;
  /**
   * Connections that have not sent their first complete request yet (PROXY header, TLS
   * handshake, request headers). Past this, the oldest of them is closed: real clients get
   * through these phases in milliseconds, so whoever holds a connection there longest is the
   * likeliest to be stalling on purpose (slowloris, endless handshakes, silent connections).
   */
  maxPendingConnections: number;
  /** Server-wide memory for large frames and poll bodies not yet processed (BufferBudget). */
  maxBufferedRequestBytes: number;
  /**
   * A poll body, or a large stream frame once it has memory, must arrive within this plus one
   * second per 64 KiB; slower senders are cut (uploadDeadlineMs).
   */
  uploadGraceMs: number;
  /**
   * Frames per second one stream may have processed, in bursts of as many
   * (https_config.limits.max_stream_frames_per_second). A real client sends a frame per batch of
   * up to 100 messages, far fewer than this; a flood of one-byte empty frames would otherwise keep
   * the event loop busy for everyone.
   */
  maxStreamFramesPerSecond: number;
  /**
   * How long a new contact is held, while the database cannot be reached, before it is answered
   * 503 with a Retry-After (contact-handlers.ts).
   */
  contactHoldMs: number;
}

/** Fleetspeak's values where it has them: ReadHeaderTimeout 10 s, IdleTimeout 30 s. */
export const DEFAULT_FRONTEND_LISTENER_LIMITS: FrontendListenerLimits = {
  proxyHeaderTimeoutMs: 10_000,
  firstByteTimeoutMs: 30_000,
  tlsHandshakeTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 30_000,
  closeGraceMs: 10_000,
  // 20,000 streaming clients plus polls and reconnections, with room to spare.
  maxConnections: 50_000,
  maxPendingConnections: 4096,
  maxBufferedRequestBytes: DEFAULT_MAX_BUFFERED_REQUEST_BYTES,
  uploadGraceMs: DEFAULT_UPLOAD_GRACE_MS,
  maxStreamFramesPerSecond: 100,
  contactHoldMs: 20_000,
};

/** https_config.limits of the components config (0 or unset: the default). */
export function frontendLimitsFromConfig(cfg: FrontendLimits | undefined): Partial<FrontendListenerLimits> {
  const out: Partial<FrontendListenerLimits> = {};
  if (cfg?.maxConnections) out.maxConnections = cfg.maxConnections;
  if (cfg?.maxPendingConnections) out.maxPendingConnections = cfg.maxPendingConnections;
  if (cfg?.maxBufferedRequestBytes) out.maxBufferedRequestBytes = Number(cfg.maxBufferedRequestBytes);
  if (cfg?.maxStreamFramesPerSecond) out.maxStreamFramesPerSecond = cfg.maxStreamFramesPerSecond;
  return out;
}

export type FrontendRequestHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface FrontendListenerOptions {
  /** host:port as in https_config.listen_address; ":port" means every interface. */
  listenAddress: string;
  /** Server certificate chain and key (PEM), https_config.certificates/key; absent = cleartext. */
  tls?: { cert: string; key: string };
  /** Config.proxy_protocol: every connection must start with a PROXY v1/v2 header. */
  proxyProtocol: boolean;
  handler: FrontendRequestHandler;
  logger: Logger;
  limits?: Partial<FrontendListenerLimits>;
}

export interface FrontendListener {
  /** The address actually bound, host:port (IPv6 in brackets). */
  address: string;
  /** The HTTP(S) server the connections are handed to; it never listens itself. */
  server: HttpServer | HttpsServer;
  /**
   * Stops accepting connections; those that have not started a request yet are closed, and
   * running requests (streams) go on until close().
   */
  stopAccepting(): void;
  /** Stops accepting, lets running requests end within closeGraceMs, then cuts the rest. */
  close(): Promise<void>;
  /** Open TCP connections, including ones still sending their PROXY header or handshake. */
  connectionCount(): number;
  /** Open connections that have not sent their first complete request yet. */
  pendingConnectionCount(): number;
}


interface Connection {
  raw: net.Socket;
  /** The PROXY header's source when there is one, else the TCP peer (ip:port). */
  clientAddress: string;
  phase: "tls-handshake" | "http";
  /** Requests whose response has not closed yet. */
  activeResponses: number;
  /** A failure of this connection was logged (each is logged once). */
  logged: boolean;
  /** Opened by the load balancer for a health check (PROXY LOCAL): its hang-up is expected. */
  healthCheck: boolean;
  /** A disconnect seen by the HTTP layer, logged when the connection closes. */
  disconnect?: Error;
}

// Connections that reached the HTTP(S) server, by the TCP 4-tuple that both the raw socket and
// the TLS socket wrapping it report (socketKey): this is how a request finds the address read
// from its connection's PROXY header, with documented socket properties only.
const handedOver = new Map<string, Connection>();
const byRawSocket = new WeakMap<object, Connection>();
const requestAddresses = new WeakMap<IncomingMessage, string>();

/**
 * The connection a socket (raw, or TLS over a raw one) belongs to. A TLS socket that failed its
 * handshake may already be destroyed and report no address while its raw socket is still open;
 * only for that case (to log the failure with the peer's address) the undocumented `_parent`
 * link from a TLS socket to the socket it wraps is used.
 */
function connectionOf(socket: object): Connection | undefined {
  return (
    byRawSocket.get(socket) ??
    handedOver.get(socketKey(socket as net.Socket)) ??
    byRawSocket.get((socket as { _parent?: object })._parent ?? socket)
  );
}

function socketKey(s: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): string {
  return `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;
}

/** ip:port, IPv6 in brackets, IPv4-mapped IPv6 (dual-stack listeners) as plain IPv4. */
export function formatClientAddress(address: string, port: number): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return formatHostPort(v4 ? v4[1]! : address, port);
}

/**
 * The client's address as Fleetspeak records it ("ip:port"): the PROXY header's source when the
 * connection had one, else the TCP peer.
 */
export function clientAddressOf(req: IncomingMessage): string {
  const known = requestAddresses.get(req) ?? connectionOf(req.socket)?.clientAddress;
  if (known !== undefined) return known;
  const { remoteAddress, remotePort } = req.socket;
  return remoteAddress === undefined || remotePort === undefined ? "unknown" : formatClientAddress(remoteAddress, remotePort);
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Errors that mean "the peer went away", normal for scanners, health checks and mobile clients. */
function isDisconnect(err: unknown): boolean {
  const code = errorCode(err);
  return code === "ECONNRESET" || code === "EPIPE" || code === "ETIMEDOUT" || code === "ECONNABORTED";
}

const EMPTY = Buffer.alloc(0);

/** OpenSSL's short reason ("no shared cipher", "http request") rather than its whole error string. */
function tlsReason(err: NodeJS.ErrnoException): string {
  const reason = (err as { reason?: unknown }).reason;
  return typeof reason === "string" && reason !== "" ? reason : err.message.trim();
}

export async function startFrontendListener(opts: FrontendListenerOptions): Promise<FrontendListener> {
  const limits = { ...DEFAULT_FRONTEND_LISTENER_LIMITS, ...opts.limits };
  const log = opts.logger;
  const open = new Set<net.Socket>();
  // In accept order, so that the first is the oldest.
  const pending = new Set<Connection>();
  const refusedLog = new LogThrottle(10_000);
  const evictedLog = new LogThrottle(10_000);

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const conn = connectionOf(req.socket);
    if (conn) {
      pending.delete(conn);
      requestAddresses.set(req, conn.clientAddress);
      conn.activeResponses++;
      res.once("close", () => conn.activeResponses--);
    }
    const fail = (err: unknown) => {
      log.error({ err, client: clientAddressOf(req), url: req.url }, "request handler failed");
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end("internal error\n");
      else res.destroy();
    };
    try {
      const result = opts.handler(req, res);
      if (result instanceof Promise) result.catch(fail);
    } catch (err) {
      fail(err);
    }
  };

  const httpOptions: http.ServerOptions = {
    requestTimeout: 0,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, Math.max(20, Math.floor(limits.headersTimeoutMs / 4))),
  };
  const inner = opts.tls
    ? createTlsServer(opts.tls, httpOptions, limits, onRequest)
    : http.createServer(httpOptions, onRequest);
  // An http.Server tracks its connections (headersTimeout, closeIdleConnections) from its
  // 'listening' event on; this one never listens, so it is told it is serving.
  inner.emit("listening");

  // https.Server reports TLS handshake failures as 'clientError' too. A socket whose peer is gone
  // no longer reports its address, so the connection is looked up first, and failures that only
  // show after the close are logged by the close handler.
  inner.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    const conn = connectionOf(socket);
    const peer = conn?.clientAddress ?? "unknown";
    const duringHandshake = conn
      ? conn.phase === "tls-handshake"
      : err.code?.startsWith("ERR_SSL_") === true || err.code?.startsWith("ERR_TLS_") === true;
    if (duringHandshake) {
      socket.destroy();
      const quiet = isDisconnect(err) || err.code === "ERR_TLS_HANDSHAKE_TIMEOUT";
      if (conn?.logged || (quiet && (!conn || conn.healthCheck))) return;
      if (conn) conn.logged = true;
      if (quiet) log.debug({ peer, code: err.code }, `TLS handshake with ${peer} did not complete: ${err.message}`);
      else log.warn({ peer, code: err.code }, `TLS handshake with ${peer} failed: ${tlsReason(err)}`);
      return;
    }
    const disconnected = isDisconnect(err) || err.code === "HPE_INVALID_EOF_STATE";
    if (disconnected) {
      if (conn) conn.disconnect = err;
    } else if (conn?.logged !== true) {
      if (conn) conn.logged = true;
      if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
        log.debug({ peer }, `closing connection from ${peer}: request headers not received within ${limits.headersTimeoutMs} ms`);
      } else {
        log.warn({ peer, code: err.code }, `malformed HTTP request from ${peer}: ${err.message}`);
      }
    }
    // A status line may only be written between responses, never into one that is streaming.
    if (socket.writable && (conn?.activeResponses ?? 0) === 0 && !disconnected) {
      const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
      socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\n\r\n`);
    }
    socket.destroy();
  });

  if (opts.tls) {
    inner.on("secureConnection", (tlsSocket: TLSSocket) => {
      const conn = connectionOf(tlsSocket);
      if (conn) conn.phase = "http";
    });
  }

  const evictOldestPending = (): void => {
    const oldest: Connection = pending.values().next().value!;
    pending.delete(oldest);
    // open.delete now rather than at 'close', so that the room is there for the new connection.
    open.delete(oldest.raw);
    oldest.logged = true;
    oldest.raw.destroy();
    evictedLog.run((suppressed) =>
      log.warn(
        { peer: oldest.clientAddress, suppressed, pending: pending.size, open: open.size },
        `closing connection from ${oldest.clientAddress} to make room: it has not sent a complete request yet, and the server is at https_config.limits.max_pending_connections (${limits.maxPendingConnections}) or max_connections (${limits.maxConnections})`,
      ),
    );
  };

  const acceptConnection = (raw: net.Socket): void => {
    const { remoteAddress, remotePort } = raw;
    if (remoteAddress === undefined || remotePort === undefined) {
      raw.destroy();
      return;
    }
    const peer = formatClientAddress(remoteAddress, remotePort);
    // At the cap, a connection that has not sent a request yet makes room; only when every
    // connection is serving requests are new ones refused.
    if (open.size >= limits.maxConnections && pending.size > 0) evictOldestPending();
    if (open.size >= limits.maxConnections) {
      raw.destroy();
      refusedLog.run((suppressed) =>
        log.warn(
          { peer, suppressed },
          `refusing connection from ${peer}: ${open.size} connections are open, the limit (https_config.limits.max_connections) is ${limits.maxConnections}`,
        ),
      );
      return;
    }
    open.add(raw);
    const key = socketKey(raw);
    const conn: Connection = { raw, clientAddress: peer, phase: "tls-handshake", activeResponses: 0, logged: false, healthCheck: false };
    byRawSocket.set(raw, conn);
    pending.add(conn);
    if (pending.size > limits.maxPendingConnections) evictOldestPending();
    let settled = false;
    let buffered: Buffer = EMPTY;
    let parser = opts.proxyProtocol ? new ProxyHeaderParser() : undefined;

    const reject = (level: "debug" | "warn", message: string): void => {
      settled = true;
      clearTimeout(timer);
      log[level]({ peer }, `closing connection from ${peer}: ${message}`);
      raw.destroy();
    };
    const handOver = (rest: Buffer): void => {
      settled = true;
      clearTimeout(timer);
      // This closure lives as long as the connection: keep nothing of the preface in it.
      buffered = EMPTY;
      parser = undefined;
      raw.removeListener("data", onData);
      raw.pause();
      if (rest.length > 0) raw.unshift(rest);
      handedOver.set(key, conn);
      inner.emit("connection", raw);
      if (!opts.tls) {
        conn.phase = "http";
        // The HTTP parser reads the socket's handle directly and would miss the bytes unshifted
        // above; a 'data' listener makes it read through the stream instead.
        raw.on("data", () => {});
        raw.resume();
      }
    };
    const onData = (chunk: Buffer): void => {
      if (parser) {
        try {
          const result = parser.push(chunk);
          if (!result.done) return;
          const { header } = result;
          if (header.source) {
            conn.clientAddress = formatClientAddress(header.source.address, header.source.port);
          } else if (header.local) {
            conn.healthCheck = true;
            log.debug({ peer }, `PROXY LOCAL header from ${peer} (load balancer health check)`);
          }
          handOver(result.rest);
        } catch (e) {
          if (!(e instanceof ProxyProtocolError)) throw e;
          reject("warn", `invalid PROXY protocol header (proxy_protocol is enabled, so every connection must start with one): ${e.message}`);
        }
        return;
      }
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const isProxy = startsWithProxySignature(buffered);
      if (isProxy === undefined && buffered.length < SIGNATURE_DECISION_BYTES) return;
      if (isProxy) {
        reject("warn", "it starts with a PROXY protocol header, but proxy_protocol is not enabled in the server config; enable it if a load balancer in front of this server sends PROXY headers");
        return;
      }
      handOver(buffered);
    };

    const timer = setTimeout(() => {
      if (parser) {
        reject(parser.bufferedBytes > 0 ? "warn" : "debug", `no complete PROXY protocol header within ${limits.proxyHeaderTimeoutMs} ms`);
      } else {
        reject("debug", `nothing received within ${limits.firstByteTimeoutMs} ms`);
      }
    }, parser ? limits.proxyHeaderTimeoutMs : limits.firstByteTimeoutMs);

    raw.on("data", onData);
    raw.on("error", (err) => {
      // After the hand-over the TLS/HTTP layer sees (and logs) the same error.
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      log.debug({ peer, code: errorCode(err) }, `connection from ${peer} failed before its first request: ${err.message}`);
    });
    raw.on("close", () => {
      open.delete(raw);
      pending.delete(conn);
      if (handedOver.get(key) === conn) {
        handedOver.delete(key);
        const who = conn.clientAddress;
        if (conn.logged || conn.healthCheck) return;
        conn.logged = true;
        if (conn.phase === "tls-handshake") {
          log.debug({ peer: who }, `connection from ${who} closed during the TLS handshake`);
        } else if (conn.disconnect) {
          const why = errorCode(conn.disconnect) === "HPE_INVALID_EOF_STATE" ? "closed in the middle of a request" : conn.disconnect.message;
          log.debug({ peer: who }, `connection from ${who} ended: ${why}`);
        }
        return;
      }
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (parser && parser.bufferedBytes > 0) {
        log.warn({ peer }, `connection from ${peer}: ${parser.end()?.message}`);
      } else if (buffered.length > 0) {
        log.debug({ peer }, `connection from ${peer} closed after sending only ${buffered.length} bytes`);
      } else {
        log.debug({ peer }, `connection from ${peer} closed before sending anything`);
      }
    });
  };

  // TCP keep-alive after a minute, as Fleetspeak does, so that dead peers of idle streams are found.
  const tcp = net.createServer({ keepAlive: true, keepAliveInitialDelay: 60_000, noDelay: true }, acceptConnection);
  const bound = await listen(tcp, opts.listenAddress, "https_config.listen_address");
  tcp.on("error", (err) => log.error({ err: err.message }, `frontend listener on ${opts.listenAddress} failed`));

  let closed: Promise<void> | undefined;
  const stopAccepting = (): void => {
    closed ??= new Promise<void>((resolve) => tcp.close(() => resolve()));
    for (const raw of open) if (!handedOver.has(socketKey(raw))) raw.destroy();
    inner.closeIdleConnections();
  };

  return {
    address: formatHostPort(bound.address, bound.port),
    server: inner,
    connectionCount: () => open.size,
    pendingConnectionCount: () => pending.size,
    stopAccepting,
    close: async () => {
      const allClosed = [...open].map((raw) => new Promise((resolve) => raw.once("close", resolve)));
      stopAccepting();
      const grace = setTimeout(() => {
        inner.closeAllConnections();
        for (const raw of open) raw.destroy();
      }, limits.closeGraceMs);
      await Promise.all([closed, ...allClosed]);
      clearTimeout(grace);
      // Stops the connection-checking timer; the server never listened, so close reports that.
      inner.close(() => {});
    },
  };
}

function createTlsServer(
  tls: { cert: string; key: string },
  httpOptions: http.ServerOptions,
  limits: FrontendListenerLimits,
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
): HttpsServer {
  try {
    return https.createServer(
      {
        ...httpOptions,
        cert: tls.cert,
        key: tls.key,
        // Client certificates are identity tokens (self-signed, any dates), never verified.
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: "TLSv1.2",
        ciphers: FLEETSPEAK_CIPHERS,
        // Fleetspeak disables session tickets (sharing ticket keys across servers is a risk).
        secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
        handshakeTimeout: limits.tlsHandshakeTimeoutMs,
      },
      onRequest,
    );
  } catch (e) {
    throw new Error(
      `cannot use the server certificate and key (https_config.certificates / https_config.key): ${(e as Error).message}`,
    );
  }
}
