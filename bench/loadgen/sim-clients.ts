// Simulated Fleetspeak clients: one object per client, one raw TLS socket each, no node:http.
// A StreamClient holds a /streaming-message connection as the Go client does (initial frame with
// absolute AllowedMessages, later frames with deltas, acknowledges what it receives with a system
// MessageAck, counts the server's per-frame acks, reconnects at once when a stream ends). A
// PollClient polls /message on a kept-alive connection. Both report to their ClientHost.
import * as tls from "node:tls";
import { fromBinary } from "@bufbuild/protobuf";
import { bytesToHex } from "../../src/common/ids.js";
import { type ContactData, ContactDataSchema, type Message } from "../../src/gen/fleetspeak/common_pb.js";
import {
  connectPacket,
  MQTT,
  type MqttPacket,
  MqttParser,
  parsePublish,
  pubackPacket,
  subscribePacket,
} from "./mqtt.js";
import {
  type ContactInit,
  ContactFrameReader,
  HttpResponseParser,
  type MessageBatchEncoder,
  messageAck,
  nowMs,
  pollRequest,
  probeTime,
  type ResponseSink,
  streamFrameChunk,
  streamOpening,
  wrappedContact,
} from "./wire.js";

export interface ClientTarget {
  host: string;
  port: number;
  /** Source address to bind (spreads connections over loopback addresses). */
  localAddress?: string;
  servername: string;
  caPem: string;
  /** Services the client says it runs (AllowedMessages keys); "system" is always included. */
  services: string[];
}

export interface Identity {
  /** Client ID, 16 hex characters. */
  id: string;
  keyPem: string;
  certPem: string;
}

/** What the simulated clients tell the process that runs them. */
export interface ClientHost {
  readonly target: ClientTarget;
  readonly stopping: boolean;
  handshakeDone(c: SimClient, ms: number): void;
  /** A stream got its first frame (an MQTT client its SUBACK): it is connected. */
  streamOpened(c: SimClient, ms: number): void;
  /** The connection ended; `error` says why when it was not a normal end. */
  ended(c: SimClient, wasOpen: boolean, error?: string): void;
  /** A message arrived; `key` identifies it (duplicates), `insertedAt` is a probe's send time. */
  received(key: string, insertedAt: number | undefined, at: number): void;
  /** The server acknowledged a stream frame carrying `ingestMessages` client messages. */
  frameAcked(c: StreamClient, ingestMessages: number): void;
  /** The server acknowledged a frame carrying MessageAcks for these messages (hex IDs). */
  acksStored?(ids: string[]): void;
  pollDone(c: PollClient, ms: number, newConnection: boolean): void;
  /** Marks a client as having acks to send at the next flush. */
  ackPending(c: SimClient): void;
}

