// What the end-to-end tests of servers started with bench/loadgen/servers.ts look at from outside:
// a metric as /metrics shows it, and a condition awaited within a bound.
import { setTimeout as sleep } from "node:timers/promises";
import type { BenchServer } from "../../bench/loadgen/servers.js";
import { parseExposition, sampleValue } from "../server/observe/metrics-text.js";

/** One sample of the server's /metrics (the whole server's: every worker summed). */
export async function metric(server: BenchServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://${server.metricsAddress}/metrics`)).text();
  return sampleValue(parseExposition(text), name, labels);
}

/** Waits (bounded: generous, for a loaded machine) until `check` holds. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(200);
  }
}
