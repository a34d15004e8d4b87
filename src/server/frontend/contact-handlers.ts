// The two client endpoints: POST /message (one poll) and POST /streaming-message (a long-lived
// full-duplex stream). Status codes follow Fleetspeak's /message; for /streaming-message we
// answer errors with a real status too, where Fleetspeak answers 200 with an empty body (its Go
// client treats both as failure, and a real status is what an operator can diagnose).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import { create, toBinary } from "@bufbuild/protobuf";
import { ContactDataSchema } from "../../gen/fleetspeak/common_pb.js";
import { FrameError, StreamFrameDecoder } from "../../common/framing.js";
import { MAX_CONTACT_BYTES } from "../../common/limits.js";
import type { Logger } from "../../common/log.js";
import { type Comms, ContactError } from "../comms/comms.js";
import type { Dispatcher } from "../comms/dispatcher.js";
import { type StreamObserver, StreamSession, type StreamSink, type StreamTimings } from "../comms/stream-session.js";
import { StoreUnavailableError } from "../store/errors.js";
import { retryWhileStoreUnavailable, type StoreRetry } from "../store/store-retry.js";
import type { LogThrottle } from "../security/log-throttle.js";
import { type BufferBudget, type Reservation, SMALL_REQUEST_BYTES, uploadDeadlineMs } from "../security/buffer-budget.js";
import { TokenBucket } from "../security/token-bucket.js";
import { DEFAULT_FRONTEND_LISTENER_LIMITS } from "./listener.js";
import { decodedBody, readWholeBody } from "./request-body.js";

export interface ContactHandlerDeps {
  comms: Comms;
  dispatcher: Dispatcher;
  logger: Logger;
  timings: StreamTimings;
  /** The client's key (DER SPKI) from its certificate, per frontend mode; throws with a status. */
  identify: (req: IncomingMessage) => Buffer;
  /** "ip:port" of the client (PROXY header source when there is one). */
  addressOf: (req: IncomingMessage) => string;
  /** How long a stream may take to send its first frame. */
  firstFrameTimeoutMs?: number;
  observer?: StreamObserver;
  /** Server-wide memory for large frames and poll bodies not yet processed. */
  budget?: BufferBudget;
  /** The fixed part of the time a poll body or a large frame has to arrive (uploadDeadlineMs). */
  uploadGraceMs?: number;
  /** Frames one stream may have processed per second (bursts of as many); more wait. */
  maxStreamFramesPerSecond?: number;
  /** Reports each contact's outcome and duration, for metrics. */
  onContact?: (kind: "poll" | "stream", status: number, seconds: number) => void;
  /** How long a new contact is held while the database cannot be reached (FrontendListenerLimits). */
  contactHoldMs?: number;
  /** Contacts refused because the database is unreachable are logged through this (one line per interval). */
  unavailableLog?: LogThrottle;
}

/** A client refused while the database is down is asked to come back after 5–15 s, spread out. */
const RETRY_AFTER_MIN_S = 5;
const RETRY_AFTER_SPREAD_S = 10;

function statusOf(e: unknown): number {
  if (e instanceof ContactError) return e.status;
  if (e instanceof StoreUnavailableError) return 503;
  const status = (e as { status?: unknown }).status;
  return typeof status === "number" ? status : 500;
}

function fail(res: ServerResponse, status: number, message: string, error?: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8", connection: "close" };
  if (error instanceof StoreUnavailableError) {
    headers["retry-after"] = String(RETRY_AFTER_MIN_S + Math.floor(Math.random() * (RETRY_AFTER_SPREAD_S + 1)));
  }
  res.writeHead(status, headers);
  res.end(`${message}\n`);
}

/**
 * A new contact whose database calls fail because the database cannot be reached is held (its
 * request unanswered) and tried again, up to contactHoldMs from its start, while the client waits.
 */
function holdWhileStoreUnavailable(deps: ContactHandlerDeps, started: number, gone: () => boolean): StoreRetry {
  const until = started + (deps.contactHoldMs ?? DEFAULT_FRONTEND_LISTENER_LIMITS.contactHoldMs);
  return { keepTrying: () => !gone() && performance.now() < until };
}

