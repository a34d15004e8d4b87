// The streaming communicator: one long POST /streaming-message per server connection. The request
// body is the magic and then uvarint-framed WrappedContactData frames for as long as the
// connection lives; the response body is uvarint-framed ContactData. The server's first frame
// answers (and so acknowledges) our first one; later, every frame with a non-zero ack_index
// acknowledges our oldest unacknowledged frame (Fleetspeak counts, it does not read the value).
import { fromBinary } from "@bufbuild/protobuf";
import type { ClientRequest, IncomingMessage } from "node:http";
import { constants as zlibConstants, createDeflate, type Deflate } from "node:zlib";
import { encodeStreamFrame, MAGIC_BYTES, StreamFrameDecoder } from "../../common/framing.js";
import { type ContactData, ContactDataSchema } from "../../gen/fleetspeak/common_pb.js";
import {
  Allowance,
  type Communicator,
  type CommsHost,
  jitter,
  sleep,
  Watchdog,
  wrappedContact,
} from "./communicator.js";
import type { OutboxItem } from "./outbox.js";

/**
 * After the first message of a frame, how long to wait for more. Fleetspeak waits 1 s, which is
 * most of the time from a server message to the daemon's reply reaching the server; 25 ms still
 * fills frames during a burst (they cap at 100 messages) and answers in tens of milliseconds.
 */
const GATHER_MS = 25;
const MAX_FRAME_MESSAGES = 100;
const MAX_GROUP_BYTES = 7.5 * 1024 * 1024;
const MIN_GROUP_BYTES = 256 * 1024;
/** How long the first exchange may take (Fleetspeak: 12 min). */
const CONNECT_TIMEOUT_MS = 12 * 60_000;
/** A connection is recycled after this long even if the server never ends it. */
const MAX_CONNECTION_LIFE_MS = 12 * 60_000;

export class StreamingCommunicator implements Communicator {
  private readonly abort = new AbortController();
  private loopDone: Promise<void> = Promise.resolve();
  private current: StreamConnection | undefined;
  private watchdog!: Watchdog;

  constructor(private readonly host: CommsHost) {}

  start(): void {
    this.watchdog = new Watchdog((idle) =>
      this.host.fatal(1, `streaming loop stuck for ${Math.round(idle / 1000)} s (watchdog)`),
    );
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.watchdog.stop();
    this.abort.abort();
    this.current?.close("client stopping");
    await this.loopDone;
  }

  private async loop(): Promise<void> {
    const { host } = this;
    let lastContact = Date.now();
    while (!this.abort.signal.aborted) {
      this.watchdog.reset();
      let connected = false;
      for (let i = 0; i < host.servers.length && !this.abort.signal.aborted; i++) {
        const server = host.servers[i]!;
        const conn = new StreamConnection(host, server, this.abort.signal);
        this.current = conn;
        try {
          await conn.connect();
        } catch (e) {
          host.log.warn({ server }, host.transport.describeError(e as Error, server));
          this.current = undefined;
          continue;
        }
        if (i !== 0) [host.servers[0], host.servers[i]] = [host.servers[i]!, host.servers[0]!];
        connected = true;
        host.log.info({ server }, "streaming connection established");
        const reason = await conn.run();
        this.current = undefined;
        lastContact = Date.now();
        if (!this.abort.signal.aborted) host.log.info({ server, reason }, "streaming connection ended; reconnecting");
        break;
      }
      if (connected || this.abort.signal.aborted) continue;
      if (Date.now() - lastContact > host.timing.failureSuicideTimeMs) {
        host.fatal(2, `no server contact for ${Math.round((Date.now() - lastContact) / 1000)} s; giving up`);
        return;
      }
      const delay = jitter(host.timing.minFailureDelayMs);
      host.log.warn({ retryInMs: Math.round(delay) }, "no server reachable");
      await this.watchdog.asleep(sleep(delay, this.abort.signal));
    }
  }
}

