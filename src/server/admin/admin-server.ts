// The admin gRPC listener: fleetspeak.server.Admin over HTTP/2. Plaintext (h2c) by default, as
// Fleetspeak's admin port is; TLS, optionally requiring client certificates, when configured.
import * as http2 from "node:http2";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "../../common/log.js";
import { listen } from "../../common/listen.js";
import { formatHostPort, parseHostPort } from "../../common/net-address.js";
import { Admin } from "../../gen/fleetspeak_server/admin_pb.js";
import { adminTlsServerOptions, requireClientCertificate } from "../security/admin-auth.js";
import { createGrpcHandler } from "./grpc-server.js";

/** grpc-go's default limit on an inbound message; larger requests fail with RESOURCE_EXHAUSTED. */
export const ADMIN_MAX_RECEIVE_BYTES = 4 * 1024 * 1024;
/** A connection idle this long is pinged (grpc-go's keepalive pings after 2 h). */
const KEEPALIVE_IDLE_MS = 5 * 60 * 1000;
/** A ping not answered within this long closes the connection (grpc-go: 20 s). */
const KEEPALIVE_TIMEOUT_MS = 20_000;
/** How long close() lets running calls finish before cutting their connections. */
const CLOSE_GRACE_MS = 5000;

export interface AdminTlsOptions {
  /** PEM certificate chain and key of the server. */
  cert: string | Buffer;
  key: string | Buffer;
  /** PEM CA certificates that client certificates must chain to. */
  ca?: string | Buffer;
  requireClientCert?: boolean;
}

export interface AdminServerOptions {
  /** "host:port" as in Fleetspeak's admin_config.listen_address; ":port" listens on every interface. */
  listenAddress: string;
  service: Partial<ServiceImpl<typeof Admin>>;
  logger: Logger;
  tls?: AdminTlsOptions;
  maxReceiveBytes?: number;
  /** Idle time before a connection is pinged to see that its caller is still there. */
  keepAliveIdleMs?: number;
}

export interface AdminServer {
  /** The address actually bound, "host:port" (the port chosen by the OS when 0 was asked for). */
  readonly address: string;
  close(): Promise<void>;
}

export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { host } = parseHostPort(opts.listenAddress, { emptyHost: "" });
  const grpc = createGrpcHandler(Admin, opts.service, {
    maxReceiveBytes: opts.maxReceiveBytes ?? ADMIN_MAX_RECEIVE_BYTES,
    logger: opts.logger,
  });
  const server = opts.tls
    ? http2.createSecureServer(adminTlsServerOptions(opts.tls))
    : http2.createServer();
  const onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => grpc.onStream(stream, headers);
  // Mutual TLS: only callers whose certificate chains to tls.ca reach the service.
  server.on("stream", opts.tls?.requireClientCert ? requireClientCertificate(onStream, opts.logger) : onStream);

  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.on("error", (err) => opts.logger.debug({ err: err.message }, "admin connection error"));
    // A caller that died or vanished (its host gone, or its process killed in the middle of a
    // frame, which leaves node's session waiting for the rest of the frame) would hold its
    // connection forever: an idle connection is pinged, and closed if the ping goes unanswered.
    session.setTimeout(opts.keepAliveIdleMs ?? KEEPALIVE_IDLE_MS, () => {
      const dead = setTimeout(() => session.destroy(), KEEPALIVE_TIMEOUT_MS).unref();
      const sent = session.ping((err) => {
        clearTimeout(dead);
        if (err && !session.destroyed) session.destroy();
      });
      if (!sent) {
        clearTimeout(dead);
        session.destroy();
      }
    });
  });
  server.on("sessionError", (err) => opts.logger.debug({ err: err.message }, "admin session error"));

  const bound = await listen(server, opts.listenAddress, "admin_config.listen_address");
  server.on("error", (err) => opts.logger.error({ err: err.message }, "admin listener error"));

  const address = formatHostPort(host === "" ? bound.address : host, bound.port);
  opts.logger.info({ address, tls: opts.tls !== undefined }, "admin gRPC server listening");

  let closing: Promise<void> | undefined;
  return {
    address,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          for (const s of sessions) s.destroy();
        }, CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        grpc.resetAbandoned();
        for (const s of sessions) s.close();
      });
      return closing;
    },
  };
}