/** Logs a refused contact: at warn for server-side trouble, throttled when the database is down. */
function logRefusal(deps: ContactHandlerDeps, what: string, address: string, status: number, e: unknown): void {
  const fields = { address, status, err: (e as Error).message };
  if (e instanceof StoreUnavailableError && deps.unavailableLog) {
    deps.unavailableLog.run((suppressed) =>
      deps.logger.warn({ ...fields, suppressed }, `${what} (database unavailable; the client is told to retry later)`),
    );
    return;
  }
  deps.logger[status >= 500 ? "warn" : "info"](fields, what);
}

function precheck(req: IncomingMessage): void {
  if (req.method !== "POST") throw new ContactError(400, `${req.method} not supported`);
  const len = Number(req.headers["content-length"] ?? "0");
  if (len > MAX_CONTACT_BYTES) {
    throw new ContactError(400, `content length ${len} exceeds the limit of ${MAX_CONTACT_BYTES} bytes`);
  }
}

export async function handlePoll(deps: ContactHandlerDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const address = deps.addressOf(req);
  const started = performance.now();
  let release: (() => void) | undefined;
  try {
    precheck(req);
    const spki = deps.identify(req);
    const declared = Number(req.headers["content-length"]);
    const read = await readWholeBody(decodedBody(req), MAX_CONTACT_BYTES, {
      ...(deps.budget ? { budget: deps.budget } : {}),
      deadlineMs: uploadDeadlineMs(Number.isFinite(declared) ? declared : MAX_CONTACT_BYTES, deps.uploadGraceMs),
    });
    release = read.release;
    const hold = holdWhileStoreUnavailable(deps, started, () => res.destroyed);
    const contact = await retryWhileStoreUnavailable(() => deps.comms.openContact(spki, address, read.body, false), hold);
    const { messages } = await retryWhileStoreUnavailable(() => deps.comms.fetchOutgoing(contact), hold);
    const out = toBinary(ContactDataSchema, create(ContactDataSchema, { sequencingNonce: contact.nonce, messages }));
    if (messages.length > 0) deps.observer?.messagesSent?.(contact, messages);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": out.length });
    res.end(out);
    deps.onContact?.("poll", 200, (performance.now() - started) / 1000);
  } catch (e) {
    const status = statusOf(e);
    const message = status === 500 ? `error processing contact: ${(e as Error).message}` : (e as Error).message;
    logRefusal(deps, "poll failed", address, status, e);
    fail(res, status, message, e);
    deps.onContact?.("poll", status, (performance.now() - started) / 1000);
  } finally {
    release?.();
  }
}

interface QueuedFrame {
  bytes: Buffer;
  /** Memory reserved for it (large frames), given back once it has been processed. */
  reservation?: Reservation;
}

/** POST /streaming-message: checked and identified, then served until either side ends it. */
export async function handleStream(deps: ContactHandlerDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const stream = new StreamRequest(deps, req, res);
  try {
    precheck(req);
    stream.serve(deps.identify(req));
  } catch (e) {
    stream.refuse(e);
  }
}

/**
 * One /streaming-message request, from its first byte to its end. The client's bytes are cut into
 * frames; large frames get memory from the server-wide budget before they arrive (and a deadline
 * to arrive by); the first frame opens the contact and its StreamSession, and the others are fed
 * to the session in order, at most maxStreamFramesPerSecond, and no faster than the client reads
 * our answers. Whatever ends it (the client, a bad frame, a timeout, the session) ends it once.
 */
class StreamRequest {
  readonly #deps: ContactHandlerDeps;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #address: string;
  readonly #started = performance.now();
  readonly #decoder: StreamFrameDecoder;
  readonly #frameTokens: TokenBucket;
  /** Complete frames waiting for the session. */
  readonly #queue: QueuedFrame[] = [];
  /** Aborts a wait for room in the budget when the stream ends. */
  readonly #stopWaiting = new AbortController();
  #spki: Buffer | undefined;
  #body: Readable | undefined;
  #session: StreamSession | undefined;
  #firstFrameTimer: NodeJS.Timeout | undefined;
  #starting = false;
  #pumping = false;
  #finished = false;
  /** Frames cut so far; the index of the next one. */
  #framesSeen = 0;
  // A large frame gets its memory from the budget when its length prefix arrives, and must then
  // arrive within uploadDeadlineMs; while the budget has no room, the request is not read.
  #reserved: { frame: number; reservation: Reservation; deadline: NodeJS.Timeout } | undefined;
  #waitingForRoom = false;

