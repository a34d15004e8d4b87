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

/** Counters are cumulative since the worker started; arrays hold what is new since the last report. */
export interface WorkerReport {
  type: "report";
  worker: number;
  clients: number;
  /** Streams past their first frame right now (stream mode). */
  open: number;
  connecting: number;
  handshakes: number;
  streamsOpened: number;
  /** Connections that ended after being open (server close, done_sending…). */
  ended: number;
  errors: Record<string, number>;
  /** Streams open when the first error happened (-1: no error yet). */
  openAtFirstError: number;
  received: number;
  duplicates: number;
  framesSent: number;
  framesAcked: number;
  ingestSent: number;
  ingestAcked: number;
  polls: number;
  pollsOnNewConnection: number;
  /** Polls not made because the previous poll of that client was still running. */
  pollsSkipped: number;
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