const INBOX = 100n;
/** Go's http.Transport TLSHandshakeTimeout in Fleetspeak's client. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export abstract class SimClient {
  socket: tls.TLSSocket | undefined;
  /** Set by close(): the end of the connection is ours, not a failure. */
  closedByUs = false;
  protected pendingAcks: Uint8Array[] = [];
  /** Messages processed per service since the last frame (AllowedMessages deltas). */
  protected processed = new Map<string, number>();

  constructor(
    readonly index: number,
    readonly identity: Identity,
    protected readonly host: ClientHost,
  ) {}

  /**
   * Opens this client's TLS connection (it becomes `socket`): `onSecure` after the handshake, each
   * chunk read to `feed` (a throw ends the connection as an error), and `onClose` with the first
   * error seen, if any, once it has closed.
   */
  protected openSocket(
    onSecure: () => void,
    feed: (d: Buffer) => void,
    onClose: (error: string | undefined) => void,
  ): tls.TLSSocket {
    const t = this.host.target;
    const started = nowMs();
    const socket = tls.connect({
      host: t.host,
      port: t.port,
      ...(t.localAddress ? { localAddress: t.localAddress } : {}),
      servername: t.servername,
      ca: t.caPem,
      key: this.identity.keyPem,
      cert: this.identity.certPem,
      ALPNProtocols: ["http/1.1"],
    });
    socket.setNoDelay(true);
    // As Go's transport (TLSHandshakeTimeout) and our client: a handshake nobody answers is given
    // up and retried. (A connection node:cluster's primary was handing to a worker as it died is
    // never answered.)
    const handshake = setTimeout(() => socket.destroy(new Error("TLS handshake timed out")), HANDSHAKE_TIMEOUT_MS);
    socket.once("close", () => clearTimeout(handshake));
    socket.once("secureConnect", () => {
      clearTimeout(handshake);
      this.host.handshakeDone(this, nowMs() - started);
      onSecure();
    });
    this.socket = socket;
    let error: string | undefined;
    socket.on("data", (d: Buffer) => {
      try {
        feed(d);
      } catch (e) {
        error = (e as Error).message;
        socket.destroy();
      }
    });
    socket.on("error", (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
    });
    socket.on("close", () => {
      if (this.socket === socket) this.socket = undefined;
      onClose(error);
    });
    return socket;
  }

  protected noteReceived(messages: Message[]): void {
    if (messages.length === 0) return;
    const at = nowMs();
    for (const m of messages) {
      this.host.received(bytesToHex(m.messageId), probeTime(m), at);
      this.pendingAcks.push(m.messageId);
      const service = m.destination?.serviceName ?? "";
      this.processed.set(service, (this.processed.get(service) ?? 0) + 1);
    }
    this.host.ackPending(this);
  }

  protected allowedAbsolute(): Record<string, bigint> {
    const out: Record<string, bigint> = { system: INBOX };
    for (const s of this.host.target.services) out[s] = INBOX;
    return out;
  }

  protected takeAllowedDeltas(): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const [s, n] of this.processed) out[s] = BigInt(n);
    this.processed.clear();
    return out;
  }

  abstract flushAcks(): void;
  abstract close(): void;
}

export class StreamClient extends SimClient implements ResponseSink {
  private parser: HttpResponseParser | undefined;
  private frames: ContactFrameReader | undefined;
  private status = 0;
  private errorBody = "";
  private opened = false;
  private openedAt = 0;
  private nonce = 0n;
  private doneSending = false;
  /** Each frame sent and not yet acknowledged, oldest first: its client messages and acked IDs. */
  private unacked: { ingest: number; acks?: Uint8Array[] }[] = [];
  private connectStarted = 0;
  /** The last refused connection's Retry-After, in ms; 0 when it had none. */
  retryAfterMs = 0;

  /** The current (or last) stream was ended by the server's done_sending. */
  get toldDoneSending(): boolean {
    return this.doneSending;
  }

  get isOpen(): boolean {
    return this.opened && !this.doneSending && this.socket !== undefined;
  }

  get outstandingFrames(): number {
    return this.unacked.length;
  }

  connect(): void {
    this.connectStarted = nowMs();
    this.status = 0;
    this.errorBody = "";
    this.retryAfterMs = 0;
    this.opened = false;
    this.doneSending = false;
    this.unacked = [];
    this.closedByUs = false;
    this.parser = new HttpResponseParser(this);
    this.frames = new ContactFrameReader();
    const socket = this.openSocket(
      () => {
        const t = this.host.target;
        const first = wrappedContact({ AllowedMessages: this.allowedAbsolute() });
        socket.write(streamOpening(`${t.host}:${t.port}`, first));
      },
      (d) => this.parser!.push(d),
      (failure) => {
        // As the Go client: what the server did not acknowledge is sent again on the next stream.
        for (const frame of this.unacked) if (frame.acks) this.pendingAcks.push(...frame.acks);
        this.unacked = [];
        if (this.pendingAcks.length > 0) this.host.ackPending(this);
        let error = failure;
        const wasOpen = this.opened;
        if (!wasOpen && error === undefined) {
          error = this.status === 0 ? "closed before a response" : `HTTP ${this.status} ${this.errorBody.trim().slice(0, 80)}`;
        }
        // After done_sending, and when we close it, the end of a stream is normal.
        if (this.closedByUs || (this.doneSending && wasOpen)) error = undefined;
        this.opened = false;
        this.host.ended(this, wasOpen, error);
      },
    );
  }

