// The polling communicator: POST /message with one WrappedContactData, one ContactData back.
// It polls at least every max_poll_delay (jittered), soon after activity (200 ms + a tenth of the
// idle time), within max_buffer_delay of a queued message, and at once when 100 messages or
// 15 MiB are queued. When every server fails it waits jitter(min_failure_delay).
import { fromBinary } from "@bufbuild/protobuf";
import type { IncomingMessage } from "node:http";
import { deflateSync } from "node:zlib";
import { MAX_CONTACT_BYTES } from "../../common/limits.js";
import { type ContactData, ContactDataSchema } from "../../gen/fleetspeak/common_pb.js";
import { Allowance, type Communicator, type CommsHost, jitter, sleep, Watchdog, wrappedContact } from "./communicator.js";
import type { OutboxItem } from "./outbox.js";

const POLL_NOW_BYTES = 15 * 1024 * 1024;
const POLL_NOW_MESSAGES = 100;
const POLL_TIMEOUT_MS = 5 * 60_000;
/** Servers drop idle keep-alive connections after 30 s; close ours before sleeping longer. */
const IDLE_CLOSE_MS = 30_000;

export class PollingCommunicator implements Communicator {
  private readonly abort = new AbortController();
  private loopDone: Promise<void> = Promise.resolve();
  private toSend: OutboxItem[] = [];
  private toSendBytes = 0;
  private lastPoll: number | undefined;
  private oldestUnsent: number | undefined;
  private lastActive: number | undefined;
  private readonly started = Date.now();
  private watchdog!: Watchdog;

  constructor(private readonly host: CommsHost) {}

  start(): void {
    this.watchdog = new Watchdog((idle) => this.host.fatal(1, `polling loop stuck for ${Math.round(idle / 1000)} s (watchdog)`));
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.watchdog.stop();
    this.abort.abort();
    await this.loopDone;
    this.host.outbox.nack(this.toSend.splice(0));
    this.host.transport.close();
  }

  private nextPollAt(): number {
    const t = this.host.timing;
    if (this.lastPoll === undefined) return 0;
    let deadline = this.lastPoll + jitter(t.maxPollDelayMs);
    if (this.lastActive !== undefined) {
      deadline = Math.min(deadline, this.lastPoll + 200 + (Date.now() - this.lastActive) / 10);
    }
    if (this.oldestUnsent !== undefined) {
      deadline = Math.min(deadline, this.oldestUnsent + jitter(t.maxBufferDelayMs));
    }
    return deadline;
  }

