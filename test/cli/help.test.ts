// Asking for help works the way people ask: --help, -h (as in Go) and `help`, for each binary and
// for fleetspeak-server's subcommand; a wrong word gets one line pointing at the help.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");

function run(bin: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [join(ROOT, "bin", `${bin}.js`), ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("help", () => {
  it("every binary answers --help and -h with its usage", () => {
    for (const bin of ["fleetspeak-server", "fleetspeak-client", "fleetspeak-config", "fleetspeak-admin"]) {
      for (const flag of ["--help", "-h"]) {
        const r = run(bin, flag);
        assert.equal(r.code, 0, `${bin} ${flag}: ${r.err}`);
        assert.match(r.out, new RegExp(`^usage: ${bin} `), `${bin} ${flag}`);
      }
    }
  });

  it("fleetspeak-server's subcommands (prune, migrate) and fleetspeak-admin console-token answer --help and help SUB", () => {
    for (const args of [["prune", "--help"], ["prune", "-h"], ["help", "prune"]]) {
      const r = run("fleetspeak-server", ...args);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^usage: fleetspeak-server prune \(-mysql_data_source_name DSN \| -sqlite_path FILE\)/);
    }
    assert.match(run("fleetspeak-server", "help").out, /^usage: fleetspeak-server \[--components_config FILE\]/);
    for (const args of [["migrate", "--help"], ["help", "migrate"]]) {
      assert.match(run("fleetspeak-server", ...args).out, /^usage: fleetspeak-server migrate /);
    }
    assert.match(run("fleetspeak-admin", "console-token", "--help").out, /^usage: fleetspeak-admin console-token /);
  });

  it("fleetspeak-server answers an unknown word or flag with one line", () => {
    for (const [arg, what] of [["check", /Unexpected argument 'check'; subcommands: prune, migrate/], ["--bogus", /Unknown option '--bogus'/]] as const) {
      const r = run("fleetspeak-server", arg);
      assert.equal(r.code, 2);
      assert.equal(r.err.trimEnd().split("\n").length, 1, r.err);
      assert.match(r.err, what);
      assert.match(r.err, /; usage: fleetspeak-server .*\(fleetspeak-server --help says more\)$/m);
    }
  });
});