  constructor(deps: ContactHandlerDeps, req: IncomingMessage, res: ServerResponse) {
    this.#deps = deps;
    this.#req = req;
    this.#res = res;
    this.#address = deps.addressOf(req);
    this.#decoder = new StreamFrameDecoder({ expectMagic: true, where: `stream from ${this.#address}` });
    const rate = deps.maxStreamFramesPerSecond ?? DEFAULT_FRONTEND_LISTENER_LIMITS.maxStreamFramesPerSecond;
    this.#frameTokens = new TokenBucket(rate, rate);
  }

  /** Reads the identified client's request: its first frame within firstFrameTimeoutMs. */
  serve(spki: Buffer): void {
    this.#spki = spki;
    const body = decodedBody(this.#req);
    this.#body = body;
    this.#firstFrameTimer = setTimeout(
      () => this.#abort(408, "no initial frame received in time", "stream closed: no first frame in time"),
      this.#deps.firstFrameTimeoutMs ?? 180_000,
    );
    body.on("data", (chunk: Buffer) => this.#onChunk(chunk));
    body.on("end", () => {
      // The client ended its side; the stream is over once our side is done too.
      if (!this.#session) this.#finish(400, "request ended before the first frame");
    });
    body.on("error", (e: Error) => {
      // A client closing its connection is the normal end of a stream.
      this.#deps.logger[this.#session ? "debug" : "info"]({ address: this.#address, err: e.message }, "stream request ended");
      this.#finish(400, `cannot read request body: ${e.message}`);
    });
    this.#res.on("close", () => this.#finish(200));
  }

  /** Answers a stream that cannot be served with its status and reason. */
  refuse(e: unknown): void {
    const status = statusOf(e);
    logRefusal(this.#deps, "stream refused", this.#address, status, e);
    this.#finish(status, (e as Error).message, e);
  }

  /** A chunk of the request: cut into frames, budgeted, and handed on. */
  #onChunk(chunk: Buffer): void {
    const frames = this.#decode(chunk);
    if (!frames) return;
    const complete = this.#claim(frames);
    this.#reserveForFrameUnderWay();
    if (complete.length === 0) return;
    if (!this.#session && !this.#starting) this.#open(complete);
    else this.#enqueue(complete);
  }

  #decode(chunk: Buffer): Buffer[] | undefined {
    try {
      return this.#decoder.push(chunk);
    } catch (e) {
      this.#abort(e instanceof FrameError ? 400 : 500, (e as Error).message, "stream closed: bad framing", { err: (e as Error).message });
      return undefined;
    }
  }

  /** The complete frames of a chunk, each with its reservation if it had one. */
  #claim(frames: Buffer[]): QueuedFrame[] {
    return frames.map((bytes) => {
      const index = this.#framesSeen++;
      if (this.#reserved?.frame !== index) return { bytes };
      const { reservation, deadline } = this.#reserved;
      clearTimeout(deadline);
      this.#reserved = undefined;
      return { bytes, reservation };
    });
  }

  /** Memory for the frame whose length prefix has arrived, when it is large. */
  #reserveForFrameUnderWay(): void {
    const budget = this.#deps.budget;
    const bytes = this.#decoder.pendingFrameBytes;
    if (!budget || bytes <= SMALL_REQUEST_BYTES || this.#reserved || this.#waitingForRoom) return;
    const frame = this.#framesSeen;
    const granted = (reservation: Reservation): void => {
      if (this.#finished || this.#framesSeen > frame) {
        reservation.release();
        return;
      }
      const limitMs = uploadDeadlineMs(bytes, this.#deps.uploadGraceMs);
      const deadline = setTimeout(
        () =>
          this.#abort(408, `frame of ${bytes} bytes not received within ${limitMs} ms`, "stream closed: a large frame was not received in time", {
            bytes,
          }),
        limitMs,
      );
      this.#reserved = { frame, reservation, deadline };
    };
    const now = budget.tryReserve(bytes);
    if (now) {
      granted(now);
      return;
    }
    this.#waitingForRoom = true;
    this.#body!.pause();
    this.#deps.logger.debug({ address: this.#address, bytes, buffered: budget.used }, "stream waits for room for a large frame");
    budget.reserve(bytes, this.#stopWaiting.signal).then(
      (reservation) => {
        this.#waitingForRoom = false;
        granted(reservation);
        this.#resumeIfIdle();
      },
      () => {},
    );
  }

  /** The first frame opens the session; the frames after it wait in the queue meanwhile. */
  #open(complete: QueuedFrame[]): void {
    this.#starting = true;
    const first = complete.shift()!;
    this.#queue.push(...complete);
    this.#body!.pause();
    this.#startSession(first.bytes)
      .then(() => {
        first.reservation?.release();
        this.#resumeIfIdle();
        return this.#pump();
      })
      .catch((e) => {
        first.reservation?.release();
        this.refuse(e);
      });
  }

