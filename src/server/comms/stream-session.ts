// The server side of one /streaming-message connection after its first exchange: client frames
// are processed (pipelined, acknowledged strictly in arrival order), and due messages are pushed
// as soon as the stream is woken, with no batching delay (Fleetspeak waits a second after each
// notification). Near the end of its lifespan the stream says done_sending once, keeps
// acknowledging until the end, then closes.
import { create, toBinary } from "@bufbuild/protobuf";
import { ContactDataSchema, type Message } from "../../gen/fleetspeak/common_pb.js";
import { encodeStreamFrame } from "../../common/framing.js";
import type { Comms, Contact } from "./comms.js";
import type { Dispatcher, Wakeable } from "./dispatcher.js";

/** Where a session writes its response frames. */
export interface StreamSink {
  /** Writes bytes; false means the connection is congested (wait for onDrain). */
  write(bytes: Buffer): boolean;
  onDrain(cb: () => void): void;
  /** Ends the connection (the normal end of a stream is an abrupt close). */
  close(): void;
}

export interface StreamTimings {
  /** Whole life of a stream (Fleetspeak: 10 min). */
  lifespanMs: number;
  /** done_sending goes out this long before the end (Fleetspeak: 30 s). */
  closeBeforeMs: number;
}

export const DEFAULT_STREAM_TIMINGS: StreamTimings = { lifespanMs: 10 * 60_000, closeBeforeMs: 30_000 };

/** Frames processed concurrently per stream; past this the request is not read further. */
const MAX_FRAMES_IN_FLIGHT = 10;

export interface StreamObserver {
  messagesSent?(contact: Contact, messages: Message[]): void;
  /** A message carried by a notification was sent as it came (true), or left to a fetch. */
  carried?(sent: boolean): void;
}

