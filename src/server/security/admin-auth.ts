// Mutual TLS on the admin gRPC port: the handshake asks every caller for a certificate, and each
// call is let through only if that certificate chains to the configured CA. The check is made per
// call rather than in the handshake so that a refused caller reads the reason as a gRPC status
// (UNAUTHENTICATED) instead of a bare TLS alert; its connection is then closed.
import * as http2 from "node:http2";
import type { SecureServerOptions } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../../common/log.js";

export interface AdminTlsConfig {
  /** PEM certificate chain and key of the server. */
  cert: string | Buffer;
  key: string | Buffer;
  /** PEM CA certificates that client certificates must chain to (required for mutual TLS). */
  ca?: string | Buffer;
  /** Mutual TLS: calls without a certificate issued by `ca` are refused. */
  requireClientCert?: boolean;
}

/** gRPC's UNAUTHENTICATED. */
const GRPC_UNAUTHENTICATED = "16";
/** How long a refused connection may stay open for its caller to read the status. */
const REFUSED_SESSION_CLOSE_MS = 1000;

/** Options for http2.createSecureServer. */
export function adminTlsServerOptions(tls: AdminTlsConfig): SecureServerOptions {
  if (tls.requireClientCert && !tls.ca) {
    throw new Error("admin server: mutual TLS needs the CA certificates that client certificates must chain to");
  }
  return {
    cert: tls.cert,
    key: tls.key,
    ...(tls.ca ? { ca: tls.ca } : {}),
    requestCert: tls.requireClientCert === true,
    // Verified per call (clientCertificateProblem), so that a refusal carries its reason.
    rejectUnauthorized: false,
    minVersion: "TLSv1.2",
    allowHTTP1: false,
  };
}

/** Why a caller on this connection may not call, or undefined if its certificate is good. */
export function clientCertificateProblem(socket: TLSSocket | undefined): string | undefined {
  if (socket?.authorized === true) return undefined;
  if (socket?.getPeerX509Certificate?.() === undefined) {
    return "this admin server requires a client certificate (mutual TLS: admin_config.client_ca_certificates is set); call it with a certificate issued by that CA, e.g. fleetspeak-admin --client_cert and --client_key";
  }
  const reason = socket.authorizationError ? String(socket.authorizationError) : "not verified";
  return `client certificate refused (${reason}): it must be issued by a CA in admin_config.client_ca_certificates and allow client authentication`;
}

/** grpc-message is percent-encoded: bytes outside printable ASCII, and "%". */
function percentEncode(text: string): string {
  let out = "";
  for (const b of Buffer.from(text, "utf8")) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export type StreamListener = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

/**
 * Wraps an HTTP/2 server's 'stream' listener so that only callers with a verified client
 * certificate reach it. Others get UNAUTHENTICATED with the reason (a trailers-only gRPC
 * response), one warning per connection, and their connection is closed.
 */
export function requireClientCertificate(next: StreamListener, logger: Logger): StreamListener {
  const refused = new WeakSet<http2.Http2Session>();
  return (stream, headers) => {
    const session = stream.session;
    const problem = clientCertificateProblem(session?.socket as TLSSocket | undefined);
    if (problem === undefined) {
      next(stream, headers);
      return;
    }
    if (!stream.destroyed && !stream.closed) {
      stream.respond(
        {
          [http2.constants.HTTP2_HEADER_STATUS]: 200,
          [http2.constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
          "grpc-status": GRPC_UNAUTHENTICATED,
          "grpc-message": percentEncode(problem),
        },
        { endStream: true },
      );
      // Whatever the caller still uploads is not wanted.
      stream.resume();
    }
    if (session && !refused.has(session)) {
      refused.add(session);
      const peer = session.socket?.remoteAddress;
      logger.warn({ peer }, `admin call from ${peer} refused: ${problem}`);
      session.close();
      setTimeout(() => session.destroy(), REFUSED_SESSION_CLOSE_MS).unref();
    }
  };
}
