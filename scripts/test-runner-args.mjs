// The `node` arguments that run test files: shared by run-tests.mjs and the test that checks no
// result is lost on the way to the report (test/cli/run-tests.test.ts).
import { join } from "node:path";

/** Arguments for `node` that run `files` with the built-in test runner. */
export function testRunnerArgs(files, { concurrency = "2", reporter } = {}) {
  return [
    "--import",
    "tsx",
    // Keeps --test-force-exit from dropping the last results or the summary (see the file).
    "--require",
    join(import.meta.dirname, "test-stdout.cjs"),
    "--test",
    `--test-concurrency=${concurrency}`,
    // A test that hangs (a handle left open) fails after 5 minutes instead of stalling the run.
    "--test-timeout=300000",
    "--test-force-exit",
    ...(reporter ? [`--test-reporter=${reporter}`] : []),
    ...files,
  ];
}
