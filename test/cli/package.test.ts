// What `npm pack` ships is enough to run the four binaries: the tarball is unpacked beside this
// repository's installed dependencies (as `npm install -g` would put them) and each bin runs.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");

describe("npm pack", () => {
  const dir = mkdtempSync(join(tmpdir(), "fs-pack-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("ships runnable fleetspeak-server, -client, -config and -admin, without tests", () => {
    const [packed] = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: ROOT, encoding: "utf8" }),
    ) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = packed!.files.map((f) => f.path);
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("bench/")), "no tests or benchmarks");
    assert.ok(files.includes("deploy/systemd/fleetspeak-server.service"));
    assert.ok(files.includes("deploy/examples/configurator.config"));

    execFileSync("tar", ["-xzf", join(dir, packed!.filename), "-C", dir]);
    const pkg = join(dir, "package");
    // The repository's dependencies, linked one by one so that caches the binaries write (the
    // client's bundle in node_modules/.cache) stay in the unpacked package.
    mkdirSync(join(pkg, "node_modules"));
    for (const dep of readdirSync(join(ROOT, "node_modules")).filter((d) => d !== ".cache")) {
      symlinkSync(join(ROOT, "node_modules", dep), join(pkg, "node_modules", dep));
    }
    const bins = (JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")) as { bin: Record<string, string> }).bin;
    assert.deepEqual(Object.keys(bins).sort(), ["fleetspeak-admin", "fleetspeak-client", "fleetspeak-config", "fleetspeak-server"]);
    for (const [name, path] of Object.entries(bins)) {
      const r = spawnSync(process.execPath, [join(pkg, path), "--help"], { cwd: dir, encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, `${name} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: ${name} `), name);
    }
  });
});