  onHead(status: number, retryAfterMs?: number): void {
    this.status = status;
    this.retryAfterMs = retryAfterMs ?? 0;
  }

  onBody(bytes: Buffer): void {
    if (this.status !== 200) {
      if (this.errorBody.length < 200) this.errorBody += bytes.toString("latin1");
      return;
    }
    for (const cd of this.frames!.push(bytes)) this.onFrame(cd);
  }

  onComplete(): void {
    // The server ended its response: the stream is over.
    this.socket?.destroy();
  }

  private onFrame(cd: ContactData): void {
    if (!this.opened) {
      this.opened = true;
      this.openedAt = nowMs();
      this.nonce = cd.sequencingNonce;
      this.host.streamOpened(this, this.openedAt - this.connectStarted);
    }
    if (cd.ackIndex !== 0n) {
      const frame = this.unacked.shift();
      this.host.frameAcked(this, frame?.ingest ?? 0);
      if (frame?.acks) this.host.acksStored?.(frame.acks.map(bytesToHex));
    }
    if (cd.doneSending) {
      this.doneSending = true;
      // As the Go client: stop sending, close once nothing is outstanding.
      if (this.unacked.length === 0) this.socket?.destroy();
    } else if (this.doneSending && this.unacked.length === 0) {
      this.socket?.destroy();
    }
    this.noteReceived(cd.messages);
  }

  /** Sends a frame: `cd` with the stream's nonce, and `batch`'s messages when given. */
  private sendFrame(cd: ContactInit, ingestMessages: number, acks?: Uint8Array[], batch?: MessageBatchEncoder): boolean {
    const s = this.socket;
    if (!s || !this.opened || this.doneSending) return false;
    this.unacked.push({ ingest: ingestMessages, ...(acks ? { acks } : {}) });
    const head = { sequencingNonce: this.nonce, ...cd };
    s.write(streamFrameChunk(batch ? batch.wrapped(head) : wrappedContact(head)));
    return true;
  }

  flushAcks(): void {
    if (this.pendingAcks.length === 0) return;
    if (!this.isOpen) return; // acked on the next connection's frames instead
    const ids = this.pendingAcks;
    this.pendingAcks = [];
    this.sendFrame({ messages: [messageAck(ids)], AllowedMessages: this.takeAllowedDeltas() }, 0, ids);
  }

  /** Sends one frame of `count` messages for `service`; false if the stream cannot take it now. */
  sendMessages(batch: MessageBatchEncoder): boolean {
    return this.sendFrame({ AllowedMessages: this.takeAllowedDeltas() }, batch.count, undefined, batch);
  }

  close(): void {
    this.closedByUs = true;
    this.socket?.destroy();
  }
}

export class PollClient extends SimClient implements ResponseSink {
  private parser: HttpResponseParser | undefined;
  private status = 0;
  private body: Buffer[] = [];
  private busy = false;
  private sentAt = 0;
  private freshConnection = false;
  private nonce = 0n;

  get inFlight(): boolean {
    return this.busy;
  }

  /** One poll; on an idle kept-alive connection if there is one. False if a poll is running. */
  poll(): boolean {
    if (this.busy) return false;
    this.busy = true;
    if (this.socket && !this.socket.destroyed) {
      this.freshConnection = false;
      this.send();
      return true;
    }
    this.freshConnection = true;
    this.parser = new HttpResponseParser(this);
    this.openSocket(
      () => this.send(),
      (d) => this.parser!.push(d),
      (failure) => {
        if (this.busy) {
          this.busy = false;
          this.host.ended(this, false, failure ?? "connection closed during a poll");
        }
      },
    );
    return true;
  }

