// A server-wide budget for request data that has been received but not processed yet: large
// stream frames while they arrive and until they are processed, poll bodies while they are read.
// Without it, a few hundred connections each sending a 20 MiB frame (the protocol's limit) would
// hold gigabytes. Small amounts (below SMALL_REQUEST_BYTES, nearly every real contact) do not
// need the budget, so that whoever fills it delays only other large uploads.

/** Frames and bodies up to this size are read without the budget. */
export const SMALL_REQUEST_BYTES = 64 * 1024;
/** Default budget: with 20 MiB frames, about 25 of them at once. */
export const DEFAULT_MAX_BUFFERED_REQUEST_BYTES = 512 * 1024 * 1024;

/** The fixed part of uploadDeadlineMs. */
export const DEFAULT_UPLOAD_GRACE_MS = 30_000;

/**
 * How long a sender may take to deliver `bytes` once it started: a grace period (30 s), plus one
 * second per 64 KiB (a 20 MiB frame gets about 6 minutes). A sender slower than that is holding
 * memory, not uploading.
 */
export function uploadDeadlineMs(bytes: number, graceMs = DEFAULT_UPLOAD_GRACE_MS): number {
  return graceMs + Math.ceil(bytes / 65_536) * 1000;
}

/** Bytes held from a budget; release() is idempotent. */
export interface Reservation {
  readonly bytes: number;
  /** Adds `more` bytes if they fit now; false (and nothing added) if not. */
  tryGrow(more: number): boolean;
  release(): void;
}

interface Waiter {
  bytes: number;
  grant: (r: Reservation) => void;
}

export class BufferBudget {
  #used = 0;
  readonly #waiters: Waiter[] = [];

  constructor(readonly limit: number) {}

  /** Bytes reserved now. */
  get used(): number {
    return this.#used;
  }

  /** Senders waiting for room. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Reserves `bytes` now if they fit, else returns undefined. A request larger than the whole
   * budget fits when nothing else is reserved, so that it is never refused for ever.
   */
  tryReserve(bytes: number): Reservation | undefined {
    if (this.#waiters.length > 0 || !this.#fits(bytes)) return undefined;
    return this.#grant(bytes);
  }

  /** Waits (first come, first served) until `bytes` fit; rejects if `signal` aborts first. */
  reserve(bytes: number, signal?: AbortSignal): Promise<Reservation> {
    const now = this.tryReserve(bytes);
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { bytes, grant: resolve };
      this.#waiters.push(waiter);
      signal?.addEventListener(
        "abort",
        () => {
          const i = this.#waiters.indexOf(waiter);
          if (i < 0) return;
          this.#waiters.splice(i, 1);
          reject(signal.reason);
          this.#wake();
        },
        { once: true },
      );
    });
  }

  /** Whether `bytes` more fit, for a holder that already has `own` of the bytes used. */
  #fits(bytes: number, own = 0): boolean {
    return this.#used === own || this.#used + bytes <= this.limit;
  }

  #grant(bytes: number): Reservation {
    this.#used += bytes;
    let held = bytes;
    let released = false;
    return {
      get bytes() {
        return held;
      },
      tryGrow: (more) => {
        if (released || !this.#fits(more, held) || this.#waiters.length > 0) return false;
        this.#used += more;
        held += more;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.#used -= held;
        this.#wake();
      },
    };
  }

  #wake(): void {
    while (this.#waiters.length > 0 && this.#fits(this.#waiters[0]!.bytes)) {
      const w = this.#waiters.shift()!;
      w.grant(this.#grant(w.bytes));
    }
  }
}
