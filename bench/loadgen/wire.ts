// The bytes a simulated client writes and reads, built by hand from the wire spec
// (../shared/reference/wire-protocol.md §3, §4): an HTTP/1.1 request written on a raw TLS socket,
// WrappedContactData frames (magic once, then uvarint-length-prefixed) in chunked encoding, and an
// incremental parser for the response (status line, headers, chunked or Content-Length body).
// Hand-written rather than node:https so that one load process can hold thousands of clients.
import { randomBytes } from "node:crypto";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, timestampNow } from "@bufbuild/protobuf/wkt";
import { encodeStreamFrame, encodeUvarint, MAGIC_BYTES, StreamFrameDecoder } from "../../src/common/framing.js";
import {
  type ContactData,
  ContactDataSchema,
  type Message,
  Message_Priority,
  MessageSchema,
  WrappedContactDataSchema,
} from "../../src/gen/fleetspeak/common_pb.js";
import { MessageAckDataSchema } from "../../src/gen/fleetspeak/system_pb.js";

/**
 * Type URL of the payload the benchmarks insert: float64 LE wall-clock ms at insert, then a
 * uint32 LE sequence number (so that MQTT probes, which have no message ID, can be told apart).
 */
export const PROBE_TYPE_URL = "type.googleapis.com/fleetspeak.bench.Probe";

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export function probePayload(insertedAtMs: number, seq: number, size = 16): Buffer {
  const b = Buffer.alloc(Math.max(12, size));
  b.writeDoubleLE(insertedAtMs, 0);
  b.writeUInt32LE(seq >>> 0, 8);
  return b;
}

/** The insert time a probe message carries, or undefined for other messages. */
export function probeTime(m: Message): number | undefined {
  if (m.data?.typeUrl !== PROBE_TYPE_URL || m.data.value.length < 8) return undefined;
  return Buffer.from(m.data.value.buffer, m.data.value.byteOffset, 8).readDoubleLE(0);
}

export type ContactInit = MessageInitShape<typeof ContactDataSchema>;

/** A serialized WrappedContactData around the given ContactData. */
export function wrappedContact(cd: ContactInit, labels: string[] = []): Buffer {
  const contactData = toBinary(ContactDataSchema, create(ContactDataSchema, { clientClock: timestampNow(), ...cd }));
  return Buffer.from(toBinary(WrappedContactDataSchema, create(WrappedContactDataSchema, { contactData, clientLabels: labels })));
}

