// log-lite.ts (the client bundles' logger) against log.ts's pino logger: the same calls must give
// the same lines, but for the time stamp.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { liteRootLogger, type Logger } from "../../src/common/log-lite.js";
import { pinoRootLogger } from "../../src/common/log.js";

function pair(level: string): { lite: Logger; pino: Logger; lines: () => [string[], string[]] } {
  const liteOut: string[] = [];
  const pinoOut: string[] = [];
  const lite = liteRootLogger((s) => liteOut.push(s), level);
  const pino = pinoRootLogger({ write: (s: string) => void pinoOut.push(s) }, level);
  const noTime = (l: string) => l.replace(/"time":"[^"]*"/, '"time":"T"');
  return { lite, pino, lines: () => [liteOut.map(noTime), pinoOut.map(noTime)] };
}

describe("log-lite", () => {
  it("writes what pino writes for the client's kinds of calls", () => {
    const { lite, pino, lines } = pair("debug");
    for (const root of [lite, pino]) {
      const log = root.child({ component: "fleetspeak-client" });
      log.info("started");
      log.info({ clientId: "0a1b", servers: ["a:1", "b:2"], streaming: true, n: 3 }, "connected");
      log.warn({ err: 'quote " and back\\slash', why: "tab\there, newline\nthere" }, "failed");
      log.error({ missing: undefined, f: () => 1, inf: Infinity, nested: { a: [1, { b: null }] } }, "odd values");
      log.error({ err: "just a string" });
      log.warn({ long: "x".repeat(150), unicode: "é → ✓" }, "é");
      log.debug({ big: 1.5e300, neg: -0 }, "numbers");
      log.trace("below the level: not written");
      const svc = log.child({ service: "Daemon", daemonPid: 42 });
      svc.info({ service: "again" }, "bindings come first, duplicates kept");
      svc.fatal({ code: 7 }, "die");
      svc.info(new Error("an error first"));
      svc.warn({ err: new Error("an error in err") }, "with err");
      log.info({ msg: "msg in the object" });
      log.level = "warn";
      log.info("not written after raising the level");
      log.warn("written");
    }
    const [l, p] = lines();
    // Error stacks differ by the line that made them; compare them without the stack.
    const noStack = (s: string) => s.replace(/"stack":"(?:[^"\\]|\\.)*"/, '"stack":"S"');
    assert.deepEqual(l.map(noStack), p.map(noStack));
    assert.equal(l.length, 13);
    for (const line of l) JSON.parse(line);
  });

  it("refuses an unknown level with pino's words, and writes nothing at silent", () => {
    for (const make of [(l: string) => liteRootLogger(() => {}, l), (l: string) => pinoRootLogger({ write: () => {} }, l)]) {
      assert.throws(() => make("verbose"), /^Error: default level:verbose must be included in custom levels$/);
      assert.throws(() => (make("info").level = "verbose"), /^Error: unknown level verbose$/);
    }
    const { lite, pino, lines } = pair("silent");
    for (const root of [lite, pino]) root.child({ component: "x" }).fatal("nothing");
    assert.deepEqual(lines(), [[], []]);
  });
});
