// What the streaming and polling communicators share: the interface the client gives them, the
// timing defaults of CommunicatorConfig, and the ContactData they build.
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "../../common/log.js";
import { CompressionAlgorithm, ContactDataSchema, type Message, WrappedContactDataSchema } from "../../gen/fleetspeak/common_pb.js";
import type { CommunicatorConfig } from "../../gen/fleetspeak_client/client_pb.js";
import type { Outbox } from "./outbox.js";
import type { Transport } from "./transport.js";

/** Inbox size of every client service; AllowedMessages announces the free part of it. */
export const SERVICE_INBOX_SIZE = 100;

/** Inbox bookkeeping of one installed service. */
export interface ServiceCounts {
  /** Messages that entered its inbox. */
  accepted: number;
  /** Messages its processing loop has taken out. */
  processed: number;
}

/** What a communicator needs from the rest of the client. */
export interface CommsHost {
  outbox: Outbox;
  transport: Transport;
  /** Configured servers; the communicator moves the one that works to the front. */
  servers: string[];
  /** Label texts sent as WrappedContactData.client_labels. */
  labelTexts: string[];
  clientId(): Buffer;
  nonce(): bigint;
  setNonce(nonce: bigint): void;
  serviceCounts(): Map<string, ServiceCounts>;
  /** Hands messages from the server to the services. */
  deliver(messages: Message[]): void;
  /** Registers a listener for the processing beacon (a service processed another 32 messages). */
  onBeacon(listener: () => void): () => void;
  /** The client must end (no server contact for too long). */
  fatal(code: number, reason: string): void;
  timing: CommsTiming;
  log: Logger;
}

export interface Communicator {
  start(): void;
  /** Aborts connections; unacknowledged messages go back to the outbox. */
  stop(): Promise<void>;
}

export interface CommsTiming {
  maxPollDelayMs: number;
  maxBufferDelayMs: number;
  minFailureDelayMs: number;
  failureSuicideTimeMs: number;
  compress: boolean;
}

/** CommunicatorConfig with Fleetspeak's defaults for zero fields. */
export function commsTiming(cfg: CommunicatorConfig): CommsTiming {
  const seconds = (v: number, dflt: number) => (v > 0 ? v : dflt) * 1000;
  return {
    maxPollDelayMs: seconds(cfg.maxPollDelaySeconds, 300),
    maxBufferDelayMs: seconds(cfg.maxBufferDelaySeconds, 5),
    minFailureDelayMs: seconds(cfg.minFailureDelaySeconds, 300),
    failureSuicideTimeMs: seconds(cfg.failureSuicideTimeSeconds, 7 * 24 * 3600),
    compress: cfg.compression === CompressionAlgorithm.COMPRESSION_DEFLATE,
  };
}

/** x × (1 + 0.5·U): between 1× and 1.5× x. */
export function jitter(ms: number): number {
  return ms * (1 + 0.5 * Math.random());
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * AllowedMessages: a poll or the first frame of a stream announces each service's free inbox
 * slots; later frames of a stream announce how many messages each service processed since the
 * previous frame (the server adds them up). `system` is a service like any other here.
 */
export class Allowance {
  private readonly lastProcessed = new Map<string, number>();

  absolute(counts: Map<string, ServiceCounts>): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const [name, c] of counts) {
      out[name] = BigInt(Math.max(0, SERVICE_INBOX_SIZE - (c.accepted - c.processed)));
      this.lastProcessed.set(name, c.processed);
    }
    return out;
  }

  delta(counts: Map<string, ServiceCounts>): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const [name, c] of counts) {
      const last = this.lastProcessed.get(name);
      if (last === undefined) {
        out[name] = BigInt(Math.max(0, SERVICE_INBOX_SIZE - (c.accepted - c.processed)));
      } else {
        const d = c.processed - last;
        if (d > 0) out[name] = BigInt(d);
      }
      this.lastProcessed.set(name, c.processed);
    }
    return out;
  }
}

/** Serializes a WrappedContactData carrying `messages`. */
export function wrappedContact(host: CommsHost, messages: Message[], allowed: Record<string, bigint>): Uint8Array {
  const contactData = toBinary(
    ContactDataSchema,
    create(ContactDataSchema, {
      sequencingNonce: host.nonce(),
      messages,
      clientClock: timestampNow(),
      AllowedMessages: allowed,
    }),
  );
  return toBinary(WrappedContactDataSchema, create(WrappedContactDataSchema, { contactData, clientLabels: host.labelTexts }));
}

const WATCHDOG_MS = 60 * 60_000 + 5000;

/**
 * Fleetspeak's communicator watchdog: if the connect/poll loop has not come round for an hour
 * (a hang, not a long back-off sleep), the client ends with code 1 so that its supervisor
 * restarts it.
 */
export class Watchdog {
  private last = Date.now();
  private sleeping = false;
  private readonly timer: NodeJS.Timeout;

  constructor(onExpiry: (idleMs: number) => void, limitMs = WATCHDOG_MS) {
    this.timer = setInterval(() => {
      const idle = Date.now() - this.last;
      if (!this.sleeping && idle > limitMs) {
        this.stop();
        onExpiry(idle);
      }
    }, Math.min(60_000, limitMs));
    this.timer.unref();
  }

  /** The loop came round. */
  reset(): void {
    this.last = Date.now();
  }

  /** Runs a deliberate wait that does not count as a hang. */
  async asleep(wait: Promise<void>): Promise<void> {
    this.sleeping = true;
    try {
      await wait;
    } finally {
      this.sleeping = false;
      this.reset();
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
