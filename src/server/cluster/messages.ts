// What a supervisor and its worker processes say to each other over the IPC channel of
// node:cluster. Messages use Node's "advanced" serialization (structured clone), so a
// fleetspeak.Message (plain data: bigints, Uint8Arrays) crosses as it is. Every type starts with
// "fs:" so that other users of the channel (prom-client's metric requests) can share it.
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { ActivityCounts } from "../observe/activity.js";

/** What a worker serves, once it has started. */
export interface WorkerAddresses {
  frontend?: string;
  admin?: string;
  console?: string;
}

export type WorkerToSupervisor =
  | { type: "fs:ready"; addresses: WorkerAddresses }
  /** Streams this worker started and stopped holding since its last report, and how many it holds. */
  | { type: "fs:streams"; opened: string[]; closed: string[]; held: number }
  /** A client's stream is not here: wake it wherever it is. */
  | { type: "fs:route"; request: number; clientId: Uint8Array; message?: Message }
  | { type: "fs:woken"; request: number; held: boolean }
  | { type: "fs:activity"; counts: ActivityCounts }
  /** The worker cannot start (a port in use, say): the one line the supervisor reports. */
  | { type: "fs:failed"; message: string }
  | { type: "fs:not-accepting" };

export type SupervisorToWorker =
  /** counted: the notification came from another server (the worker counts it in its metrics). */
  | { type: "fs:wake"; request: number; clientId: Uint8Array; message?: Message; counted?: boolean }
  | { type: "fs:routed"; request: number; held: boolean }
  /** A notification from another server for a client no worker holds (counted by one worker). */
  | { type: "fs:unknown-notification" }
  /**
   * The first step of stopping: close the client listener (answered fs:not-accepting), so that
   * once every worker has, the shared port is closed and a client told done_sending by one worker
   * reconnects to another server instead of to a sibling about to drain.
   */
  | { type: "fs:stop-accepting" };

/** The environment variable that gives a worker the address its clients' streams are recorded at. */
export const STREAMING_ADDRESS_ENV = "FLEETSPEAK_WORKER_STREAMING_ADDRESS";

/** The environment variable that gives a worker its place in the pool (1..N), kept across restarts. */
export const WORKER_INDEX_ENV = "FLEETSPEAK_WORKER_INDEX";

function isOurs(m: unknown): boolean {
  return typeof m === "object" && m !== null && String((m as { type?: unknown }).type).startsWith("fs:");
}

export function isWorkerMessage(m: unknown): m is WorkerToSupervisor {
  return isOurs(m);
}

export function isSupervisorMessage(m: unknown): m is SupervisorToWorker {
  return isOurs(m);
}