export class StreamSession implements Wakeable {
  private wanted = false;
  private pushing = false;
  /** Carried messages being leased, to be written before done_sending. */
  private carrying = 0;
  private stopping = false;
  private started = false;
  private closed = false;
  private fetchErrors = 0;
  private ackCounter = 0n;
  private ackChain: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private capacityWaiters: Array<() => void> = [];
  private drainWaiter: (() => void) | undefined;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly comms: Comms,
    readonly contact: Contact,
    private readonly sink: StreamSink,
    private readonly dispatcher: Dispatcher,
    private readonly timings: StreamTimings = DEFAULT_STREAM_TIMINGS,
    private readonly observer: StreamObserver = {},
  ) {
    sink.onDrain(() => {
      const w = this.drainWaiter;
      this.drainWaiter = undefined;
      w?.();
    });
  }

  get clientId(): Uint8Array {
    return this.contact.clientId;
  }

  /**
   * The first response frame: the fresh nonce and whatever is due now. The caller writes it
   * right after the response headers, then calls start().
   */
  async initialFrame(): Promise<Buffer> {
    // Register before fetching, so that a message stored in between wakes us (nothing is missed).
    this.dispatcher.register(this);
    const { messages, maybeMore } = await this.comms.fetchOutgoing(this.contact);
    if (maybeMore) this.wanted = true;
    if (messages.length > 0) this.observer.messagesSent?.(this.contact, messages);
    return this.frame(messages);
  }

  start(): void {
    this.started = true;
    const { lifespanMs, closeBeforeMs } = this.timings;
    this.timers.push(setTimeout(() => this.drain(), Math.max(0, lifespanMs - closeBeforeMs)));
    this.timers.push(setTimeout(() => this.close(), lifespanMs));
    const released = this.contact.releasedDueAtMs;
    if (released !== undefined) this.timers.push(setTimeout(() => this.wake(), Math.max(0, released - Date.now())));
    // A stream that opened while the server began to stop is told to move on at once.
    if (this.dispatcher.isDraining) this.drain();
    else if (this.wanted) this.wake();
  }

  /**
   * Ends the stream's sending side: messages being fetched or leased are written, then
   * done_sending, and nothing new is taken (what is due stays due, for the client's next stream).
   * The client's frames are still processed and acknowledged until it closes the connection.
   */
  drain(): void {
    // Before start() the first frame is not written yet; start() drains a stream that opens late.
    if (this.started) void this.finishSending();
  }

  wake(): void {
    if (this.closed || this.stopping) return;
    this.wanted = true;
    if (!this.pushing) void this.pushLoop();
  }

  /**
   * A notification brought the new message itself: lease it (one statement that also checks it
   * is stored so) and send it, without a claim that reads it back. Whatever stands in the way (no
   * allowance left, a congested connection, the message claimed meanwhile) leaves it to wake().
   */
  offer(message: Message): void {
    if (this.closed || this.stopping) return;
    this.carrying++;
    void this.sendCarried(message).finally(() => {
      this.carrying--;
    });
  }

  private async sendCarried(message: Message): Promise<void> {
    const fetchInstead = () => {
      this.observer.carried?.(false);
      this.wake();
    };
    if (this.congested) return fetchInstead();
    let outcome: { leased: boolean; othersDue: boolean };
    try {
      outcome = await this.comms.leaseCarried(this.contact, message);
    } catch (e) {
      this.comms.logger.warn(
        { clientId: this.contact.clientIdHex, err: (e as Error).message },
        "leasing a carried message failed; fetching instead",
      );
      return fetchInstead();
    }
    if (!outcome.leased) return fetchInstead();
    // Leased but the stream is gone: the message is due again when the lease ends, as after a
    // claim whose frame was lost.
    if (this.closed) return;
    this.write(this.frame([message]));
    this.observer.carried?.(true);
    this.observer.messagesSent?.(this.contact, [message]);
    // A notification means "fetch what is due": other due messages (stored while a notification
    // failed, or whose lease ended) go out now too, not at the next sweep.
    if (outcome.othersDue) this.wake();
  }

  /**
   * A client frame (serialized WrappedContactData). Resolves once the session can take another
   * frame, so the caller can stop reading the request while too many are being processed.
   * `onProcessed` is called once the frame is done with (processed, failed or dropped).
   */
  async onClientFrame(bytes: Buffer, onProcessed?: () => void): Promise<void> {
    if (this.closed) {
      onProcessed?.();
      return;
    }
    this.inFlight++;
    const processing = this.processFrame(bytes);
    if (onProcessed) processing.then(onProcessed, onProcessed);
    const previous = this.ackChain;
    this.ackChain = (async () => {
      let ok = true;
      try {
        await processing;
      } catch (e) {
        ok = false;
        // A skipped ack would make the Go client credit later acks to the wrong frames, so a
        // frame that cannot be processed ends the stream; its messages will be resent.
        this.comms.logger.warn(
          { clientId: this.contact.clientIdHex, err: (e as Error).message },
          "closing stream: a client frame could not be processed",
        );
      }
      await previous;
      this.inFlight--;
      this.capacityWaiters.shift()?.();
      if (!ok) return this.close();
      this.ackCounter++;
      this.write(this.frameBytes({ ackIndex: this.ackCounter }));
    })();
    if (this.inFlight >= MAX_FRAMES_IN_FLIGHT) {
      await new Promise<void>((resolve) => this.capacityWaiters.push(resolve));
    }
  }

  /** The connection ended (client went away, server shutting down). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopping = true;
    for (const t of this.timers) clearTimeout(t);
    this.dispatcher.unregister(this);
    for (const w of this.capacityWaiters.splice(0)) w();
    this.drainWaiter?.();
    this.sink.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private async processFrame(bytes: Buffer): Promise<void> {
    const { cd } = this.comms.parseWrapped(bytes, `client ${this.contact.clientIdHex} at ${this.contact.address}`);
    if (this.comms.addTokens(this.contact, cd.AllowedMessages)) this.wake();
    // While the database is unreachable the frame is stored again and again, its ack (and those
    // of the frames after it) waiting, for as long as the stream lasts: closing the stream would
    // only make the client reconnect into the same outage.
    let failed = 0;
    await this.comms.acceptMessages(this.contact, cd.messages, {
      keepTrying: () => !this.closed,
      onRetry: (err, failures, pauseMs) => {
        failed = failures;
        if (failures === 1) {
          this.comms.logger.warn(
            { clientId: this.contact.clientIdHex, err: err.message, retryInMs: Math.round(pauseMs) },
            "storing a client frame failed; trying again while the stream lasts",
          );
        }
      },
    });
    if (failed > 0) this.comms.logger.info({ clientId: this.contact.clientIdHex, failures: failed }, "client frame stored after the database came back");
  }

  private async pushLoop(): Promise<void> {
    this.pushing = true;
    try {
      while (this.wanted && !this.stopping) {
        if (!(await this.writable())) break;
        this.wanted = false;
        const { messages, maybeMore } = await this.comms.fetchOutgoing(this.contact);
        this.fetchErrors = 0;
        if (messages.length > 0) {
          if (this.closed) break;
          this.write(this.frame(messages));
          this.observer.messagesSent?.(this.contact, messages);
        }
        if (maybeMore) this.wanted = true;
      }
    } catch (e) {
      // The store is struggling: try again with back-off (100–200 ms × 1.5^errors, at most 30 s).
      this.fetchErrors++;
      const delay = Math.min(30_000, 100 * (1 + Math.random()) * 1.5 ** (this.fetchErrors - 1));
      this.comms.logger.warn(
        { clientId: this.contact.clientIdHex, err: (e as Error).message, retryInMs: Math.round(delay) },
        "fetching messages for a streaming client failed",
      );
      const t = setTimeout(() => this.wake(), delay);
      t.unref();
      this.timers.push(t);
      this.wanted = false;
    } finally {
      this.pushing = false;
    }
  }

  private async finishSending(): Promise<void> {
    if (this.closed || this.stopping) return;
    this.stopping = true;
    // done_sending goes last: after the fetch and the carried messages already under way.
    while (this.pushing || this.carrying > 0) await new Promise((r) => setTimeout(r, 10));
    if (this.closed) return;
    this.write(this.frameBytes({ doneSending: true }));
  }

  private writable(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (!this.congested) return Promise.resolve(true);
    return new Promise((resolve) => {
      this.drainWaiter = () => resolve(!this.closed);
    });
  }

  private congested = false;

  private write(bytes: Buffer): void {
    if (this.closed) return;
    if (!this.sink.write(bytes)) this.congested = true;
    else this.congested = false;
  }

  private frame(messages: Message[]): Buffer {
    return this.frameBytes({ messages });
  }

  private frameBytes(init: { messages?: Message[]; ackIndex?: bigint; doneSending?: boolean }): Buffer {
    const cd = create(ContactDataSchema, {
      ...(init.messages ? { sequencingNonce: this.contact.nonce, messages: init.messages } : {}),
      ...(init.ackIndex !== undefined ? { ackIndex: init.ackIndex } : {}),
      ...(init.doneSending ? { doneSending: true } : {}),
    });
    return encodeStreamFrame(toBinary(ContactDataSchema, cd));
  }
}
