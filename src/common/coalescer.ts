// Group commit for concurrent calls: calls that arrive while the database is busy are gathered and
// handed to it as one batch (one client lookup, one multi-row store), so that round trips, not
// rows, are what is paid per batch. An idle server sends each call on its own at once, so a lone
// caller waits no longer than without batching. Each caller still gets its own answer, and only
// after its own item was handled.

interface Pending<I, O> {
  item: I;
  resolve(o: O): void;
  reject(e: unknown): void;
}

export interface CoalescerOptions {
  /** Most items handed over at once. */
  maxBatch: number;
  /** Most batches running at once (they use separate database connections). */
  maxInFlight: number;
  /**
   * When a batch of several items fails with an error for which this returns true, each item is
   * run again on its own, so that one bad item does not fail the others.
   */
  isolate?(err: unknown): boolean;
  /**
   * Waits this long after the first item of a batch for more to join (unless maxBatch fill it
   * first), trading that much latency for fewer batches. For work no caller waits on closely,
   * such as applying acknowledgements. Default 0: hand over at the end of the event-loop turn.
   */
  lingerMs?: number;
}

export class Coalescer<I, O> {
  readonly #run: (items: I[]) => Promise<O[]>;
  readonly #opts: CoalescerOptions;
  #queue: Pending<I, O>[] = [];
  #inFlight = 0;
  #scheduled = false;

  /** `run` answers for every item, in order. */
  constructor(run: (items: I[]) => Promise<O[]>, opts: CoalescerOptions) {
    this.#run = run;
    this.#opts = opts;
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#opts.maxInFlight || this.#queue.length === 0) return;
    this.#scheduled = true;
    // Gather everything submitted during this turn of the event loop, or the linger time.
    const linger = this.#opts.lingerMs ?? 0;
    const later = linger > 0 && this.#queue.length < this.#opts.maxBatch ? (f: () => void) => setTimeout(f, linger) : setImmediate;
    later(() => {
      this.#scheduled = false;
      while (this.#inFlight < this.#opts.maxInFlight && this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#opts.maxBatch);
        this.#inFlight++;
        void this.#flush(batch).finally(() => {
          this.#inFlight--;
          this.#schedule();
        });
      }
    });
  }

  async #flush(batch: Pending<I, O>[]): Promise<void> {
    try {
      const out = await this.#run(batch.map((p) => p.item));
      batch.forEach((p, i) => {
        p.resolve(out[i] as O);
      });
    } catch (err) {
      if (batch.length > 1 && this.#opts.isolate?.(err)) {
        await Promise.all(batch.map((p) => this.#flush([p])));
      } else {
        for (const p of batch) p.reject(err);
      }
    }
  }
}
