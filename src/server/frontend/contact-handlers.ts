// The two client endpoints: POST /message (one poll) and POST /streaming-message (a long-lived
// full-duplex stream). Status codes follow Fleetspeak's /message; for /streaming-message we
// answer errors with a real status too, where Fleetspeak answers 200 with an empty body (its Go
// client treats both as failure, and a real status is what an operator can diagnose).
import type { IncomingMessage, ServerResponse } from "node:http";
import { create, toBinary } from "@bufbuild/protobuf";
import { ContactDataSchema } from "../../gen/fleetspeak/common_pb.js";
import { FrameError, StreamFrameDecoder } from "../../common/framing.js";
import { MAX_CONTACT_BYTES } from "../../common/limits.js";
import type { Logger } from "../../common/log.js";
import { type Comms, ContactError } from "../comms/comms.js";
import type { Dispatcher } from "../comms/dispatcher.js";
import { retryWhileStoreUnavailable, type StoreRetry } from "../store/store-retry.js";
import { StoreUnavailableError } from "../store/errors.js";
import type { LogThrottle } from "../security/log-throttle.js";
import { type StreamObserver, StreamSession, type StreamTimings } from "../comms/stream-session.js";
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

export async function handleStream(deps: ContactHandlerDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const address = deps.addressOf(req);
  const started = performance.now();
  let session: StreamSession | undefined;
  const decoder = new StreamFrameDecoder({ expectMagic: true, where: `stream from ${address}` });
  let firstFrameTimer: NodeJS.Timeout | undefined;
  let finished = false;
  const queue: QueuedFrame[] = [];
  // A large frame gets its memory from the budget when its length prefix arrives, and must then
  // arrive within uploadDeadlineMs; while the budget has no room, the request is not read.
  let reserved: { frame: number; reservation: Reservation; deadline: NodeJS.Timeout } | undefined;
  let waitingForRoom = false;
  let framesSeen = 0;
  const stopWaiting = new AbortController();

  const finish = (status: number, message?: string, error?: unknown): void => {
    if (finished) return;
    finished = true;
    if (firstFrameTimer) clearTimeout(firstFrameTimer);
    stopWaiting.abort();
    if (reserved) {
      clearTimeout(reserved.deadline);
      reserved.reservation.release();
    }
    for (const f of queue.splice(0)) f.reservation?.release();
    if (session) session.close();
    else if (message !== undefined) fail(res, status, message, error);
    deps.onContact?.("stream", status, (performance.now() - started) / 1000);
  };

  try {
    precheck(req);
    const spki = deps.identify(req);
    const body = decodedBody(req);
    firstFrameTimer = setTimeout(() => {
      deps.logger.info({ address }, "stream closed: no first frame in time");
      finish(408, "no initial frame received in time");
      req.destroy();
    }, deps.firstFrameTimeoutMs ?? 180_000);

    let starting = false;
    let pumping = false;
    const resumeIfIdle = (): void => {
      if (!pumping && !waitingForRoom && !finished) body.resume();
    };
    // Each frame is answered with an ack: a client that sends frames but does not read the
    // answers is not read further until it does, instead of the acks piling up in memory.
    const drained = (): Promise<void> =>
      new Promise((resolve) => {
        const done = () => {
          res.off("drain", done);
          res.off("close", done);
          resolve();
        };
        res.on("drain", done);
        res.on("close", done);
      });
    const rate = deps.maxStreamFramesPerSecond ?? DEFAULT_FRONTEND_LISTENER_LIMITS.maxStreamFramesPerSecond;
    const frameTokens = new TokenBucket(rate, rate);
    const pump = async (): Promise<void> => {
      if (pumping) return;
      pumping = true;
      try {
        while (queue.length > 0 && session && !session.isClosed) {
          // Backpressure: stop reading while the session has its hands full.
          body.pause();
          if (res.writableNeedDrain) {
            await drained();
            continue;
          }
          const wait = frameTokens.take();
          if (wait > 0) {
            await new Promise((resolve) => setTimeout(resolve, wait));
            continue;
          }
          const frame = queue.shift()!;
          await session.onClientFrame(frame.bytes, () => frame.reservation?.release());
        }
      } finally {
        pumping = false;
        resumeIfIdle();
      }
    };

    const reserveFor = (bytes: number, budget: BufferBudget): void => {
      const frame = framesSeen;
      const granted = (reservation: Reservation): void => {
        if (finished || framesSeen > frame) {
          reservation.release();
          return;
        }
        const limitMs = uploadDeadlineMs(bytes, deps.uploadGraceMs);
        const deadline = setTimeout(() => {
          deps.logger.info({ address, bytes }, "stream closed: a large frame was not received in time");
          finish(408, `frame of ${bytes} bytes not received within ${limitMs} ms`);
          req.destroy();
        }, limitMs);
        reserved = { frame, reservation, deadline };
      };
      const now = budget.tryReserve(bytes);
      if (now) {
        granted(now);
        return;
      }
      waitingForRoom = true;
      body.pause();
      deps.logger.debug({ address, bytes, buffered: budget.used }, "stream waits for room for a large frame");
      budget.reserve(bytes, stopWaiting.signal).then(
        (reservation) => {
          waitingForRoom = false;
          granted(reservation);
          resumeIfIdle();
        },
        () => {},
      );
    };

    /** The complete frames of a chunk, each with its reservation if it had one. */
    const claim = (frames: Buffer[]): QueuedFrame[] =>
      frames.map((bytes) => {
        const index = framesSeen++;
        if (reserved?.frame !== index) return { bytes };
        const { reservation, deadline } = reserved;
        clearTimeout(deadline);
        reserved = undefined;
        return { bytes, reservation };
      });

    const startSession = async (first: Buffer): Promise<void> => {
      const hold = holdWhileStoreUnavailable(deps, started, () => finished);
      const contact = await retryWhileStoreUnavailable(() => deps.comms.openContact(spki, address, first, true), hold);
      session = new StreamSession(
        deps.comms,
        contact,
        {
          write: (b) => res.write(b),
          onDrain: (cb) => res.on("drain", cb),
          close: () => {
            if (!res.writableEnded) res.end();
            // Make sure the socket goes even if the client keeps its request body open.
            setTimeout(() => req.socket.destroy(), 1000).unref();
          },
        },
        deps.dispatcher,
        deps.timings,
        deps.observer,
      );
      const opened = session;
      const frame0 = await retryWhileStoreUnavailable(() => opened.initialFrame(), hold);
      if (finished) {
        session.close();
        return;
      }
      if (firstFrameTimer) clearTimeout(firstFrameTimer);
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.write(frame0);
      session.start();
      deps.logger.debug({ clientId: contact.clientIdHex, address }, "stream started");
    };

    body.on("data", (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch (e) {
        const status = e instanceof FrameError ? 400 : 500;
        deps.logger.info({ address, err: (e as Error).message }, "stream closed: bad framing");
        finish(status, (e as Error).message);
        req.destroy();
        return;
      }
      const complete = claim(frames);
      const pending = decoder.pendingFrameBytes;
      if (deps.budget && pending > SMALL_REQUEST_BYTES && !reserved && !waitingForRoom) reserveFor(pending, deps.budget);
      if (complete.length === 0) return;
      if (!session && !starting) {
        starting = true;
        const first = complete.shift()!;
        queue.push(...complete);
        body.pause();
        startSession(first.bytes)
          .then(() => {
            first.reservation?.release();
            resumeIfIdle();
            return pump();
          })
          .catch((e) => {
            first.reservation?.release();
            const status = statusOf(e);
            logRefusal(deps, "stream refused", address, status, e);
            finish(status, (e as Error).message, e);
          });
        return;
      }
      queue.push(...complete);
      if (finished) for (const f of queue.splice(0)) f.reservation?.release();
      else if (session) void pump();
    });
    body.on("end", () => {
      // The client ended its side; the stream is over once our side is done too.
      if (!session) finish(400, "request ended before the first frame");
    });
    body.on("error", (e: Error) => {
      // A client closing its connection is the normal end of a stream.
      deps.logger[session ? "debug" : "info"]({ address, err: e.message }, "stream request ended");
      finish(400, `cannot read request body: ${e.message}`);
    });
    res.on("close", () => finish(200));
  } catch (e) {
    const status = statusOf(e);
    deps.logger.info({ address, status, err: (e as Error).message }, "stream refused");
    finish(status, (e as Error).message);
  }
}
