// Which streaming clients this process holds, and how to wake them. A notification (from the
// admin server in this process, or over HTTP from another one) wakes the stream of that client,
// which then fetches its due messages. A periodic sweep asks the store, in bulk, which connected
// clients have due messages, so that a lost notification or an expired delivery lease costs
// seconds, not the next reconnect (Fleetspeak waits up to 10 minutes there).
import { bytesToHex } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { Store } from "../store/store.js";

export interface Wakeable {
  readonly clientId: Uint8Array;
  /** New messages may be due: fetch and push them. Must not throw. */
  wake(): void;
  /** A new message, carried by its notification: send it if it can be leased, else wake(). */
  offer?(message: Message): void;
  /** The server is stopping: finish what is under way, say done_sending, take nothing new. */
  drain?(): void;
}

export interface DispatcherOptions {
  store: Store;
  logger: Logger;
  /** How often to ask the store for due messages of connected clients; 0 disables. */
  sweepIntervalMs?: number;
  /** Clients per store query in a sweep. */
  sweepBatch?: number;
  /**
   * Told when this process starts or stops holding a client's stream (not when a newer stream
   * of the same client replaces the older one): a worker process tells its supervisor, which
   * routes that client's notifications here.
   */
  onPresence?: (clientId: Uint8Array, held: boolean) => void;
}

export class Dispatcher {
  private readonly streams = new Map<string, Wakeable>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private sweepFailing = false;
  private draining = false;
  private readonly unregistered = new Set<() => void>();

  constructor(private readonly opts: DispatcherOptions) {
    const every = opts.sweepIntervalMs ?? 5_000;
    if (every > 0) {
      this.sweepTimer = setInterval(() => void this.sweep(), every);
      this.sweepTimer.unref();
    }
  }

  get connectedCount(): number {
    return this.streams.size;
  }

  /** Registers a stream; a newer stream of the same client replaces the older one. */
  register(stream: Wakeable): void {
    const key = bytesToHex(stream.clientId);
    const known = this.streams.has(key);
    this.streams.set(key, stream);
    if (!known) this.opts.onPresence?.(stream.clientId, true);
  }

  unregister(stream: Wakeable): void {
    const key = bytesToHex(stream.clientId);
    if (this.streams.get(key) === stream) {
      this.streams.delete(key);
      this.opts.onPresence?.(stream.clientId, false);
    }
    for (const w of this.unregistered) w();
  }

  /** True once drain() was called: streams that start now drain at once. */
  get isDraining(): boolean {
    return this.draining;
  }

  /**
   * The graceful stop of a frontend: every stream finishes the frames under way and says
   * done_sending, so that its client moves to another frontend at once (Fleetspeak cuts them, and
   * its clients wait before they reconnect). Resolves once every stream has closed, or after
   * `timeoutMs`.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    this.close();
    for (const s of this.streams.values()) s.drain?.();
    if (this.streams.size === 0) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        if (this.streams.size > 0 && Date.now() < deadline) return;
        clearTimeout(timer);
        this.unregistered.delete(done);
        resolve();
      };
      const deadline = Date.now() + timeoutMs;
      const timer = setTimeout(done, timeoutMs);
      this.unregistered.add(done);
    });
  }

  /**
   * Wakes the client's stream if this process holds it, handing it the new message when the
   * notification carried one; returns whether it did.
   */
  dispatch(clientId: Uint8Array, message?: Message): boolean {
    const s = this.streams.get(bytesToHex(clientId));
    if (!s) return false;
    if (message && s.offer) s.offer(message);
    else s.wake();
    return true;
  }

  /** Wakes every stream (e.g. new broadcasts), spread over time so as not to stampede the DB. */
  async dispatchAll(perSecond = 200): Promise<void> {
    const all = [...this.streams.values()];
    for (let i = 0; i < all.length; i++) {
      all[i]!.wake();
      if ((i + 1) % perSecond === 0) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /** One sweep over the connected clients; exported for tests. */
  async sweep(): Promise<void> {
    if (this.sweeping || this.streams.size === 0) return;
    this.sweeping = true;
    try {
      const batch = this.opts.sweepBatch ?? 500;
      const ids = [...this.streams.values()].map((s) => s.clientId);
      for (let i = 0; i < ids.length; i += batch) {
        const due = await this.opts.store.clientsWithDueMessages(ids.slice(i, i + batch));
        for (const id of due) this.dispatch(id);
      }
      if (this.sweepFailing) this.opts.logger.info("due-message sweep works again");
      this.sweepFailing = false;
    } catch (e) {
      if (!this.sweepFailing) {
        this.opts.logger.warn({ err: (e as Error).message }, "due-message sweep failed; will retry");
      }
      this.sweepFailing = true;
    } finally {
      this.sweeping = false;
    }
  }

  close(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }
}
