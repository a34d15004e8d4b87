import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Coalescer } from "../../src/common/coalescer.js";

describe("Coalescer (group commit)", () => {
  it("hands calls made together to one batch and answers each caller with its own result", async () => {
    const batches: number[][] = [];
    const c = new Coalescer<number, number>(
      async (items) => {
        batches.push(items);
        return items.map((i) => i * 10);
      },
      { maxBatch: 100, maxInFlight: 1 },
    );
    const out = await Promise.all([1, 2, 3].map((i) => c.submit(i)));
    assert.deepEqual(out, [10, 20, 30]);
    assert.deepEqual(batches, [[1, 2, 3]]);
  });

  it("gathers calls that arrive while a batch runs, within maxBatch", async () => {
    const batches: number[][] = [];
    let release: () => void = () => {};
    const c = new Coalescer<number, void>(
      async (items) => {
        batches.push(items);
        if (batches.length === 1) await new Promise<void>((r) => (release = r));
        return items.map(() => undefined);
      },
      { maxBatch: 2, maxInFlight: 1 },
    );
    const first = c.submit(0);
    await new Promise((r) => setImmediate(r));
    const rest = [1, 2, 3].map((i) => c.submit(i));
    release();
    await Promise.all([first, ...rest]);
    assert.deepEqual(batches, [[0], [1, 2], [3]]);
  });

  it("isolates a failing item so that the others succeed, or fails the whole batch when told not to", async () => {
    const run = async (items: number[]) => {
      if (items.includes(13)) throw new Error(items.length > 1 ? "batch has 13" : "13 is bad");
      if (items.includes(-1)) throw new Error("database down");
      return items;
    };
    const c = new Coalescer<number, number>(run, {
      maxBatch: 10,
      maxInFlight: 1,
      isolate: (e) => (e as Error).message !== "database down",
    });
    const r = await Promise.allSettled([1, 13, 2].map((i) => c.submit(i)));
    assert.deepEqual(
      r.map((x) => (x.status === "fulfilled" ? x.value : (x.reason as Error).message)),
      [1, "13 is bad", 2],
    );
    const down = await Promise.allSettled([1, -1].map((i) => c.submit(i)));
    assert.deepEqual(
      down.map((x) => x.status),
      ["rejected", "rejected"],
    );
  });

  it("with lingerMs, gathers calls made within that time into one batch", async () => {
    const batches: number[][] = [];
    const c = new Coalescer<number, number>(
      async (items) => {
        batches.push(items);
        return items;
      },
      { maxBatch: 100, maxInFlight: 1, lingerMs: 50 },
    );
    const first = c.submit(1);
    await new Promise((r) => setTimeout(r, 10));
    const second = c.submit(2);
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
    assert.deepEqual(batches, [[1, 2]]);
  });
});
