// Which worker process holds which client's stream, as the workers report it. Reports arrive in
// batches, so the directory can lag a stream by a few milliseconds; the supervisor treats an entry
// as a hint (the named worker is asked first, then the others).
export class StreamDirectory {
  readonly #where = new Map<string, number>();
  readonly #held = new Map<number, number>();

  /** A worker's report: streams it started and stopped holding, and how many it holds now. */
  report(worker: number, opened: readonly string[], closed: readonly string[], held: number): void {
    for (const id of closed) if (this.#where.get(id) === worker) this.#where.delete(id);
    for (const id of opened) this.#where.set(id, worker);
    this.#held.set(worker, held);
  }

  /** The worker that last reported holding this client's stream. */
  lookup(clientIdHex: string): number | undefined {
    return this.#where.get(clientIdHex);
  }

  /** A worker exited: none of its streams is held any more. */
  forget(worker: number): void {
    for (const [id, w] of this.#where) if (w === worker) this.#where.delete(id);
    this.#held.delete(worker);
  }

  /** Streams held by every worker together. */
  get total(): number {
    let n = 0;
    for (const h of this.#held.values()) n += h;
    return n;
  }
}
