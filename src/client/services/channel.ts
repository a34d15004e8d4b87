// The local channel between the client and a daemon (over inherited pipes) or a socket-service
// peer (over a Unix socket): each side writes the magic once, then every message as LEN (uint32
// little-endian) || serialized fleetspeak.Message || magic. We write our magic at once, and our
// messages only after the peer's magic arrived. A wrong magic, an oversize length, an unparsable
// body, or a frame (or the first magic) that takes over 5 min to arrive is a channel error; the
// owner then tears the peer down. End of input right after a magic is an orderly close.
import type { Readable, Writable } from "node:stream";
import { fromBinary } from "@bufbuild/protobuf";
import { ChannelFrameDecoder, encodeChannelFrame, MAGIC_BYTES } from "../../common/framing.js";
import { MAX_CHANNEL_MESSAGE_BYTES } from "../../common/limits.js";
import type { Logger } from "../../common/log.js";
import { encodeMessage } from "../../common/message-codec.js";
import { type Message, MessageSchema } from "../../gen/fleetspeak/common_pb.js";

const FRAME_TIMEOUT_MS = 5 * 60_000;

export interface ChannelHandlers {
  /**
   * A message from the peer. While the returned promise is pending the channel stops reading, so
   * a slow consumer (a full outbox) slows the peer down instead of buffering without bound.
   */
  onMessage(m: Message): Promise<void> | void;
  /** The channel ended; `error` is set when the peer broke the protocol or the stream failed. */
  onClose(error: Error | undefined): void;
}

export class Channel {
  private readonly decoder: ChannelFrameDecoder;
  private readonly queue: Buffer[] = [];
  private pumping = false;
  private closed = false;
  private outboundHeld: Buffer[] | undefined = [];
  private frameTimer: NodeJS.Timeout | undefined;
  private resolveClosed!: () => void;
  /** Resolves once the channel has ended (orderly, by error, or destroyed). */
  readonly ended: Promise<void> = new Promise((r) => {
    this.resolveClosed = r;
  });

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    private readonly handlers: ChannelHandlers,
    private readonly where: string,
    private readonly log: Logger,
  ) {
    this.decoder = new ChannelFrameDecoder(where);
    output.on("error", (e) => this.fail(new Error(`${where}: write failed: ${e.message}`)));
    output.write(MAGIC_BYTES);
    this.armFrameTimer();
    input.on("data", (chunk: Buffer) => this.onData(chunk));
    input.on("end", () => {
      if (this.decoder.handshakeDone && this.decoder.atMessageBoundary) this.finish(undefined);
      else if (!this.decoder.handshakeDone) this.fail(new Error(`${where}: closed before sending the channel magic`));
      else this.fail(new Error(`${where}: input ended in the middle of a frame`));
    });
    input.on("error", (e) => this.fail(new Error(`${where}: read failed: ${e.message}`)));
  }

  /** Queues a message for the peer; false (with a log line) if it cannot be framed. */
  send(m: Message): boolean {
    if (this.closed) return false;
    const bytes = encodeMessage(m);
    if (bytes.length > MAX_CHANNEL_MESSAGE_BYTES) {
      this.log.error(
        { where: this.where, bytes: bytes.length, messageType: m.messageType },
        "dropping a message larger than the 2 MiB channel limit",
      );
      return false;
    }
    const frame = encodeChannelFrame(bytes);
    if (this.outboundHeld) this.outboundHeld.push(frame);
    else this.output.write(frame);
    return true;
  }

  /** Orderly end of our side: the peer reads EOF right after a magic. */
  closeOutput(): void {
    this.outboundHeld = undefined;
    if (!this.output.writableEnded) this.output.end();
  }

  /** Stops reading and drops everything; for teardown. */
  destroy(): void {
    this.finish(undefined);
    this.input.destroy();
    this.output.destroy();
  }

  private armFrameTimer(): void {
    clearTimeout(this.frameTimer);
    this.frameTimer = setTimeout(
      () => this.fail(new Error(`${this.where}: no complete frame within 5 min`)),
      FRAME_TIMEOUT_MS,
    );
    this.frameTimer.unref();
  }

  private disarmFrameTimer(): void {
    clearTimeout(this.frameTimer);
    this.frameTimer = undefined;
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let frames: Buffer[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    if (this.outboundHeld && this.decoder.handshakeDone) {
      for (const f of this.outboundHeld) this.output.write(f);
      this.outboundHeld = undefined;
    }
    // Waiting for LEN has no time limit; being inside a frame (or before the first magic) does.
    if (this.decoder.handshakeDone && this.decoder.atMessageBoundary) this.disarmFrameTimer();
    else if (frames.length > 0 || this.frameTimer === undefined) this.armFrameTimer();
    if (frames.length === 0) return;
    this.queue.push(...frames);
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    while (this.queue.length > 0 && !this.closed) {
      const frame = this.queue.shift()!;
      let m: Message;
      try {
        m = fromBinary(MessageSchema, frame);
      } catch (e) {
        this.fail(new Error(`${this.where}: a frame is not a fleetspeak.Message: ${(e as Error).message}`));
        break;
      }
      const r = this.handlers.onMessage(m);
      if (r) {
        this.input.pause();
        try {
          await r;
        } catch (e) {
          this.log.warn({ where: this.where, err: (e as Error).message }, "message from the channel not forwarded");
        }
        if (!this.closed) this.input.resume();
      }
    }
    this.pumping = false;
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.finish(e);
  }

  private finish(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.disarmFrameTimer();
    this.queue.length = 0;
    this.handlers.onClose(error);
    this.resolveClosed();
  }
}
