// whenAborted: many waiters on one AbortSignal through one real 'abort' listener.
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, it } from "node:test";
import { whenAborted } from "../../src/common/abort-listeners.js";

describe("whenAborted", () => {
  it("calls every waiter still registered, once, in order, through one listener", () => {
    const c = new AbortController();
    const called: number[] = [];
    const stops = [1, 2, 3, 4].map((n) => whenAborted(c.signal, () => called.push(n)));
    assert.equal(getEventListeners(c.signal, "abort").length, 1, "one listener on the signal");
    stops[1]!(); // waiter 2 finished first
    c.abort();
    c.abort();
    assert.deepEqual(called, [1, 3, 4]);
    assert.equal(getEventListeners(c.signal, "abort").length, 0, "the listener is gone after the abort");
  });

  it("leaves nothing to call when every waiter took itself off", () => {
    const c = new AbortController();
    let called = false;
    for (let i = 0; i < 1000; i++) whenAborted(c.signal, () => (called = true))();
    assert.equal(getEventListeners(c.signal, "abort").length, 1);
    c.abort();
    assert.equal(called, false);
  });
});