  private send(): void {
    const t = this.host.target;
    const cd: ContactInit = { sequencingNonce: this.nonce, AllowedMessages: this.allowedAbsolute() };
    if (this.pendingAcks.length > 0) {
      cd.messages = [messageAck(this.pendingAcks)];
      this.pendingAcks = [];
    }
    this.status = 0;
    this.body = [];
    this.parser!.reset();
    this.sentAt = nowMs();
    this.socket!.write(pollRequest(`${t.host}:${t.port}`, wrappedContact(cd)));
  }

  onHead(status: number): void {
    this.status = status;
  }

  onBody(bytes: Buffer): void {
    this.body.push(bytes);
  }

  onComplete(): void {
    const ms = nowMs() - this.sentAt;
    this.busy = false;
    if (this.status !== 200) {
      this.host.ended(this, false, `HTTP ${this.status} ${Buffer.concat(this.body).toString().trim().slice(0, 80)}`);
      this.socket?.destroy();
      return;
    }
    const cd = fromBinary(ContactDataSchema, Buffer.concat(this.body));
    this.nonce = cd.sequencingNonce;
    this.host.pollDone(this, ms, this.freshConnection);
    this.noteReceived(cd.messages);
  }

  /** Acks go with the next poll. */
  flushAcks(): void {}

  close(): void {
    this.closedByUs = true;
    this.busy = false;
    this.socket?.destroy();
  }
}

/**
 * The peer's client: an MQTT 3.1.1 connection over TLS (certificate signed by the bench CA),
 * subscribed at QoS 1 to its own topic c/<client id>; PUBACKs what it receives. Payloads are
 * probes like the Fleetspeak messages' (8 bytes: insert time).
 */
export class MqttClient extends SimClient {
  private opened = false;
  private connectStarted = 0;

  get isOpen(): boolean {
    return this.opened;
  }

  connect(): void {
    this.connectStarted = nowMs();
    this.opened = false;
    this.closedByUs = false;
    const parser = new MqttParser();
    const socket = this.openSocket(
      () => socket.write(connectPacket(this.identity.id)),
      (d) => {
        for (const p of parser.push(d)) this.onPacket(p);
      },
      (failure) => {
        let error = failure;
        const wasOpen = this.opened;
        this.opened = false;
        if (!wasOpen && error === undefined) error = "MQTT connection closed before SUBACK";
        if (wasOpen && error === undefined && !this.closedByUs) error = "MQTT connection closed by the broker";
        this.host.ended(this, wasOpen, this.closedByUs ? undefined : error);
      },
    );
  }

  private onPacket(p: MqttPacket): void {
    if (p.type === MQTT.CONNACK) {
      if (p.body[1] !== 0) throw new Error(`MQTT CONNACK refused, code ${p.body[1]}`);
      this.socket?.write(subscribePacket(1, `c/${this.identity.id}`));
    } else if (p.type === MQTT.SUBACK) {
      if (p.body[2] === 0x80) throw new Error("MQTT SUBSCRIBE refused");
      this.opened = true;
      this.host.streamOpened(this, nowMs() - this.connectStarted);
    } else if (p.type === MQTT.PUBLISH) {
      const { packetId, payload } = parsePublish(p);
      const at = nowMs();
      const insertedAt = payload.length >= 8 ? payload.readDoubleLE(0) : undefined;
      // Probes carry a sequence number after the time, so duplicates can be told apart.
      this.host.received(payload.toString("hex", 0, Math.min(16, payload.length)), insertedAt, at);
      if (packetId !== 0) this.socket?.write(pubackPacket(packetId));
    }
  }

  flushAcks(): void {}

  close(): void {
    this.closedByUs = true;
    this.socket?.destroy();
  }
}
