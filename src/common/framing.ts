// The two byte framings Fleetspeak uses:
//  - streaming frames on /streaming-message: the request body starts with a 4-byte magic, then
//    every message is uvarint(length) || bytes; the response is the same without the magic.
//  - channel frames between the client and its daemon/socket services: magic once, then per
//    message a little-endian uint32 length, the bytes, and the magic again as a trailer.
// Both decoders are incremental (input may be split at any byte) and reject an oversize length
// before allocating anything for it.
import { MAX_CHANNEL_MESSAGE_BYTES, MAX_CONTACT_BYTES } from "./limits.js";

export const MAGIC = 0xf1ee1001;
export const MAGIC_BYTES: Buffer = Buffer.from([0x01, 0x10, 0xee, 0xf1]);

export class FrameError extends Error {}

export function encodeUvarint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Buffer.from(out);
}

/** uvarint(len) || payload, as one buffer. */
export function encodeStreamFrame(payload: Uint8Array): Buffer {
  const header = encodeUvarint(payload.length);
  const out = Buffer.allocUnsafe(header.length + payload.length);
  header.copy(out, 0);
  out.set(payload, header.length);
  return out;
}

/** Chunks smaller than this are copied together into shared tail buffers of TAIL_BYTES. */
const COALESCE_BELOW = 1024;
const TAIL_BYTES = 16 * 1024;

/**
 * Accumulates chunks and hands out their bytes without copying when a frame lies in one chunk.
 * Small chunks are copied into a shared tail buffer: a peer that sends its data a byte at a time
 * (one TLS record or HTTP chunk each) would otherwise cost a Buffer object, about a hundred times
 * its size, per byte.
 */
class ChunkQueue {
  private chunks: Buffer[] = [];
  private head = 0; // read offset into chunks[0]
  /** The buffer behind the last chunk when that chunk is a coalescing tail, and its fill. */
  private tail: Buffer | undefined;
  private tailUsed = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.length += chunk.length;
    if (chunk.length >= COALESCE_BELOW) {
      this.chunks.push(chunk);
      this.tail = undefined;
      return;
    }
    const last = this.chunks.length - 1;
    const tailIsLast = this.tail !== undefined && last >= 0 && this.chunks[last]!.buffer === this.tail.buffer &&
      this.chunks[last]!.byteOffset === this.tail.byteOffset;
    if (!tailIsLast || this.tailUsed + chunk.length > TAIL_BYTES) {
      this.tail = Buffer.allocUnsafe(TAIL_BYTES);
      this.tailUsed = 0;
      this.chunks.push(this.tail.subarray(0, 0));
    }
    // Bytes are only ever appended to the tail, so views already handed out stay valid.
    chunk.copy(this.tail!, this.tailUsed);
    this.tailUsed += chunk.length;
    this.chunks[this.chunks.length - 1] = this.tail!.subarray(0, this.tailUsed);
  }

  peekByte(i: number): number {
    let idx = i + this.head;
    for (const c of this.chunks) {
      if (idx < c.length) return c[idx]!;
      idx -= c.length;
    }
    throw new RangeError("peek past end");
  }

  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      this.length -= n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      this.releaseTailIfEmpty();
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const part = Math.min(c.length - this.head, n - filled);
      c.copy(out, filled, this.head, this.head + part);
      filled += part;
      this.head += part;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.length -= n;
    this.releaseTailIfEmpty();
    return out;
  }

  /**
   * An idle stream must not keep its 16 KiB tail buffer: with tens of thousands of streams that
   * is most of their memory (measured: 58 → 42 KiB per idle client).
   */
  private releaseTailIfEmpty(): void {
    if (this.length === 0) this.tail = undefined;
  }
}

export interface StreamDecoderOptions {
  /** Require the 4-byte magic before the first frame (request side of /streaming-message). */
  expectMagic: boolean;
  /** Largest frame accepted; defaults to the 20 MiB contact limit. */
  maxFrameBytes?: number;
  /** Names the stream in errors, e.g. the peer address. */
  where?: string;
}

/** Incremental decoder of uvarint-length-prefixed frames. */
export class StreamFrameDecoder {
  private readonly queue = new ChunkQueue();
  private needMagic: boolean;
  private readonly max: number;
  private readonly where: string;
  private pending = 0;

