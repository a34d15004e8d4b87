// A token bucket: `ratePerSecond` events on average, bursts of up to `burst`. Used to bound how
// many frames one stream may make the server process per second: a frame costs a parse, a store
// call and an acknowledgement, and an empty frame is a single byte on the wire.
export class TokenBucket {
  #tokens: number;
  #updated: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now = performance.now(),
  ) {
    this.#tokens = burst;
    this.#updated = now;
  }

  /** Takes a token: 0 if one was there, else how many milliseconds until one will be. */
  take(now = performance.now()): number {
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#updated) * this.ratePerSecond) / 1000);
    this.#updated = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.#tokens) * 1000) / this.ratePerSecond);
  }
}
