// Preloaded (--require) into `node --test`, the runner, and so into every process it starts for a
// test file (see test-runner-args.mjs). A test file's process reports its results to the runner
// through its stdout, and the runner prints the report to its own; both are pipes in CI, and Node
// writes to them asynchronously. With --test-force-exit each calls process.exit() once the tests
// are done, and whatever was still queued for the pipe is dropped: the run reported fewer tests
// than ran and exited 0, a failure among the dropped results showed only as "test failed" on its
// file, or the summary was missing (nodejs/node#64833; seen here as a file whose last 9 subtests
// were missing from a CI run). Blocking writes lose nothing. The processes that tests start
// (servers, clients) are left alone: they are neither the runner nor a test file.
"use strict";
const isRunner = process.execArgv.includes("--test");
const isTestFile = process.env.NODE_TEST_CONTEXT !== undefined && /\.test\.[cm]?[jt]s$/.test(process.argv[1] || "");
if (isRunner || isTestFile) {
  const handle = process.stdout._handle;
  if (handle && typeof handle.setBlocking === "function") handle.setBlocking(true);
}