  constructor(opts: StreamDecoderOptions) {
    this.needMagic = opts.expectMagic;
    this.max = opts.maxFrameBytes ?? MAX_CONTACT_BYTES;
    this.where = opts.where ? `${opts.where}: ` : "";
  }

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.queue.length;
  }

  /**
   * The announced size of the frame being received (its length prefix is complete, its payload
   * not yet), or 0: lets the reader reserve memory for a large frame before it arrives.
   */
  get pendingFrameBytes(): number {
    return this.pending;
  }

  /** Adds input and returns every frame now complete. Throws FrameError on malformed input. */
  push(chunk: Buffer): Buffer[] {
    this.queue.push(chunk);
    const frames: Buffer[] = [];
    this.pending = 0;
    for (;;) {
      if (this.needMagic) {
        if (this.queue.length < 4) break;
        const m = this.queue.take(4);
        if (!m.equals(MAGIC_BYTES)) {
          throw new FrameError(
            `${this.where}stream does not start with the Fleetspeak magic 01 10 ee f1 (got ${m.toString("hex")}); is this a Fleetspeak client?`,
          );
        }
        this.needMagic = false;
      }
      // Decode the uvarint length without consuming it until the whole frame is here.
      let len = 0;
      let mul = 1;
      let i = 0;
      let complete = false;
      while (i < this.queue.length) {
        const b = this.queue.peekByte(i);
        len += (b & 0x7f) * mul;
        mul *= 0x80;
        i++;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
        if (i >= 5) {
          throw new FrameError(`${this.where}frame length prefix is longer than 5 bytes`);
        }
      }
      if (!complete) break;
      if (len > this.max) {
        throw new FrameError(`${this.where}frame of ${len} bytes exceeds the limit of ${this.max} bytes`);
      }
      if (this.queue.length < i + len) {
        this.pending = len;
        break;
      }
      this.queue.take(i);
      frames.push(this.queue.take(len));
    }
    return frames;
  }
}

/** LEN (uint32 LE) || payload || MAGIC: one message on the local channel. */
export function encodeChannelFrame(payload: Uint8Array): Buffer {
  if (payload.length > MAX_CHANNEL_MESSAGE_BYTES) {
    throw new FrameError(
      `channel message of ${payload.length} bytes exceeds the limit of ${MAX_CHANNEL_MESSAGE_BYTES} bytes`,
    );
  }
  const out = Buffer.allocUnsafe(8 + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.set(payload, 4);
  MAGIC_BYTES.copy(out, 4 + payload.length);
  return out;
}

/**
 * Incremental decoder of the channel framing. The peer's magic comes first; after that every
 * message is LEN, body, magic. `atMessageBoundary` tells whether a clean end of input is allowed
 * here (end of stream right after a magic is an orderly close).
 */
export class ChannelFrameDecoder {
  private readonly queue = new ChunkQueue();
  private state: "magic" | "len" | "body" | "trailer" = "magic";
  private bodyLen = 0;
  private pending: Buffer | undefined;
  private readonly where: string;
  private sawMagic = false;

  constructor(where?: string) {
    this.where = where ? `${where}: ` : "";
  }

  get atMessageBoundary(): boolean {
    return this.state === "len" && this.queue.length === 0;
  }

  get handshakeDone(): boolean {
    return this.sawMagic;
  }

  push(chunk: Buffer): Buffer[] {
    this.queue.push(chunk);
    const out: Buffer[] = [];
    for (;;) {
      if (this.state === "magic" || this.state === "trailer") {
        if (this.queue.length < 4) break;
        const m = this.queue.take(4);
        if (!m.equals(MAGIC_BYTES)) {
          throw new FrameError(
            `${this.where}expected the channel magic 01 10 ee f1 ${this.state === "magic" ? "at the start" : "after a message"}, got ${m.toString("hex")}`,
          );
        }
        if (this.state === "trailer") out.push(this.pending!);
        this.pending = undefined;
        this.sawMagic = true;
        this.state = "len";
      } else if (this.state === "len") {
        if (this.queue.length < 4) break;
        const len = this.queue.take(4).readUInt32LE(0);
        if (len > MAX_CHANNEL_MESSAGE_BYTES) {
          throw new FrameError(
            `${this.where}channel message of ${len} bytes exceeds the limit of ${MAX_CHANNEL_MESSAGE_BYTES} bytes`,
          );
        }
        this.bodyLen = len;
        this.state = "body";
      } else {
        if (this.queue.length < this.bodyLen) break;
        this.pending = this.queue.take(this.bodyLen);
        this.state = "trailer";
      }
    }
    return out;
  }
}
