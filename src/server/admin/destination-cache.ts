// Where InsertMessage should send a client's new-message notification, remembered per process.
// Without it, every InsertMessage reads the client's record from the database, and on a busy
// admin server that round trip costs more CPU than the rest of the call.
//
// Only clients that exist are remembered: an unknown client may enroll at any moment, and a
// message for it must be accepted as soon as it has. A remembered address goes out of date when the
// client reconnects to another frontend; the old frontend then answers that it holds no such
// stream and the caller forgets the entry (AdminService). So an address worth notifying is kept a
// minute, but "nothing to notify" (a polling client, or a stream last seen too long ago) only a
// few seconds: a client that starts streaming should be notified soon, and nobody would tell us.

/** A notification is only worth sending when the client's stream was seen this recently. */
export const STREAMING_CONTACT_FRESH_MS = 10 * 60 * 1000;

/** What InsertMessage needs from a client's record. */
export interface Destination {
  /** Notification address of the frontend that last held the client's stream; "" if none. */
  streamingTo: string;
  /** The client's last contact, in ms since the epoch; 0 if it never made one. */
  lastContactMs: number;
}

/** The address to notify about new messages for this client, if any is worth notifying now. */
export function notificationTarget(d: Destination, nowMs: number): string | undefined {
  return d.streamingTo !== "" && nowMs - d.lastContactMs < STREAMING_CONTACT_FRESH_MS ? d.streamingTo : undefined;
}

export interface DestinationCacheOptions {
  /** How long an entry with an address worth notifying is kept. Default 60 s. */
  notifiableTtlMs?: number;
  /** How long an entry without one is kept. Default 5 s. */
  otherTtlMs?: number;
  /** The most entries kept; the oldest go first. Default 100,000 (about 25 MB when full). */
  maxEntries?: number;
  /** The clock, for tests. */
  now?: () => number;
}

interface Entry {
  destination: Destination;
  expiresAtMs: number;
}

export class DestinationCache {
  readonly #notifiableTtlMs: number;
  readonly #otherTtlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  /** By client ID in hex; a Map iterates in insertion order, so the first entry is the oldest. */
  readonly #entries = new Map<string, Entry>();

  constructor(opts: DestinationCacheOptions = {}) {
    this.#notifiableTtlMs = opts.notifiableTtlMs ?? 60_000;
    this.#otherTtlMs = opts.otherTtlMs ?? 5_000;
    this.#maxEntries = opts.maxEntries ?? 100_000;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(clientIdHex: string): Destination | undefined {
    const entry = this.#entries.get(clientIdHex);
    if (!entry) return undefined;
    if (entry.expiresAtMs <= this.#now()) {
      this.#entries.delete(clientIdHex);
      return undefined;
    }
    return entry.destination;
  }

  set(clientIdHex: string, destination: Destination): void {
    // Re-inserting moves the entry to the young end, so eviction order stays by age.
    this.#entries.delete(clientIdHex);
    this.#entries.set(clientIdHex, { destination, expiresAtMs: this.#expiry(destination) });
    if (this.#entries.size > this.#maxEntries) this.#evictOldest();
  }

  delete(clientIdHex: string): void {
    this.#entries.delete(clientIdHex);
  }

  #expiry(d: Destination): number {
    const now = this.#now();
    if (notificationTarget(d, now) === undefined) return now + this.#otherTtlMs;
    // Not past the moment the recorded contact becomes too old to notify: from then on the
    // database, which may hold a newer contact, decides, not a copy that says "too old".
    return Math.min(now + this.#notifiableTtlMs, d.lastContactMs + STREAMING_CONTACT_FRESH_MS);
  }

  /** The oldest entry is the nearest to (or past) its expiry among those of its kind. */
  #evictOldest(): void {
    const oldest = this.#entries.keys().next();
    if (!oldest.done) this.#entries.delete(oldest.value);
  }
}