  #enqueue(complete: QueuedFrame[]): void {
    this.#queue.push(...complete);
    if (this.#finished) this.#releaseQueue();
    else if (this.#session) void this.#pump();
  }

  /** Opens the contact, answers the first frame and starts the session; held while the database is away. */
  async #startSession(first: Buffer): Promise<void> {
    const deps = this.#deps;
    const hold = holdWhileStoreUnavailable(deps, this.#started, () => this.#finished);
    const contact = await retryWhileStoreUnavailable(() => deps.comms.openContact(this.#spki!, this.#address, first, true), hold);
    const session = new StreamSession(deps.comms, contact, this.#sink(), deps.dispatcher, deps.timings, deps.observer);
    this.#session = session;
    const frame0 = await retryWhileStoreUnavailable(() => session.initialFrame(), hold);
    if (this.#finished) {
      session.close();
      return;
    }
    if (this.#firstFrameTimer) clearTimeout(this.#firstFrameTimer);
    this.#res.writeHead(200, { "content-type": "application/octet-stream" });
    this.#res.write(frame0);
    session.start();
    deps.logger.debug({ clientId: contact.clientIdHex, address: this.#address }, "stream started");
  }

  /**
   * Where the session writes. Made here, not inside #startSession: closures made there would share
   * its context, which holds the first frame, a view of a 16 KiB read buffer, for the stream's life.
   */
  #sink(): StreamSink {
    return {
      write: (b) => this.#res.write(b),
      onDrain: (cb) => this.#res.on("drain", cb),
      close: () => {
        if (!this.#res.writableEnded) this.#res.end();
        // Make sure the socket goes even if the client keeps its request body open.
        setTimeout(() => this.#req.socket.destroy(), 1000).unref();
      },
    };
  }

  /** Feeds queued frames to the session, one at a time, while it can take them. */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length > 0 && this.#session && !this.#session.isClosed) {
        // Backpressure: stop reading while the session has its hands full.
        this.#body!.pause();
        // Each frame is answered with an ack: a client that sends frames but does not read the
        // answers is not read further until it does, instead of the acks piling up in memory.
        if (this.#res.writableNeedDrain) {
          await this.#drained();
          continue;
        }
        const wait = this.#frameTokens.take();
        if (wait > 0) {
          await new Promise((resolve) => setTimeout(resolve, wait));
          continue;
        }
        const frame = this.#queue.shift()!;
        await this.#session.onClientFrame(frame.bytes, () => frame.reservation?.release());
      }
    } finally {
      this.#pumping = false;
      this.#resumeIfIdle();
    }
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.#res.off("drain", done);
        this.#res.off("close", done);
        resolve();
      };
      this.#res.on("drain", done);
      this.#res.on("close", done);
    });
  }

  #resumeIfIdle(): void {
    if (!this.#pumping && !this.#waitingForRoom && !this.#finished) this.#body!.resume();
  }

  #releaseQueue(): void {
    for (const f of this.#queue.splice(0)) f.reservation?.release();
  }

  /** Ends the stream for a fault of the client's (logged at info) and drops its connection. */
  #abort(status: number, message: string, why: string, fields: Record<string, unknown> = {}): void {
    this.#deps.logger.info({ address: this.#address, ...fields }, why);
    this.#finish(status, message);
    this.#req.destroy();
  }

  /** Ends the stream once: timers stopped, memory given back, the session closed or the error answered. */
  #finish(status: number, message?: string, error?: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#firstFrameTimer) clearTimeout(this.#firstFrameTimer);
    this.#stopWaiting.abort();
    if (this.#reserved) {
      clearTimeout(this.#reserved.deadline);
      this.#reserved.reservation.release();
    }
    this.#releaseQueue();
    if (this.#session) this.#session.close();
    else if (message !== undefined) fail(this.#res, status, message, error);
    this.#deps.onContact?.("stream", status, (performance.now() - this.#started) / 1000);
  }
}
