// At most one log line per interval for an event that an outsider can cause at will (refused
// notifications, connections shed under load), so that abuse cannot flood the logs; the line
// says how many were not logged since the previous one.
export class LogThrottle {
  #last = Number.NEGATIVE_INFINITY;
  #suppressed = 0;

  constructor(private readonly intervalMs: number) {}

  /** Calls `log` with the number of suppressed events if the interval has passed, else counts. */
  run(log: (suppressed: number) => void, nowMs = Date.now()): void {
    if (nowMs - this.#last < this.intervalMs) {
      this.#suppressed++;
      return;
    }
    this.#last = nowMs;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    log(suppressed);
  }
}
