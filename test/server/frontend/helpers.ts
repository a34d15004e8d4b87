// Shared by the frontend edge tests: a logger whose lines can be inspected, and HTTP(S) requests
// that can put bytes (a PROXY header) in front of the TLS handshake or the HTTP request, in the
// same TCP write.
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { Duplex } from "node:stream";
import * as tls from "node:tls";
import { pino } from "pino";
import type { Logger } from "../../../src/common/log.js";

export interface LogEntry {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

export interface CapturedLog {
  logger: Logger;
  entries: LogEntry[];
  /** Entries at `level` or above whose message matches. */
  find(level: keyof typeof LEVEL, pattern: RegExp): LogEntry[];
  /** Resolves when a matching entry appears (checks every 10 ms, up to timeoutMs). */
  waitFor(level: keyof typeof LEVEL, pattern: RegExp, timeoutMs?: number): Promise<LogEntry>;
}

export function captureLog(): CapturedLog {
  const entries: LogEntry[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void entries.push(JSON.parse(line)) });
  const find = (level: keyof typeof LEVEL, pattern: RegExp) =>
    entries.filter((e) => e.level >= LEVEL[level] && pattern.test(e.msg));
  return {
    logger,
    entries,
    find,
    waitFor: async (level, pattern, timeoutMs = 5000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = find(level, pattern)[0];
        if (hit) return hit;
        if (Date.now() > deadline) {
          throw new Error(`no ${level} log matching ${pattern}; got:\n${entries.map((e) => `${e.level} ${e.msg}`).join("\n")}`);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

/** A duplex over a TCP socket whose first write is preceded by `prefix` (in the same write). */
function prefixedConnection(host: string, port: number, prefix: Buffer): Duplex {
  const socket = net.connect(port, host);
  let first = true;
  const duplex = new Duplex({
    write(chunk: Buffer, _encoding, callback) {
      const data = first ? Buffer.concat([prefix, chunk]) : chunk;
      first = false;
      socket.write(data, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    read() {
      socket.resume();
    },
    destroy(err, callback) {
      socket.destroy();
      callback(err);
    },
  });
  socket.on("data", (chunk) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("error", (err) => duplex.destroy(err));
  socket.on("close", () => duplex.destroy());
  Object.defineProperty(duplex, "tcpSocket", { value: socket });
  return duplex;
}

export interface TestResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Local port of the client's TCP connection (what the server should see as source port). */
  localPort: number;
  alpnProtocol?: string | false | null;
}

export interface TestRequestOptions {
  host?: string;
  port: number;
  tls?: boolean;
  method?: string;
  path?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  /** Bytes sent before the TLS ClientHello / HTTP request, in the same write. */
  prefix?: Buffer;
  cert?: string;
  key?: string;
  ALPNProtocols?: string[];
  maxVersion?: tls.SecureVersion;
  ciphers?: string;
}

export function request(opts: TestRequestOptions): Promise<TestResponse> {
  const host = opts.host ?? "127.0.0.1";
  const useTls = opts.tls ?? true;
  return new Promise((resolve, reject) => {
    let localPort = 0;
    const track = (tcp: net.Socket) => tcp.once("connect", () => (localPort = tcp.localPort ?? 0));
    const createConnection = () => {
      const transport = opts.prefix ? prefixedConnection(host, opts.port, opts.prefix) : undefined;
      if (transport) track((transport as unknown as { tcpSocket: net.Socket }).tcpSocket);
      if (!useTls) {
        if (transport) return transport;
        const tcp = net.connect(opts.port, host);
        track(tcp);
        return tcp;
      }
      const s = tls.connect({
        host,
        port: opts.port,
        ...(transport ? { socket: transport } : {}),
        rejectUnauthorized: false,
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
        ALPNProtocols: opts.ALPNProtocols ?? ["http/1.1"],
        ...(opts.maxVersion ? { maxVersion: opts.maxVersion } : {}),
        ...(opts.ciphers ? { ciphers: opts.ciphers } : {}),
      });
      if (!transport) track(s);
      return s;
    };
    const mod = useTls ? https : http;
    const req = mod.request(
      {
        host,
        port: opts.port,
        method: opts.method ?? "GET",
        path: opts.path ?? "/",
        headers: opts.headers,
        createConnection: createConnection as unknown as http.RequestOptions["createConnection"],
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            localPort,
            alpnProtocol: (res.socket as tls.TLSSocket).alpnProtocol,
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Resolves when the socket closes; rejects if it is still open after timeoutMs. */
export function closed(socket: net.Socket, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.closed) return resolve();
    const timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
    socket.on("error", () => {});
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function connectRaw(port: number, host = "127.0.0.1"): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host, () => resolve(s));
    s.once("error", reject);
  });
}

export function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

export function proxyV1(source: string, sourcePort: number, destination = "127.0.0.1", destinationPort = 443): Buffer {
  return Buffer.from(`PROXY TCP4 ${source} ${destination} ${sourcePort} ${destinationPort}\r\n`, "latin1");
}

export function proxyV2(source: [number, number, number, number], sourcePort: number, local = false): Buffer {
  const b = Buffer.alloc(28);
  Buffer.from("0d0a0d0a000d0a515549540a", "hex").copy(b, 0);
  b[12] = local ? 0x20 : 0x21;
  b[13] = 0x11;
  b.writeUInt16BE(12, 14);
  Buffer.from(source).copy(b, 16);
  Buffer.from([127, 0, 0, 1]).copy(b, 20);
  b.writeUInt16BE(sourcePort, 24);
  b.writeUInt16BE(443, 26);
  return b;
}