/** One HTTP/1.1 chunk. */
export function chunk(payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${payload.length.toString(16)}\r\n`), payload, CRLF]);
}
const CRLF = Buffer.from("\r\n");

export function streamRequestHead(host: string): Buffer {
  return Buffer.from(
    `POST /streaming-message HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: fleetspeak-bench\r\n` +
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
  );
}

/** Request head and the first body chunk (magic + initial frame) of a stream. */
export function streamOpening(host: string, wcd: Buffer): Buffer {
  return Buffer.concat([streamRequestHead(host), chunk(Buffer.concat([MAGIC_BYTES, encodeStreamFrame(wcd)]))]);
}

/** A later stream frame as one chunk. */
export function streamFrameChunk(wcd: Buffer): Buffer {
  return chunk(encodeStreamFrame(wcd));
}

export function pollRequest(host: string, wcd: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(
      `POST /message HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: fleetspeak-bench\r\n` +
        `Content-Length: ${wcd.length}\r\n\r\n`,
    ),
    wcd,
  ]);
}

/** The system MessageAck a client sends for messages it processed. */
export function messageAck(messageIds: Uint8Array[]): Message {
  return create(MessageSchema, {
    source: { serviceName: "system" },
    sourceMessageId: randomBytes(16),
    destination: { serviceName: "system" },
    messageType: "MessageAck",
    priority: Message_Priority.HIGH,
    background: true,
    data: anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds })),
  });
}

/** A client message for a server service, `size` bytes of payload. */
export function clientMessage(service: string, size: number): Message {
  return create(MessageSchema, {
    source: { serviceName: service },
    sourceMessageId: randomBytes(16),
    destination: { serviceName: service },
    messageType: "BenchData",
    data: { typeUrl: "type.googleapis.com/fleetspeak.bench.Data", value: randomBytes(size) },
  });
}

/**
 * Frames of `count` client messages (as clientMessage makes them) for one service, encoded around
 * Messages encoded once: each frame gets fresh random source_message_ids, so that the server stores
 * every message as new, and its own ContactData fields; the payloads are the same random bytes in
 * every frame. Encoding each frame's messages with @bufbuild/protobuf cost ~20 µs of CPU per
 * message, half of the load generator's CPU in the ingest benchmark, and on a 2-core machine that
 * CPU is taken from the server being measured. Protobuf allows a message's fields in any order and
 * a repeated field's entries anywhere, so the ContactData is its other fields followed by the
 * pre-encoded `messages` entries.
 */
export class MessageBatchEncoder {
  /** `count` × (ContactData field 2, length, Message). */
  private readonly entries: Buffer;
  /** Where each entry's source_message_id (16 bytes) starts in `entries`. */
  private readonly idOffsets: number[] = [];

  constructor(service: string, readonly count: number, size: number) {
    const marker = randomBytes(16);
    const m = clientMessage(service, size);
    m.sourceMessageId = marker;
    const encoded = Buffer.from(toBinary(MessageSchema, m));
    const idAt = encoded.indexOf(marker);
    if (idAt < 0 || encoded.indexOf(marker, idAt + 1) >= 0) throw new Error("source_message_id not found once in the encoded Message");
    const entry = Buffer.concat([Buffer.from([(2 << 3) | 2]), encodeUvarint(encoded.length), encoded]);
    const idInEntry = entry.length - encoded.length + idAt;
    this.entries = Buffer.concat(Array.from({ length: count }, () => entry));
    for (let i = 0; i < count; i++) this.idOffsets.push(i * entry.length + idInEntry);
  }

  /** A serialized WrappedContactData: `cd`'s fields (and the client clock) and this encoder's messages with new IDs. */
  wrapped(cd: ContactInit): Buffer {
    const head = toBinary(ContactDataSchema, create(ContactDataSchema, { clientClock: timestampNow(), ...cd, messages: [] }));
    const ids = randomBytes(16 * this.count);
    const contactLength = head.length + this.entries.length;
    const lengthBytes = encodeUvarint(contactLength);
    const out = Buffer.allocUnsafe(1 + lengthBytes.length + contactLength);
    out[0] = (1 << 3) | 2; // WrappedContactData.contact_data
    lengthBytes.copy(out, 1);
    const at = 1 + lengthBytes.length;
    out.set(head, at);
    const entriesAt = at + head.length;
    this.entries.copy(out, entriesAt);
    for (let i = 0; i < this.count; i++) ids.copy(out, entriesAt + this.idOffsets[i]!, 16 * i, 16 * (i + 1));
    return out;
  }
}

export class HttpProtocolError extends Error {}

/** Receives what an HttpResponseParser finds. */
export interface ResponseSink {
  /** `retryAfterMs`: the Retry-After header (delay in seconds) in ms, when the response has one. */
  onHead(status: number, retryAfterMs?: number): void;
  onBody(bytes: Buffer): void;
  /** The response is complete (Content-Length reached, or the last chunk). */
  onComplete(): void;
}

/**
 * Incremental HTTP/1.1 response parser: status line and headers, then a chunked or
 * Content-Length body. One response at a time; reset() before the next one on a kept-alive
 * connection.
 */
export class HttpResponseParser {
  private buf: Buffer = Buffer.alloc(0);
  private state: "head" | "size" | "data" | "data-crlf" | "length" | "done" = "head";
  private remaining = 0;

  constructor(private readonly sink: ResponseSink) {}

  reset(): void {
    this.state = "head";
    this.remaining = 0;
  }

  push(input: Buffer): void {
    this.buf = this.buf.length === 0 ? input : Buffer.concat([this.buf, input]);
    for (;;) {
      if (this.state === "head") {
        const end = this.buf.indexOf("\r\n\r\n");
        if (end < 0) {
          if (this.buf.length > 16384) throw new HttpProtocolError("response head longer than 16 KiB");
          return;
        }
        const head = this.buf.subarray(0, end).toString("latin1");
        this.buf = this.buf.subarray(end + 4);
        const lines = head.split("\r\n");
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
        if (!m) throw new HttpProtocolError(`bad status line ${JSON.stringify(lines[0])}`);
        const status = Number(m[1]);
        if (status === 100) continue;
        let chunked = false;
        let length = -1;
        let retryAfterMs: number | undefined;
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(":");
          const name = line.slice(0, colon).trim().toLowerCase();
          const value = line.slice(colon + 1).trim().toLowerCase();
          if (name === "transfer-encoding") chunked = value.includes("chunked");
          else if (name === "content-length") length = Number(value);
          else if (name === "retry-after" && /^\d+$/.test(value)) retryAfterMs = Number(value) * 1000;
        }
        this.sink.onHead(status, retryAfterMs);
        if (chunked) this.state = "size";
        else {
          // Without a length the body runs until the connection closes.
          this.state = "length";
          this.remaining = length >= 0 ? length : Number.POSITIVE_INFINITY;
        }
        if (this.state === "length" && this.remaining === 0) {
          this.state = "done";
          this.sink.onComplete();
        }
      } else if (this.state === "size") {
        const end = this.buf.indexOf("\r\n");
        if (end < 0) return;
        const size = Number.parseInt(this.buf.subarray(0, end).toString("latin1"), 16);
        if (!Number.isFinite(size)) throw new HttpProtocolError("bad chunk size");
        this.buf = this.buf.subarray(end + 2);
        if (size === 0) {
          this.state = "done";
          this.sink.onComplete();
        } else {
          this.state = "data";
          this.remaining = size;
        }
      } else if (this.state === "data" || this.state === "length") {
        if (this.buf.length === 0) return;
        const n = Math.min(this.remaining, this.buf.length);
        const part = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        this.remaining -= n;
        this.sink.onBody(part);
        if (this.remaining === 0) {
          if (this.state === "data") this.state = "data-crlf";
          else {
            this.state = "done";
            this.sink.onComplete();
          }
        }
      } else if (this.state === "data-crlf") {
        if (this.buf.length < 2) return;
        this.buf = this.buf.subarray(2);
        this.state = "size";
      } else {
        // "done": bytes after a complete response belong to the next one (after reset()).
        return;
      }
    }
  }
}

/** uvarint-framed ContactData of a streaming response. */
export class ContactFrameReader {
  private readonly decoder = new StreamFrameDecoder({ expectMagic: false });

  push(bytes: Buffer): ContactData[] {
    return this.decoder.push(bytes).map((f) => fromBinary(ContactDataSchema, f));
  }
}
