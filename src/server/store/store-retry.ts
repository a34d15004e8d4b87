// Riding out a database outage at the client edge. A client frame or a new contact whose store
// call fails because the database cannot be reached is tried again, with back-off, while the
// client waits, instead of failing at once: every failure a client sees costs a reconnection
// (Fleetspeak's client then waits min_failure_delay, 5 minutes by default), and all of them
// reconnecting when the database is back costs the frontends a storm of TLS handshakes.
import { setTimeout as sleep } from "node:timers/promises";
import { StoreUnavailableError } from "./errors.js";

/** Pauses grow from 250 ms by half each time, up to 5 s, jittered so that clients spread out. */
export function storeRetryPauseMs(failures: number): number {
  return Math.min(5000, 250 * 1.5 ** (failures - 1)) * (0.5 + Math.random());
}

export interface StoreRetry {
  /** Whether it is still worth trying (the stream is open, the client has not waited too long). */
  keepTrying(failures: number): boolean;
  /** Told of each failure that will be retried, before the pause. */
  onRetry?(err: StoreUnavailableError, failures: number, pauseMs: number): void;
}

/**
 * Runs `attempt` until it succeeds or fails with anything but StoreUnavailableError; after a
 * StoreUnavailableError it pauses and runs it again while `keepTrying` says so, else rethrows.
 * `attempt` must give the same outcome when run again (storing the same messages does).
 */
export async function retryWhileStoreUnavailable<T>(attempt: () => Promise<T>, retry: StoreRetry): Promise<T> {
  for (let failures = 1; ; failures++) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof StoreUnavailableError) || !retry.keepTrying(failures)) throw e;
      const pause = storeRetryPauseMs(failures);
      retry.onRetry?.(e, failures, pause);
      await sleep(pause);
      if (!retry.keepTrying(failures)) throw e;
    }
  }
}