/** One streaming connection to one server. */
class StreamConnection {
  private req: ClientRequest | undefined;
  private deflate: Deflate | undefined;
  private readonly decoder = new StreamFrameDecoder({ expectMagic: false, where: "server response" });
  private readonly allowance = new Allowance();
  /** Batches written after the first frame, oldest first, awaiting their ack. */
  private readonly unacked: OutboxItem[][] = [];
  private firstFrame: ((cd: ContactData) => void) | undefined;
  private connectFailed: ((reason: string) => void) | undefined;
  private requestError: Error | undefined;
  private doneSending = false;
  private closed = false;
  private closeReason = "";
  private closeWaiters: Array<() => void> = [];
  private wake: (() => void) | undefined;
  private beaconFired = false;
  private readonly unsubscribeBeacon: () => void;
  private groupThreshold = MAX_GROUP_BYTES;
  private lifeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly host: CommsHost,
    private readonly server: string,
    private readonly stopSignal: AbortSignal,
  ) {
    this.unsubscribeBeacon = host.onBeacon(() => {
      this.beaconFired = true;
      this.wake?.();
    });
  }

  /** Sends the first frame and waits for the server's first frame. Throws if that fails. */
  async connect(): Promise<void> {
    const { host } = this;
    const initial = await this.gather(true);
    if (this.stopSignal.aborted) {
      host.outbox.nack(initial);
      this.close("client stopping");
      throw new Error("client stopping");
    }
    const first = new Promise<ContactData>((resolve, reject) => {
      const timer = setTimeout(() => this.close("no answer to the first frame within 12 min"), CONNECT_TIMEOUT_MS);
      this.firstFrame = (cd) => {
        clearTimeout(timer);
        this.connectFailed = undefined;
        resolve(cd);
      };
      this.connectFailed = (reason) => {
        clearTimeout(timer);
        this.firstFrame = undefined;
        reject(this.requestError ?? new Error(reason));
      };
    });
    try {
      const frame = encodeStreamFrame(
        wrappedContact(host, initial.map((i) => i.message), this.allowance.absolute(host.serviceCounts())),
      );
      const headers: Record<string, string> = { Connection: "close", Expect: "100-continue" };
      if (host.timing.compress) headers["Content-Encoding"] = "deflate";
      const req = host.transport.request(this.server, "/streaming-message", "POST", headers, false);
      this.req = req;
      req.on("error", (e) => {
        this.requestError ??= e;
        this.close(`request error: ${e.message}`);
      });
      req.on("close", () => this.close("connection closed"));
      req.once("response", (res: IncomingMessage) => this.onResponse(res));
      if (host.timing.compress) {
        this.deflate = createDeflate();
        this.deflate.pipe(req);
      }
      this.write(Buffer.concat([MAGIC_BYTES, frame]));
    } catch (e) {
      this.close(`cannot start the request: ${(e as Error).message}`);
    }
    let cd: ContactData;
    try {
      cd = await first;
    } catch (e) {
      host.outbox.nack(initial);
      throw e;
    }
    host.setNonce(cd.sequencingNonce);
    host.outbox.ack(initial);
    if (cd.messages.length > 0) host.deliver(cd.messages);
    if (!this.closed) {
      this.lifeTimer = setTimeout(() => this.close("connection reached its maximum life"), MAX_CONNECTION_LIFE_MS);
    }
  }

  private onResponse(res: IncomingMessage): void {
    if (res.statusCode !== 200) {
      res.resume();
      this.close(`server answered HTTP ${res.statusCode} to /streaming-message`);
      return;
    }
    res.on("data", (chunk: Buffer) => this.onData(chunk));
    res.once("end", () =>
      this.close(this.firstFrame ? "server ended the response before its first frame" : "server ended the response"),
    );
    res.once("error", (e) => this.close(`response error: ${e.message}`));
  }

  /** Writes frames until the connection ends; returns why it ended. */
  async run(): Promise<string> {
    while (!this.closed && !this.doneSending) {
      const batch = await this.gather(false);
      if (this.closed) {
        this.host.outbox.nack(batch);
        break;
      }
      if (this.doneSending && batch.length === 0) break;
      const frame = encodeStreamFrame(
        wrappedContact(this.host, batch.map((i) => i.message), this.allowance.delta(this.host.serviceCounts())),
      );
      this.unacked.push(batch);
      const started = Date.now();
      await this.write(frame);
      this.adaptThreshold(frame.length, Date.now() - started);
    }
    if (!this.closed && this.unacked.length === 0) this.close("server is done sending");
    await new Promise<void>((resolve) => (this.closed ? resolve() : this.closeWaiters.push(resolve)));
    return this.closeReason;
  }

  /** Fleetspeak lowers the frame size to ~10 s worth of the last measured throughput. */
  private adaptThreshold(bytes: number, ms: number): void {
    if (bytes <= MIN_GROUP_BYTES || ms <= 0) return;
    const rate = (bytes * 1000) / ms;
    this.groupThreshold = Math.min(MAX_GROUP_BYTES, Math.max(MIN_GROUP_BYTES, rate * 10));
  }

  /**
   * Waits for a first message (or, after the first frame, a processing beacon), then adds more for
   * up to GATHER_MS until 100 messages or the size threshold.
   */
  private async gather(initial: boolean): Promise<OutboxItem[]> {
    const { outbox } = this.host;
    const items: OutboxItem[] = [];
    let bytes = 0;
    const room = () => MAX_FRAME_MESSAGES - items.length;
    const takeMore = () => {
      for (const item of outbox.take(room(), this.groupThreshold - bytes)) {
        items.push(item);
        bytes += item.size;
      }
    };
    if (!initial) {
      this.beaconFired = false;
      while (!this.closed && !this.doneSending && !this.stopSignal.aborted) {
        takeMore();
        if (items.length > 0 || this.beaconFired) break;
        await this.waitForWork(undefined);
      }
      if (items.length === 0) return items;
    }
    const deadline = Date.now() + GATHER_MS;
    for (;;) {
      takeMore();
      if (items.length >= MAX_FRAME_MESSAGES || bytes >= this.groupThreshold) break;
      if (this.closed || this.doneSending || this.stopSignal.aborted) break;
      if (initial && this.beaconFired) break;
      const left = deadline - Date.now();
      if (left <= 0) break;
      await this.waitForWork(left);
    }
    return items;
  }

  /** Resolves on a new outbox message, a beacon, the end of the stream, or after `ms`. */
  private waitForWork(ms: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        this.stopSignal.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      if (ms !== undefined) timer = setTimeout(done, ms);
      this.wake = done;
      this.stopSignal.addEventListener("abort", done);
      this.host.outbox.whenReady().then(() => this.wake === done && done());
    });
  }

  private write(bytes: Buffer): Promise<void> {
    const req = this.req;
    if (!req || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.deflate) {
        this.deflate.write(bytes);
        this.deflate.flush(zlibConstants.Z_SYNC_FLUSH, () => resolve());
      } else if (!req.write(bytes)) {
        const done = () => {
          req.off("drain", done);
          req.off("close", done);
          resolve();
        };
        req.once("drain", done);
        req.once("close", done);
      } else {
        resolve();
      }
    });
  }

  private onData(chunk: Buffer): void {
    let frames: Buffer[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.close(`bad response framing: ${(e as Error).message}`);
      return;
    }
    for (const f of frames) {
      let cd: ContactData;
      try {
        cd = fromBinary(ContactDataSchema, f);
      } catch (e) {
        this.close(`server sent a frame that is not a ContactData: ${(e as Error).message}`);
        return;
      }
      if (this.firstFrame) {
        const first = this.firstFrame;
        this.firstFrame = undefined;
        first(cd);
        continue;
      }
      this.onContactData(cd);
      if (this.closed) return;
    }
  }

  private onContactData(cd: ContactData): void {
    if (cd.doneSending) {
      this.doneSending = true;
      this.wake?.();
    }
    if (cd.ackIndex !== 0n) {
      const batch = this.unacked.shift();
      if (batch) this.host.outbox.ack(batch);
      else this.host.log.warn({ server: this.server, ackIndex: cd.ackIndex }, "server acked a frame we did not send");
    }
    if (cd.messages.length > 0) this.host.deliver(cd.messages);
    if (this.doneSending && this.unacked.length === 0) this.close("server is done sending");
  }

  /** Ends the connection (abruptly, as Fleetspeak does) and returns unacked messages to the outbox. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    clearTimeout(this.lifeTimer);
    this.unsubscribeBeacon();
    for (const batch of this.unacked.splice(0)) this.host.outbox.nack(batch);
    this.deflate?.destroy();
    this.req?.destroy();
    this.wake?.();
    this.connectFailed?.(reason);
    for (const w of this.closeWaiters.splice(0)) w();
  }
}
