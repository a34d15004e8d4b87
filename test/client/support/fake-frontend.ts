// A small Fleetspeak frontend written from the wire-protocol spec, for testing the client before
// (and independently of) our real server: HTTPS with a requested-but-unverified client
// certificate, POST /message, POST /streaming-message (magic, uvarint frames, one ack per frame,
// pushes, done_sending), GET /files/. It keeps what clients sent and lets a test queue messages
// for a client, honouring the client's AllowedMessages tokens as a real server must.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { X509Certificate, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Readable } from "node:stream";
import type { TLSSocket } from "node:tls";
import { createInflate } from "node:zlib";
import { decodeCertificateHeader } from "../../../src/common/cert-header.js";
import { type CertAndKey, createServerCertificate } from "../../../src/common/certs.js";
import { encodeStreamFrame, StreamFrameDecoder } from "../../../src/common/framing.js";
import { clientIdFromSpki, clientIdToHex, clientMessageId } from "../../../src/common/ids.js";
import {
  AddressSchema,
  type ContactData,
  ContactDataSchema,
  type Message,
  MessageSchema,
  WrappedContactDataSchema,
} from "../../../src/gen/fleetspeak/common_pb.js";
import { MessageAckDataSchema } from "../../../src/gen/fleetspeak/system_pb.js";

export interface ReceivedMessage {
  clientId: string;
  message: Message;
}

export interface Contact {
  clientId: string;
  streaming: boolean;
  labels: string[];
  allowed: Record<string, bigint>;
  nonce: bigint;
  messages: number;
}

export interface FakeFrontendOptions {
  ca: CertAndKey;
  /** Names the certificate is valid for; default 127.0.0.1 and localhost. */
  hosts?: string[];
  /** 0 (default) lets the OS choose; pass the old port to "restart" a server. */
  port?: number;
  /** Read the client certificate from this header instead of TLS (header frontend modes). */
  certificateHeader?: string;
  /** Send done_sending this long after a stream starts (default never). */
  doneSendingAfterMs?: number;
  /** Answer /streaming-message with this status instead (to test failover). */
  streamingStatus?: number;
}

interface StreamState {
  res: ServerResponse;
  closed: boolean;
}

interface ClientRecord {
  pending: Message[];
  tokens: Map<string, bigint> | undefined;
  stream: StreamState | undefined;
  nonce: bigint;
}

