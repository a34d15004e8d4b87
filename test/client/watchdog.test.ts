import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Allowance, Watchdog } from "../../src/client/comms/communicator.js";

describe("communicator watchdog", () => {
  it("fires when the loop stops coming round, but not during a deliberate wait", async () => {
    let fired = 0;
    const dog = new Watchdog(() => fired++, 100);
    await dog.asleep(new Promise((r) => setTimeout(r, 300)));
    assert.equal(fired, 0, "a back-off sleep is not a hang");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(fired, 1);
    dog.stop();
  });
});

describe("AllowedMessages", () => {
  it("announces free inbox slots first, then what was processed since the previous frame", () => {
    const a = new Allowance();
    const counts = new Map([
      ["system", { accepted: 3, processed: 1 }],
      ["GRR", { accepted: 0, processed: 0 }],
    ]);
    assert.deepEqual(a.absolute(counts), { system: 98n, GRR: 100n });
    counts.set("system", { accepted: 5, processed: 5 });
    counts.set("New", { accepted: 0, processed: 0 });
    assert.deepEqual(a.delta(counts), { system: 4n, New: 100n });
    assert.deepEqual(a.delta(counts), {});
  });
});
