// How the client reaches a server: TLS with our self-signed certificate, the server verified
// against `trusted_certs` (name check against `server_name` or the dialled host, plus the revoked
// serials), optional CONNECT proxy, optional certificate header, and the file endpoint.
import type { KeyObject } from "node:crypto";
import { type Agent, type ClientRequest, type IncomingMessage, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, type RequestOptions, request as httpsRequest } from "node:https";
import { isIP, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { checkServerIdentity, connect as tlsConnect, type DetailedPeerCertificate,
  type PeerCertificate, type TLSSocket } from "node:tls";
import { encodeCertificateHeader, pathEscape } from "../../common/cert-header.js";
import { clientCertificate, derToPem, keyToPem } from "../../common/certs.js";
import type { Logger } from "../../common/log.js";
import { parseHostPort } from "../../common/net-address.js";
import type { ClientConfig } from "../config.js";
import { FLEETSPEAK_CIPHERS } from "../../common/tls.js";


const DIAL_TIMEOUT_MS = 30_000;
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
const KEEPALIVE_MS = 30_000;

/** The identity a transport presents; rebuilt when the client rekeys. */
export interface Identity {
  clientId: Buffer;
  key: KeyObject;
}

/** A sentence for an operator about why a TLS connection to a server failed. */
export function describeConnectError(err: Error, server: string, configFile: string): string {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  switch (code) {
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_SIGNATURE_FAILURE":
      return `server ${server} presented a certificate that is not signed by any CA in trusted_certs of ${configFile} (${code}: ${err.message}); refusing it. Check that trusted_certs holds the deployment CA and that the server uses a certificate it issued`;
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return `server ${server} presented a certificate outside its validity period (${code}); refusing it. Renew the server certificate or check this machine's clock`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `server ${server} presented a certificate for another name (${err.message}); refusing it. Set server_name in ${configFile} to a name in the certificate, or reissue it with this host`;
    case "ERR_FLEETSPEAK_CERT_REVOKED":
      return `server ${server}: ${err.message}; refusing it`;
    case "ECONNREFUSED":
      return `server ${server} refused the connection (nothing listening?)`;
    default:
      return `cannot reach server ${server}: ${code ? `${code}: ` : ""}${err.message}`;
  }
}

class RevokedError extends Error {
  readonly code = "ERR_FLEETSPEAK_CERT_REVOKED";
}

export interface TransportOptions {
  config: ClientConfig;
  identity: () => Identity;
  isRevoked: (serialHex: string) => boolean;
  preferHttp2: boolean;
  log: Logger;
}

interface ProxyTarget {
  host: string;
  port: number;
  authorization?: string;
}

/**
 * Builds requests to the configured servers. The HTTPS agent (and so the client certificate) is
 * rebuilt when the client's identity changes.
 */
export class Transport {
  private agentFor: Buffer | undefined;
  private agent: HttpsAgent | undefined;
  private certDer: Buffer = Buffer.alloc(0);
  private tlsBase: {
    ca: string;
    cert: string;
    key: string;
    ciphers: string;
    minVersion: "TLSv1.2";
    ALPNProtocols: string[];
  } = { ca: "", cert: "", key: "", ciphers: FLEETSPEAK_CIPHERS, minVersion: "TLSv1.2", ALPNProtocols: [] };

  constructor(private readonly opts: TransportOptions) {
    this.refresh();
  }

  /** The certificate we present (DER), for the current identity. */
  get certificateDer(): Buffer {
    this.refresh();
    return this.certDer;
  }

  /** Rebuilds the certificate and agent if the identity changed since the last call. */
  refresh(): void {
    const id = this.opts.identity();
    if (this.agentFor?.equals(id.clientId)) return;
    this.agent?.destroy();
    this.certDer = clientCertificate(id.key);
    this.tlsBase = {
      ca: this.opts.config.trustedCertsPem,
      cert: derToPem(this.certDer),
      key: keyToPem(id.key),
      ciphers: FLEETSPEAK_CIPHERS,
      minVersion: "TLSv1.2",
      // HTTP/2 is not implemented: the client always speaks HTTP/1.1, which every Fleetspeak
      // server accepts (prefer_http2 is read and ignored).
      ALPNProtocols: ["http/1.1"],
    };
    this.agent = this.makeAgent(true);
    this.agentFor = Buffer.from(id.clientId);
  }

  private makeAgent(keepAlive: boolean): HttpsAgent {
    const transport = this;
    return new (class extends HttpsAgent {
      override createConnection(
        options: RequestOptions,
        cb?: (err: Error | null, stream: Duplex) => void,
      ): Duplex | undefined {
        // Node's agent accepts an error without a stream; its type does not say so.
        return transport.connect(options, (cb ?? (() => {})) as (err: Error | null, stream?: Duplex) => void);
      }
    })(keepAlive ? { keepAlive: true, maxFreeSockets: 10, keepAliveMsecs: KEEPALIVE_MS } : { keepAlive: false });
  }

  /** An operator-facing sentence about a failed request to `server`. */
  describeError(err: Error, server: string): string {
    return describeConnectError(err, server, this.opts.config.configFile);
  }

  close(): void {
    this.agent?.destroy();
    this.agent = undefined;
    this.agentFor = undefined;
  }

  /** Closes idle keep-alive connections (before a long sleep; servers drop them after 30 s). */
  closeIdle(): void {
    const agent = this.agent as (HttpsAgent & { freeSockets: Record<string, Socket[]> }) | undefined;
    if (!agent) return;
    for (const list of Object.values(agent.freeSockets)) for (const s of list) s.destroy();
  }

  private serverNameFor(host: string): string {
    return this.opts.config.serverName || host;
  }

  private verifyServer = (hostname: string, cert: PeerCertificate): Error | undefined => {
    const err = checkServerIdentity(hostname, cert);
    if (err) return err;
    const seen = new Set<PeerCertificate>();
    for (
      let c: DetailedPeerCertificate | undefined = cert as DetailedPeerCertificate;
      c && !seen.has(c);
      c = c.issuerCertificate
    ) {
      seen.add(c);
      if (c.serialNumber && this.opts.isRevoked(c.serialNumber)) {
        return new RevokedError(`certificate revoked: serial ${c.serialNumber} (${c.subject?.CN ?? "no CN"})`);
      }
    }
    return undefined;
  };

  /** Opens the TLS connection for a request, through the proxy if one applies. */
  private connect(options: RequestOptions, cb: (err: Error | null, stream?: Duplex) => void): TLSSocket | undefined {
    const host = String(options.host ?? options.hostname);
    const port = Number(options.port);
    const name = this.serverNameFor(host);
    const tlsOptions = {
      ...this.tlsBase,
      host,
      port,
      servername: isIP(name) ? undefined : name,
      checkServerIdentity: (_h: string, cert: PeerCertificate) => this.verifyServer(name, cert),
    };
    const proxy = this.proxyFor(host);
    const finish = (socket: TLSSocket) => {
      socket.setKeepAlive(true, KEEPALIVE_MS);
      const timer = setTimeout(
        () => socket.destroy(new Error(`TLS handshake with ${host}:${port} timed out`)),
        TLS_HANDSHAKE_TIMEOUT_MS,
      );
      socket.once("secureConnect", () => clearTimeout(timer));
      socket.once("close", () => clearTimeout(timer));
    };
    if (!proxy) {
      const socket = tlsConnect(tlsOptions);
      finish(socket);
      const dial = setTimeout(
        () => socket.destroy(new Error(`connecting to ${host}:${port} timed out`)),
        DIAL_TIMEOUT_MS,
      );
      socket.once("connect", () => clearTimeout(dial));
      socket.once("close", () => clearTimeout(dial));
      return socket;
    }
    const target = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    const connectReq = httpRequest({
      host: proxy.host,
      port: proxy.port,
      method: "CONNECT",
      path: target,
      headers: { Host: target, ...(proxy.authorization ? { "Proxy-Authorization": proxy.authorization } : {}) },
      timeout: DIAL_TIMEOUT_MS,
    });
    connectReq.once("connect", (res: IncomingMessage, raw: Socket) => {
      if (res.statusCode !== 200) {
        raw.destroy();
        cb(new Error(`proxy ${proxy.host}:${proxy.port} refused CONNECT to ${target}: HTTP ${res.statusCode}`));
        return;
      }
      const socket = tlsConnect({ ...tlsOptions, socket: raw });
      finish(socket);
      cb(null, socket);
    });
    connectReq.once("timeout", () => connectReq.destroy(new Error(`proxy ${proxy.host}:${proxy.port} timed out`)));
    connectReq.once("error", (e) => cb(new Error(`proxy ${proxy.host}:${proxy.port}: ${e.message}`)));
    connectReq.end();
    return undefined;
  }

  /** The proxy for a host: the config's `proxy`, else HTTPS_PROXY unless NO_PROXY or loopback. */
  private proxyFor(host: string): ProxyTarget | undefined {
    let url = this.opts.config.proxy;
    if (url === "") {
      if (host === "localhost" || host.startsWith("127.") || host === "::1") return undefined;
      url = process.env.HTTPS_PROXY ?? process.env.https_proxy ?? "";
      if (url === "" || noProxy(host, process.env.NO_PROXY ?? process.env.no_proxy ?? "")) return undefined;
    }
    const parsed = new URL(url.includes("://") ? url : `http://${url}`);
    if (parsed.protocol !== "http:") {
      this.opts.log.error({ proxy: url }, "only http:// proxies are supported; connecting directly");
      return undefined;
    }
    const auth = parsed.username
      ? `Basic ${Buffer.from(`${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`).toString("base64")}`
      : undefined;
    return { host: parsed.hostname.replace(/^\[|\]$/g, ""), port: Number(parsed.port || 80), authorization: auth };
  }

  /** Headers every request carries (the certificate header when configured). */
  private baseHeaders(): Record<string, string> {
    const h = this.opts.config.clientCertificateHeader;
    return h ? { [h]: encodeCertificateHeader(this.certificateDer) } : {};
  }

  /** Starts a request to one server; `persistent` = keep-alive agent (polls, files). */
  request(
    server: string,
    path: string,
    method: string,
    headers: Record<string, string | string[]>,
    persistent: boolean,
  ): ClientRequest {
    this.refresh();
    const { host, port } = parseHostPort(server);
    const agent: Agent | undefined = persistent ? this.agent : this.makeAgent(false);
    return httpsRequest({
      host,
      port,
      method,
      path,
      agent,
      headers: { ...this.baseHeaders(), ...headers },
    });
  }

  /**
   * GET /files/<service>/<name> from the first server (in order) that answers 200; rejects with
   * every server's reason when none did.
   */
  async fetchFile(
    servers: readonly string[],
    service: string,
    name: string,
    labels: readonly string[],
    timeoutMs: number,
  ): Promise<Buffer> {
    // Escaped twice, as Go's client does (PathEscape, then URL serialisation escapes the '%').
    const twice = (s: string) => pathEscape(s).replace(/%/g, "%25");
    const path = `/files/${twice(service)}/${twice(name)}`;
    const errors: string[] = [];
    for (const server of servers) {
      try {
        return await new Promise<Buffer>((resolve, reject) => {
          const req = this.request(server, path, "GET", { "X-Fleetspeak-Labels": [...labels] }, true);
          const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
          req.once("error", (e) => {
            clearTimeout(timer);
            reject(e);
          });
          req.once("response", (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.once("error", reject);
            res.once("end", () => {
              clearTimeout(timer);
              if (res.statusCode === 200) resolve(Buffer.concat(chunks));
              else reject(new Error(`HTTP ${res.statusCode}`));
            });
          });
          req.end();
        });
      } catch (e) {
        errors.push(`${server}: ${(e as Error).message}`);
      }
    }
    throw new Error(`cannot fetch /files/${service}/${name}: ${errors.join("; ")}`);
  }
}

function noProxy(host: string, list: string): boolean {
  for (const raw of list.split(",")) {
    const entry = raw.trim().toLowerCase();
    if (entry === "") continue;
    if (entry === "*") return true;
    const bare = entry.replace(/:\d+$/, "").replace(/^\*?\./, "");
    if (host === bare || host.endsWith(`.${bare}`)) return true;
  }
  return false;
}
