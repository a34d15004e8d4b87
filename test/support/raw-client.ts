// A Fleetspeak client written straight from the wire spec, for testing the server: raw HTTPS
// requests with hand-built WrappedContactData frames. It shares no code with src/client, so the
// server is not only tested against code that shares its assumptions.
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from "node:http";
import { request } from "node:https";
import { constants as zlibConstants, createDeflate, type Deflate, deflateSync } from "node:zlib";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type ContactData,
  ContactDataSchema,
  type Message,
  MessageSchema,
  WrappedContactDataSchema,
} from "../../src/gen/fleetspeak/common_pb.js";
import { clientCertificate, derToPem } from "../../src/common/certs.js";

export interface RawClientOptions {
  host: string;
  port: number;
  /** PEM of the CA that signed the server certificate. */
  ca: string;
  servername?: string;
  key?: KeyObject;
  labels?: string[];
  /** Present no certificate at all in the TLS handshake. */
  noClientCertificate?: boolean;
  /** Content-Encoding: deflate: one zlib stream for the request body, sync-flushed per frame. */
  deflate?: boolean;
}

function uvarint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

function frame(payload: Uint8Array): Buffer {
  return Buffer.concat([uvarint(payload.length), payload]);
}

export type ContactInit = MessageInitShape<typeof ContactDataSchema>;

export function wrap(cd: ContactInit, labels: string[] = []): Buffer {
  const contact = create(ContactDataSchema, cd);
  const wcd = create(WrappedContactDataSchema, {
    contactData: toBinary(ContactDataSchema, contact),
    clientLabels: labels,
  });
  return Buffer.from(toBinary(WrappedContactDataSchema, wcd));
}

/** A message from this client to a server service. */
export function outMessage(service: string, type: string, data?: Message["data"]): Message {
  return create(MessageSchema, {
    source: { serviceName: service },
    sourceMessageId: randomBytes(16),
    destination: { serviceName: service },
    messageType: type,
    ...(data ? { data } : {}),
  });
}

/** Reads uvarint-framed ContactData from a response stream. */
class FrameReader {
  private buf = Buffer.alloc(0);
  private readonly frames: ContactData[] = [];
  private waiters: Array<() => void> = [];
  ended = false;
  error: Error | undefined;

  constructor(res: IncomingMessage) {
    res.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      for (;;) {
        let len = 0;
        let mul = 1;
        let i = 0;
        let ok = false;
        while (i < this.buf.length) {
          const b = this.buf[i++]!;
          len += (b & 0x7f) * mul;
          mul *= 128;
          if (!(b & 0x80)) {
            ok = true;
            break;
          }
        }
        if (!ok || this.buf.length < i + len) break;
        this.frames.push(fromBinary(ContactDataSchema, this.buf.subarray(i, i + len)));
        this.buf = this.buf.subarray(i + len);
      }
      this.notify();
    });
    res.on("end", () => {
      this.ended = true;
      this.notify();
    });
    res.on("error", (e) => {
      this.error = e;
      this.ended = true;
      this.notify();
    });
    res.on("close", () => {
      this.ended = true;
      this.notify();
    });
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The next frame, or undefined once the stream has ended. */
  async next(timeoutMs = 10_000): Promise<ContactData | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0 && !this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.frames.shift();
  }
}

/** Writes request-body bytes, through one zlib stream flushed per write when compressing. */
class BodyWriter {
  private readonly deflate: Deflate | undefined;

  constructor(
    private readonly req: ClientRequest,
    compress: boolean,
  ) {
    if (compress) {
      this.deflate = createDeflate();
      this.deflate.on("data", (b: Buffer) => req.write(b));
    }
  }

  write(bytes: Buffer): void {
    if (!this.deflate) {
      this.req.write(bytes);
      return;
    }
    this.deflate.write(bytes);
    this.deflate.flush(zlibConstants.Z_SYNC_FLUSH);
  }
}

export class RawStream {
  constructor(
    readonly req: ClientRequest,
    readonly res: IncomingMessage,
    readonly reader: FrameReader,
    readonly first: ContactData,
    private readonly body: BodyWriter,
  ) {}

  send(cd: ContactInit): void {
    this.body.write(frame(wrap(cd)));
  }

  next(timeoutMs?: number): Promise<ContactData | undefined> {
    return this.reader.next(timeoutMs);
  }

  close(): void {
    this.req.destroy();
    this.res.destroy();
  }
}

export class RawClient {
  readonly key: KeyObject;
  readonly certDer: Buffer;
  readonly clientId: Buffer;

  constructor(private readonly opts: RawClientOptions) {
    this.key = opts.key ?? generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    this.certDer = clientCertificate(this.key);
    // ClientID: first 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo.
    const spki = createPublicKey(this.key).export({ type: "spki", format: "der" });
    this.clientId = createHash("sha256").update(spki).digest().subarray(0, 8);
  }

  get clientIdHex(): string {
    return this.clientId.toString("hex");
  }

  private requestOptions(path: string, headers: Record<string, string> = {}) {
    return {
      host: this.opts.host,
      port: this.opts.port,
      path,
      method: "POST",
      ca: this.opts.ca,
      servername: this.opts.servername ?? "localhost",
      ...(this.opts.noClientCertificate
        ? {}
        : { key: this.key.export({ type: "sec1", format: "pem" }) as string, cert: derToPem(this.certDer) }),
      agent: false as const,
      headers,
    };
  }

  /** One poll; resolves with the status and the parsed ContactData (if 200). */
  poll(cd: ContactInit): Promise<{ status: number; cd?: ContactData; text: string; headers: IncomingHttpHeaders }> {
    return this.postRaw("/message", wrap(cd, this.opts.labels ?? []));
  }

  /** POSTs a body as is (compressed if configured); parses a 200 answer as ContactData. */
  postRaw(path: string, raw: Buffer): Promise<{ status: number; cd?: ContactData; text: string; headers: IncomingHttpHeaders }> {
    const body = this.opts.deflate ? deflateSync(raw) : raw;
    const headers: Record<string, string> = { "content-length": String(body.length) };
    if (this.opts.deflate) headers["content-encoding"] = "deflate";
    return new Promise((resolve, reject) => {
      const req = request(this.requestOptions(path, headers), (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const all = Buffer.concat(chunks);
          if (res.statusCode === 200) {
            resolve({ status: 200, cd: fromBinary(ContactDataSchema, all), text: "", headers: res.headers });
          } else resolve({ status: res.statusCode ?? 0, text: all.toString(), headers: res.headers });
        });
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  /** Opens a stream: magic + initial frame; resolves after the first response frame. */
  stream(cd: ContactInit): Promise<RawStream> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { "transfer-encoding": "chunked", connection: "close" };
      if (this.opts.deflate) headers["content-encoding"] = "deflate";
      const req = request(this.requestOptions("/streaming-message", headers));
      const body = new BodyWriter(req, this.opts.deflate ?? false);
      req.on("response", async (res) => {
        if (res.statusCode !== 200) {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().trim()}`)));
          return;
        }
        const reader = new FrameReader(res);
        try {
          const first = await reader.next();
          if (!first) throw new Error("stream ended before the first frame");
          resolve(new RawStream(req, res, reader, first, body));
        } catch (e) {
          reject(e);
        }
      });
      req.on("error", reject);
      body.write(Buffer.concat([Buffer.from([0x01, 0x10, 0xee, 0xf1]), frame(wrap(cd, this.opts.labels ?? []))]));
    });
  }
}
