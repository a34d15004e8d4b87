// The small pieces behind the frontend's limits: the server-wide buffer budget and the per-stream
// frame rate.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BufferBudget, type Reservation, uploadDeadlineMs } from "../../../src/server/security/buffer-budget.js";
import { TokenBucket } from "../../../src/server/security/token-bucket.js";
import { LogThrottle } from "../../../src/server/security/log-throttle.js";

describe("buffer budget", () => {
  it("grants what fits, makes the rest wait in arrival order, and wakes them as room is given back", async () => {
    const b = new BufferBudget(100);
    const a = b.tryReserve(60)!;
    assert.equal(b.used, 60);
    assert.equal(b.tryReserve(50), undefined);
    const order: string[] = [];
    const inOrder = (name: string) => (r: Reservation) => {
      order.push(name);
      return r;
    };
    const second = b.reserve(50).then(inOrder("50"));
    const third = b.reserve(10).then(inOrder("10"));
    // Waiters go first: even what would fit now waits its turn.
    assert.equal(b.tryReserve(10), undefined);
    assert.equal(b.waiting, 2);
    a.release();
    a.release();
    const [r2, r3] = await Promise.all([second, third]);
    assert.deepEqual(order, ["50", "10"]);
    assert.equal(b.used, 60);
    r2.release();
    r3.release();
    assert.equal(b.used, 0);
  });

  it("lets a request larger than the whole budget through when nothing else is held, and grows reservations while they fit", () => {
    const b = new BufferBudget(100);
    const big = b.tryReserve(500)!;
    assert.equal(b.used, 500);
    assert.ok(big.tryGrow(100), "the only holder may grow");
    big.release();
    const other = b.tryReserve(30)!;
    const small = b.tryReserve(10)!;
    assert.ok(small.tryGrow(60));
    assert.equal(small.tryGrow(1), false);
    assert.equal(small.bytes, 70);
    small.release();
    other.release();
    assert.equal(b.used, 0);
  });

  it("drops a waiter whose signal aborts, and lets the next one in", async () => {
    const b = new BufferBudget(100);
    const held = b.tryReserve(90)!;
    const abort = new AbortController();
    const gone = b.reserve(50, abort.signal);
    const next = b.reserve(10);
    abort.abort(new Error("stream closed"));
    await assert.rejects(gone, /stream closed/);
    const r = await next;
    assert.equal(b.used, 100);
    r.release();
    held.release();
  });

  it("gives an upload a grace period plus a second per 64 KiB", () => {
    assert.equal(uploadDeadlineMs(0), 30_000);
    assert.equal(uploadDeadlineMs(20 * 1024 * 1024), 30_000 + 320_000);
    assert.equal(uploadDeadlineMs(65_537, 500), 2_500);
  });
});

describe("token bucket", () => {
  it("allows a burst, then one event per 1/rate seconds", () => {
    const t = new TokenBucket(10, 3, 0);
    assert.deepEqual([t.take(0), t.take(0), t.take(0)], [0, 0, 0]);
    assert.equal(t.take(0), 100);
    assert.equal(t.take(100), 0);
    assert.equal(t.take(150), 50);
    // Idle time refills up to the burst, no further.
    assert.deepEqual([t.take(10_000), t.take(10_000), t.take(10_000), t.take(10_000) > 0], [0, 0, 0, true]);
  });
});

describe("log throttle", () => {
  it("logs once per interval and says how many it left out", () => {
    const lines: number[] = [];
    const t = new LogThrottle(1000);
    for (const now of [0, 10, 20, 999, 1000, 1500, 2100]) t.run((suppressed) => lines.push(suppressed), now);
    assert.deepEqual(lines, [0, 3, 1]);
  });
});
