// The fault table's guarantee, checked on every run: on the seed topology under streaming load
// (every delivery acknowledged, a steady InsertMessage stream), no message acknowledged to the
// inserter is lost and none is delivered again after its ack was stored, whether a frontend or an
// admin server is killed, the single MariaDB restarts, or the writer of a Galera cluster (behind
// HAProxy, single-writer) is killed and rejoins. No server exits by itself. The figures (delays,
// errors, repetitions) are the benchmark's: npm run bench -- faults. SIGTERM on a frontend has
// its own test (frontend-drain.test.ts), and so has a database outage's effect on clients
// (database-outage.test.ts).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runFaults, type SetupResult } from "../../bench/faults.js";

function assertNothingLost(r: SetupResult): void {
  assert.deepEqual(r.crashed, [], "servers that exited by themselves");
  assert.equal(r.baselineLost, 0);
  for (const run of r.runs) {
    const what = `${r.setup} ${run.fault} (${run.detail})`;
    assert.ok(run.inserted > 50, `${what}: only ${run.inserted} messages inserted`);
    assert.equal(run.lost, 0, `${what}: lost ${run.lostIds.join(", ")}`);
    assert.equal(run.deliveredAfterAck, 0, `${what}: delivered again after the ack was stored`);
  }
}

describe("faults on the seed topology lose nothing acknowledged", { timeout: 400_000 }, () => {
  const common = { repeat: 1, clients: 20, rate: 20, baselineSeconds: 3, observeSeconds: 15, log: () => {} };

  it("single MariaDB: SIGKILL a frontend, SIGKILL an admin server, restart the database", async () => {
    assertNothingLost(await runFaults({ ...common, setup: "mariadb", faults: ["frontend-kill", "admin-kill", "db-restart"] }));
  });

  it("Galera behind HAProxy: kill the writer node and bring it back", async () => {
    assertNothingLost(await runFaults({ ...common, setup: "galera-haproxy", faults: ["node-kill"] }));
  });
});
