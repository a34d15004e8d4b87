// scripts/run-tests.mjs (what `npm test` and CI run) reports every test that ran: Node's runner
// with --test-force-exit drops what a process still had queued for its stdout when it exits
// (nodejs/node#64833): a test file's last results (the run passes with fewer tests than ran, or
// names only the file when a dropped test failed) or the runner's own summary. The arguments
// run-tests.mjs gives the runner prevent that; without them this test fails on every run here.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
// @ts-expect-error: a plain .mjs script without type declarations
import { testRunnerArgs } from "../../scripts/test-runner-args.mjs";

const FILES = 8;
const TESTS_PER_FILE = 200;

/** Runs the files as run-tests.mjs does, with the TAP reporter; resolves with its output and status. */
function runTests(files: string[], env: Record<string, string> = {}): Promise<{ status: number | null; out: string }> {
  const args = (testRunnerArgs as (f: string[], o: object) => string[])(files, { concurrency: "4", reporter: "tap" });
  // Outside `node --test`: this test's own NODE_TEST_CONTEXT would make the runner a child.
  const { NODE_TEST_CONTEXT: _, ...parentEnv } = process.env;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { env: { ...parentEnv, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.setEncoding("utf8").on("data", (c: string) => {
      out += c;
    });
    p.stderr.resume();
    const timer = setTimeout(() => p.kill("SIGKILL"), 120_000);
    p.on("error", reject);
    p.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, out });
    });
  });
}

const count = (out: string, what: string) => Number(new RegExp(`^# ${what} (\\d+)$`, "m").exec(out)?.[1] ?? Number.NaN);

describe("scripts/run-tests.mjs", () => {
  let dir: string;
  let files: string[];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "fs-run-tests-"));
    // Many fast tests with long names: a file's results are still being written to the pipe when
    // its last test ends (what made the loss happen on every run without the fix, here).
    files = Array.from({ length: FILES }, (_, i) => {
      const f = join(dir, `f${i}.test.mjs`);
      writeFileSync(
        f,
        `import { test } from "node:test";\n` +
          `const long = "x".repeat(2000);\n` +
          `for (let i = 0; i < ${TESTS_PER_FILE}; i++) {\n` +
          `  test(\`t\${i} \${long}\`, () => { if (process.env.FAIL_LAST && i === ${TESTS_PER_FILE - 1}) throw new Error("the last test of f${i} failed"); });\n` +
          `}\n`,
      );
      return f;
    });
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it("reports every test of every file, in three runs out of three", async () => {
    for (let run = 0; run < 3; run++) {
      const r = await runTests(files);
      assert.equal(r.status, 0);
      assert.equal(count(r.out, "tests"), FILES * TESTS_PER_FILE, `run ${run + 1}`);
      assert.equal(count(r.out, "pass"), FILES * TESTS_PER_FILE, `run ${run + 1}`);
    }
  });

  it("names a failing last test and its error, and fails", async () => {
    const r = await runTests(files, { FAIL_LAST: "1" });
    assert.equal(r.status, 1);
    assert.equal(count(r.out, "fail"), FILES);
    for (let i = 0; i < FILES; i++) assert.match(r.out, new RegExp(`the last test of f${i} failed`));
  });
});
