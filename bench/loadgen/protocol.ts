// What the benchmark parent and its load-generator processes say to each other over IPC.
import type { ClientTarget } from "./sim-clients.js";

export interface WorkerConfig {
  worker: number;
  target: ClientTarget;
  /** Client identities [from, to) of the shared cache. */
  from: number;
  to: number;
  /** Fleetspeak streaming or polling clients, or MQTT clients of the peer broker. */
  mode: "stream" | "poll" | "mqtt";
  /** New connections per second while ramping up. */
  rampPerSec: number;
  /** Connections whose TLS handshake or first frame is still under way, at most. */
  maxConnecting: number;
  /** Received messages are acknowledged in batches this often (the Go client: 1 s). */
  ackIntervalMs: number;
  /** Polling mode: each client polls this often (first poll at a random phase). */
  pollIntervalMs: number;
  reportIntervalMs: number;
  /** The process exits by itself after this, whatever happens. */
  maxSeconds: number;
}

export interface IngestCommand {
  type: "ingest";
  service: string;
  /** Payload bytes per message. */
  size: number;
  /** Messages per frame. */
  batch: number;
  /** Frames in flight per client (closed loop). */
  window: number;
  /** Cap on messages per second for this process; 0 = as fast as acks come back. */
  perSecond: number;
}

export type ParentCommand =
  | IngestCommand
  | { type: "ingest-stop" }
  | { type: "stop" }
  | { type: "report" };

/**
 * What each worker counts and the fleet adds up: open and connecting are the worker's streams now,
 * the rest are cumulative since it started. ended: connections that ended after being open (server
 * close, done_sending…); pollsSkipped: polls not made because the previous poll of that client was
 * still running.
 */
export const COUNTER_NAMES = [
  "open",
  "connecting",
  "handshakes",
  "streamsOpened",
  "ended",
  "received",
  "duplicates",
  "framesSent",
  "framesAcked",
  "ingestSent",
  "ingestAcked",
  "polls",
  "pollsOnNewConnection",
  "pollsSkipped",
] as const;

export type Counters = Record<(typeof COUNTER_NAMES)[number], number>;

export function zeroCounters(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((k) => [k, 0])) as Counters;
}

/** Counters as COUNTER_NAMES says; arrays hold what is new since the last report. */
export interface WorkerReport extends Counters {
  type: "report";
  worker: number;
  clients: number;
  errors: Record<string, number>;
  /** Streams open when the first error happened (-1: no error yet). */
  openAtFirstError: number;
  /**
   * Probe messages received since the last report, flat pairs: insert time (epoch ms), then
   * latency (ms, insert → receipt).
   */
  latencies: number[];
  /** Time from connect to the stream's first frame (ms). */
  openTimes: number[];
  pollTimes: number[];
  rssBytes: number;
  cpuMicros: number;
}

export type WorkerMessage = WorkerReport | { type: "ready"; worker: number } | { type: "fatal"; worker: number; error: string };
