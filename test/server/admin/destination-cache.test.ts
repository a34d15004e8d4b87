import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Destination,
  DestinationCache,
  notificationTarget,
  STREAMING_CONTACT_FRESH_MS,
} from "../../../src/server/admin/destination-cache.js";

const T0 = 1_700_000_000_000;

/** A cache on a clock the test moves by hand. */
function cacheAt(maxEntries?: number): { cache: DestinationCache; advance(ms: number): void } {
  let now = T0;
  const cache = new DestinationCache({ now: () => now, ...(maxEntries !== undefined ? { maxEntries } : {}) });
  return {
    cache,
    advance(ms) {
      now += ms;
    },
  };
}

const streaming = (lastContactMs = T0): Destination => ({ streamingTo: "frontend-a:10000", lastContactMs });
const polling: Destination = { streamingTo: "", lastContactMs: T0 };

describe("destination cache", () => {
  it("names a target only for a recorded stream whose last contact is fresh", () => {
    assert.equal(notificationTarget(streaming(), T0), "frontend-a:10000");
    assert.equal(notificationTarget(streaming(), T0 + STREAMING_CONTACT_FRESH_MS - 1), "frontend-a:10000");
    assert.equal(notificationTarget(streaming(), T0 + STREAMING_CONTACT_FRESH_MS), undefined);
    assert.equal(notificationTarget(polling, T0), undefined);
  });

  it("keeps a client with a stream to notify for 60 s", () => {
    const { cache, advance } = cacheAt();
    cache.set("a", streaming());
    advance(59_999);
    assert.deepEqual(cache.get("a"), streaming());
    advance(1);
    assert.equal(cache.get("a"), undefined);
    assert.equal(cache.size, 0, "an expired entry is dropped when met");
  });

  it("keeps a client with nothing to notify (polling, or a stream seen too long ago) for 5 s", () => {
    const { cache, advance } = cacheAt();
    cache.set("polling", polling);
    cache.set("stale", streaming(T0 - STREAMING_CONTACT_FRESH_MS));
    advance(4_999);
    assert.ok(cache.get("polling"));
    assert.ok(cache.get("stale"));
    advance(1);
    assert.equal(cache.get("polling"), undefined);
    assert.equal(cache.get("stale"), undefined);
  });

  it("drops a stream's entry when its last contact turns too old to notify, so the store decides again", () => {
    const { cache, advance } = cacheAt();
    const lastContact = T0 - STREAMING_CONTACT_FRESH_MS + 20_000;
    cache.set("a", streaming(lastContact));
    advance(19_999);
    assert.equal(notificationTarget(cache.get("a")!, T0 + 19_999), "frontend-a:10000");
    advance(1);
    assert.equal(cache.get("a"), undefined);
  });

  it("holds at most maxEntries, dropping the oldest first; a refreshed entry counts as young", () => {
    const { cache } = cacheAt(3);
    for (const id of ["a", "b", "c"]) cache.set(id, polling);
    cache.set("a", streaming());
    cache.set("d", polling);
    assert.equal(cache.size, 3);
    assert.equal(cache.get("b"), undefined);
    assert.deepEqual(cache.get("a"), streaming());
    assert.ok(cache.get("c"));
    assert.ok(cache.get("d"));
  });

  it("forgets an entry on delete", () => {
    const { cache } = cacheAt();
    cache.set("a", streaming());
    cache.delete("a");
    assert.equal(cache.get("a"), undefined);
  });
});
