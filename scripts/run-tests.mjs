// Runs every test file under test/ with node's built-in runner. Node 20 neither expands globs nor
// finds .ts files in a directory, so the list is built here; an empty list is an error, not a pass.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { testRunnerArgs } from "./test-runner-args.mjs";

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...collect(path));
    else if (name.endsWith(".test.ts")) out.push(path);
  }
  return out;
}

const filter = process.argv.slice(2);
let files = collect("test");
if (filter.length > 0) files = files.filter((f) => filter.some((p) => f.includes(p)));
if (files.length === 0) {
  console.error("run-tests: no test files found under test/");
  process.exit(1);
}
// Tests run the sources through tsx, but the processes they start run the binaries, which run the
// compiled dist/: build it first (esbuild, a fraction of a second) so that it is never stale here.
const build = spawnSync(process.execPath, [join(import.meta.dirname, "build.mjs")], { stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);
const concurrency = process.env.TEST_CONCURRENCY ?? "2";
// Servers and clients started inside tests log warnings and errors only, unless asked otherwise.
const env = { ...process.env, FLEETSPEAK_LOG_LEVEL: process.env.FLEETSPEAK_LOG_LEVEL ?? "warn" };
const result = spawnSync(process.execPath, testRunnerArgs(files, { concurrency }), { stdio: "inherit", env });
process.exit(result.status ?? 1);