export class FakeFrontend {
  readonly received: ReceivedMessage[] = [];
  readonly contacts: Contact[] = [];
  /** Problems with what clients sent (a real server would drop such messages). */
  readonly violations: string[] = [];
  readonly files = new Map<string, Buffer>();
  /** Every /streaming-message request's Content-Encoding and headers, for inspection. */
  readonly requestHeaders: IncomingMessage["headers"][] = [];
  private readonly clients = new Map<string, ClientRecord>();
  private readonly sockets = new Set<Socket>();
  private waiters: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    private readonly opts: FakeFrontendOptions,
    /** The certificate this server presents. */
    readonly serverCert: CertAndKey,
  ) {}

  static async start(opts: FakeFrontendOptions): Promise<FakeFrontend> {
    const cert = createServerCertificate("test", opts.ca, opts.hosts ?? ["127.0.0.1", "localhost"]);
    const server = createServer({
      cert: cert.certPem,
      key: cert.keyPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.2",
    });
    const ff = new FakeFrontend(server, opts, cert);
    server.requestTimeout = 0;
    server.headersTimeout = 10_000;
    server.keepAliveTimeout = 30_000;
    server.on("connection", (s: Socket) => {
      ff.sockets.add(s);
      s.once("close", () => ff.sockets.delete(s));
    });
    server.on("secureConnection", (s: TLSSocket) => {
      ff.sockets.add(s);
      s.once("close", () => ff.sockets.delete(s));
    });
    server.on("request", (req, res) => {
      ff.handle(req, res).catch((e) => {
        ff.violations.push(`handler error: ${(e as Error).message}`);
        res.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
    });
    return ff;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Closes the listener and cuts every connection, as a crashing server would. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Queues a message for a client; pushed at once if it has an open stream with tokens. */
  send(clientId: string, serviceName: string, messageType: string, data?: Message["data"]): Message {
    const m = create(MessageSchema, {
      messageId: randomBytes(32),
      source: create(AddressSchema, { serviceName }),
      destination: create(AddressSchema, { clientId: Buffer.from(clientId, "hex"), serviceName }),
      messageType,
      data,
    });
    this.sendMessage(clientId, m);
    return m;
  }

  sendMessage(clientId: string, m: Message): void {
    const rec = this.record(clientId);
    rec.pending.push(m);
    this.pushPending(clientId);
  }

  /** Resolves with the first received message matching `pred` (already received ones count). */
  async waitFor(pred: (r: ReceivedMessage) => boolean, timeoutMs = 20_000, what = "message"): Promise<ReceivedMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.received.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${what}; received: ${this.received.map((r) => `${r.message.source?.serviceName}/${r.message.messageType}`).join(", ")}`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits until `pred` holds, polling every 50 ms. */
  async until(pred: () => boolean, timeoutMs = 20_000, what = "condition"): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** IDs of server messages the client acknowledged with MessageAck. */
  ackedIds(): Set<string> {
    const out = new Set<string>();
    for (const r of this.received) {
      if (r.message.messageType !== "MessageAck" || !r.message.data) continue;
      const ack = anyUnpack(r.message.data, MessageAckDataSchema);
      for (const id of ack?.messageIds ?? []) out.add(Buffer.from(id).toString("hex"));
    }
    return out;
  }

  private record(clientId: string): ClientRecord {
    let rec = this.clients.get(clientId);
    if (!rec) {
      rec = { pending: [], tokens: undefined, stream: undefined, nonce: 0n };
      this.clients.set(clientId, rec);
    }
    return rec;
  }

  private identify(req: IncomingMessage): string {
    let der: Buffer | undefined;
    if (this.opts.certificateHeader) {
      const v = req.headers[this.opts.certificateHeader.toLowerCase()];
      der = decodeCertificateHeader(String(Array.isArray(v) ? v[0] : (v ?? "")));
    } else {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      if (!peer?.raw) throw new Error("no client certificate");
      der = peer.raw;
    }
    const spki = new X509Certificate(der).publicKey.export({ type: "spki", format: "der" });
    return clientIdToHex(clientIdFromSpki(spki));
  }

  private body(req: IncomingMessage): Readable {
    if (req.headers["content-encoding"] === "deflate") return req.pipe(createInflate());
    return req;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? "";
    if (url.startsWith("/files/")) {
      const file = this.files.get(url);
      if (!file) {
        res.writeHead(404).end("file not found\n");
        return;
      }
      res.writeHead(200).end(file);
      return;
    }
    let clientId: string;
    try {
      clientId = this.identify(req);
    } catch (e) {
      res.writeHead(400).end(`${(e as Error).message}\n`);
      return;
    }
    if (url === "/message" && req.method === "POST") {
      const chunks: Buffer[] = [];
      for await (const c of this.body(req)) chunks.push(c as Buffer);
      const cd = this.ingest(clientId, Buffer.concat(chunks), false);
      const out = this.take(clientId, this.record(clientId).pending.length);
      res.writeHead(200, { "Content-Type": "application/octet-stream" });
      res.end(toBinary(ContactDataSchema, create(ContactDataSchema, { sequencingNonce: cd, messages: out })));
      return;
    }
    if (url === "/streaming-message" && req.method === "POST") {
      this.requestHeaders.push(req.headers);
      if (this.opts.streamingStatus) {
        res.writeHead(this.opts.streamingStatus).end();
        return;
      }
      await this.stream(clientId, req, res);
      return;
    }
    res.writeHead(404).end("404 page not found\n");
  }

  /** Records one WrappedContactData; returns the nonce to answer with. */
  private ingest(clientId: string, wcdBytes: Uint8Array, streaming: boolean): bigint {
    const wcd = fromBinary(WrappedContactDataSchema, wcdBytes);
    const cd = fromBinary(ContactDataSchema, wcd.contactData);
    const rec = this.record(clientId);
    const allowed = cd.AllowedMessages;
    if (!streaming || rec.tokens === undefined || !rec.stream) {
      rec.tokens = new Map(Object.entries(allowed));
    } else {
      for (const [k, v] of Object.entries(allowed)) rec.tokens.set(k, (rec.tokens.get(k) ?? 0n) + v);
    }
    this.contacts.push({
      clientId,
      streaming,
      labels: [...wcd.clientLabels],
      allowed,
      nonce: cd.sequencingNonce,
      messages: cd.messages.length,
    });
    if (cd.messages.length > 100) this.violations.push(`${cd.messages.length} messages in one ContactData`);
    for (const m of cd.messages) {
      if (!m.source?.serviceName) this.violations.push("message without source.service_name");
      if (m.sourceMessageId.length === 0) this.violations.push("message without source_message_id");
      if (m.destination?.clientId.length) this.violations.push("client message with destination.client_id");
      if (m.messageId.length) this.violations.push("client set message_id");
      m.source = create(AddressSchema, { clientId: Buffer.from(clientId, "hex"), serviceName: m.source?.serviceName ?? "" });
      m.messageId = clientMessageId(m.source.clientId, m.source.serviceName, m.sourceMessageId);
      this.received.push({ clientId, message: m });
    }
    for (const w of this.waiters.splice(0)) w();
    rec.nonce = BigInt(`0x${randomBytes(8).toString("hex")}`);
    return rec.nonce;
  }

  /** Takes up to `max` pending messages the client has tokens for. */
  private take(clientId: string, max: number): Message[] {
    const rec = this.record(clientId);
    const out: Message[] = [];
    const keep: Message[] = [];
    for (const m of rec.pending) {
      const svc = m.destination?.serviceName ?? "";
      const tokens = rec.tokens?.get(svc);
      if (out.length < Math.min(max, 100) && (rec.tokens === undefined || (tokens !== undefined && tokens > 0n))) {
        if (rec.tokens && tokens !== undefined) rec.tokens.set(svc, tokens - 1n);
        out.push(m);
      } else {
        keep.push(m);
      }
    }
    rec.pending = keep;
    return out;
  }

  private pushPending(clientId: string): void {
    const rec = this.record(clientId);
    const s = rec.stream;
    if (!s || s.closed) return;
    const out = this.take(clientId, rec.pending.length);
    if (out.length === 0) return;
    s.res.write(
      encodeStreamFrame(toBinary(ContactDataSchema, create(ContactDataSchema, { sequencingNonce: rec.nonce, messages: out }))),
    );
  }

  private async stream(clientId: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const decoder = new StreamFrameDecoder({ expectMagic: true, where: `client ${clientId}` });
    const rec = this.record(clientId);
    let first = true;
    let ack = 0n;
    const state: StreamState = { res, closed: false };
    let doneTimer: NodeJS.Timeout | undefined;
    const close = () => {
      state.closed = true;
      clearTimeout(doneTimer);
      if (rec.stream === state) rec.stream = undefined;
    };
    res.once("close", close);
    try {
      for await (const chunk of this.body(req)) {
        for (const frame of decoder.push(chunk as Buffer)) {
          if (state.closed) return;
          const nonce = this.ingest(clientId, frame, !first);
          if (first) {
            first = false;
            rec.stream = state;
            const msgs = this.take(clientId, rec.pending.length);
            res.writeHead(200);
            const cd: ContactData = create(ContactDataSchema, { sequencingNonce: nonce, messages: msgs });
            res.write(encodeStreamFrame(toBinary(ContactDataSchema, cd)));
            if (this.opts.doneSendingAfterMs !== undefined) {
              doneTimer = setTimeout(() => {
                if (state.closed) return;
                rec.stream = undefined;
                res.write(encodeStreamFrame(toBinary(ContactDataSchema, create(ContactDataSchema, { doneSending: true }))));
              }, this.opts.doneSendingAfterMs);
            }
          } else {
            ack++;
            res.write(encodeStreamFrame(toBinary(ContactDataSchema, create(ContactDataSchema, { ackIndex: ack }))));
            this.pushPending(clientId);
          }
        }
      }
    } catch (e) {
      this.violations.push(`stream from ${clientId}: ${(e as Error).message}`);
    } finally {
      close();
      res.destroy();
    }
  }
}