  private takeFromOutbox(): void {
    const room = POLL_NOW_MESSAGES - this.toSend.length;
    if (room <= 0) return;
    const items = this.host.outbox.take(room, Math.max(1, POLL_NOW_BYTES - this.toSendBytes));
    if (items.length === 0) return;
    for (const item of items) {
      this.toSend.push(item);
      this.toSendBytes += 2 + item.size;
    }
    this.oldestUnsent ??= Date.now();
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      this.watchdog.reset();
      this.takeFromOutbox();
      const deadline = this.nextPollAt();
      const now = Date.now();
      if (now >= deadline || this.toSendBytes > POLL_NOW_BYTES || this.toSend.length >= POLL_NOW_MESSAGES) {
        const ok = await this.poll();
        if (!ok && !signal.aborted) {
          const since = this.lastPoll ?? this.started;
          if (Date.now() - since > this.host.timing.failureSuicideTimeMs) {
            this.host.fatal(2, `no server contact for ${Math.round((Date.now() - since) / 1000)} s; giving up`);
            return;
          }
          const delay = jitter(this.host.timing.minFailureDelayMs);
          this.host.log.warn({ retryInMs: Math.round(delay) }, "no server reachable");
          if (delay > IDLE_CLOSE_MS) this.host.transport.closeIdle();
          await this.watchdog.asleep(sleep(delay, signal));
        }
        continue;
      }
      const wait = deadline - now;
      if (wait > IDLE_CLOSE_MS) this.host.transport.closeIdle();
      await this.watchdog.asleep(this.waitForWork(wait, signal));
    }
  }

  private waitForWork(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let settled = false;
      const done = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
      this.host.outbox.whenReady().then(done);
    });
  }

  /** One poll, trying the servers in order. True on success. */
  private async poll(): Promise<boolean> {
    const { host } = this;
    const sent = this.toSend;
    this.toSend = [];
    this.toSendBytes = 0;
    const body = wrappedContact(host, sent.map((i) => i.message), new Allowance().absolute(host.serviceCounts()));
    for (let i = 0; i < host.servers.length; i++) {
      const server = host.servers[i]!;
      let cd: ContactData;
      try {
        cd = await this.post(server, body);
      } catch (e) {
        if (this.abort.signal.aborted) break;
        host.log.warn({ server }, host.transport.describeError(e as Error, server));
        continue;
      }
      if (i !== 0) [host.servers[0], host.servers[i]] = [host.servers[i]!, host.servers[0]!];
      host.setNonce(cd.sequencingNonce);
      host.outbox.ack(sent);
      if (cd.messages.length > 0) host.deliver(cd.messages);
      const now = Date.now();
      this.lastPoll = now;
      this.oldestUnsent = undefined;
      if (cd.messages.length > 0 || sent.some((s) => !s.message.background)) this.lastActive = now;
      return true;
    }
    host.outbox.nack(sent);
    this.oldestUnsent = undefined;
    return false;
  }

  /**
   * One POST /message. A kept-alive connection that the server closed just as we reused it fails
   * before the server saw anything; that attempt is repeated once on a new connection.
   */
  private async post(server: string, wcd: Uint8Array): Promise<ContactData> {
    try {
      return await this.postOnce(server, wcd);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (!(e as { reusedSocket?: boolean }).reusedSocket || (code !== "ECONNRESET" && code !== "EPIPE")) throw e;
      return await this.postOnce(server, wcd);
    }
  }

  private postOnce(server: string, wcd: Uint8Array): Promise<ContactData> {
    const headers: Record<string, string> = {};
    let body: Uint8Array = wcd;
    if (this.host.timing.compress) {
      // Sent chunked: Fleetspeak's server at HEAD mis-reads a compressed body that has a
      // Content-Length, but reads a chunked one correctly.
      headers["Content-Encoding"] = "deflate";
      body = deflateSync(wcd);
    } else {
      headers["Content-Length"] = String(wcd.length);
    }
    return new Promise((resolve, reject) => {
      const req = this.host.transport.request(server, "/message", "POST", headers, true);
      const timer = setTimeout(() => req.destroy(new Error("poll timed out after 5 min")), POLL_TIMEOUT_MS);
      const onAbort = () => req.destroy(new Error("client stopping"));
      this.abort.signal.addEventListener("abort", onAbort);
      const finish = () => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener("abort", onAbort);
      };
      req.once("error", (e) => {
        finish();
        reject(Object.assign(e, { reusedSocket: req.reusedSocket && !gotResponse }));
      });
      let gotResponse = false;
      req.once("response", (res: IncomingMessage) => {
        gotResponse = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_CONTACT_BYTES) req.destroy(new Error("server response exceeds 20 MiB"));
          else chunks.push(c);
        });
        res.once("error", (e) => {
          finish();
          reject(e);
        });
        res.once("end", () => {
          finish();
          if (res.statusCode !== 200) {
            const text = Buffer.concat(chunks).toString("utf8").trim().slice(0, 200);
            reject(new Error(`server answered HTTP ${res.statusCode} to /message: ${text}`));
            return;
          }
          try {
            resolve(fromBinary(ContactDataSchema, Buffer.concat(chunks)));
          } catch (e) {
            reject(new Error(`server's answer is not a ContactData: ${(e as Error).message}`));
          }
        });
      });
      req.end(body);
    });
  }
}
