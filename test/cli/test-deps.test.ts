// scripts/test-deps.sh, the set-up `npm test` runs first: on a ready machine it only looks and
// says nothing; where it cannot fix what is missing (not root), it stops with one line naming
// what is missing and the command that installs it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");
const SCRIPT = join(ROOT, "scripts/test-deps.sh");

/** Runs the script, as an unprivileged user when this test runs as root. */
function run(args: string[], env: Record<string, string>, unprivileged: boolean) {
  const asNobody = unprivileged && process.getuid?.() === 0;
  const [cmd, argv] = asNobody
    ? ["setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "bash", SCRIPT, ...args]]
    : ["bash", [SCRIPT, ...args]];
  return spawnSync(cmd, argv, { encoding: "utf8", env: { ...process.env, ...env } });
}

describe("scripts/test-deps.sh", () => {
  it("on a ready machine (npm test's pretest has run) says nothing and exits 0", () => {
    const r = run([], {}, false);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, "");
  });

  it("without root, stops with one line naming what is missing and the commands that install it", () => {
    const empty = mkdtempSync(join(tmpdir(), "fs-test-deps-"));
    try {
      const r = run([], { FLEETSPEAK_GO_DIR: join(empty, "none") }, true);
      assert.equal(r.status, 1);
      assert.equal(r.stdout, "");
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, new RegExp(`^test-deps: missing: .*the real Fleetspeak \\(Go\\) in ${empty}/none \\(sudo \\S+/build\\.sh\\)`));
      assert.match(lines[0]!, /or all at once: sudo scripts\/test-deps\.sh$/);

      const go = run(["fleetspeak-go"], { FLEETSPEAK_GO_DIR: join(empty, "none") }, true);
      assert.equal(go.status, 1);
      assert.match(go.stderr, /^test-deps: the real Fleetspeak \(Go\) is not built in \S+; build it with: sudo \S+\/build\.sh\n$/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it("installs every package of scripts/test-packages.txt (.ci/run goes through the same script)", () => {
    const wanted = readFileSync(join(ROOT, "scripts/test-packages.txt"), "utf8")
      .split("\n")
      .map((l) => l.replace(/#.*/, "").trim())
      .filter(Boolean);
    assert.ok(wanted.includes("haproxy") && wanted.includes("mariadb-server"));
    for (const p of wanted) {
      const status = spawnSync("dpkg", ["-s", p], { encoding: "utf8" });
      assert.match(status.stdout, /^Status: install ok installed$/m, `${p} is not installed`);
    }
    assert.match(readFileSync(join(ROOT, ".ci/run"), "utf8"), /^scripts\/test-deps\.sh$/m);
  });
});
