// What `npm pack` ships is enough to run the four binaries: the tarball is unpacked beside this
// repository's production dependencies only (as `npm install -g` would put them: no tsx, no
// esbuild, no TypeScript) and each bin runs its compiled JavaScript.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { after, describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");

describe("npm pack", () => {
  const dir = mkdtempSync(join(tmpdir(), "fs-pack-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("ships runnable fleetspeak-server, -client, -config and -admin, compiled, without tests or sources", () => {
    const [packed] = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: ROOT, encoding: "utf8" }),
    ) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = packed!.files.map((f) => f.path);
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("bench/")), "no tests or benchmarks");
    assert.ok(!files.some((f) => f.startsWith("src/") || f.endsWith(".ts")), "no TypeScript sources");
    assert.ok(files.includes("dist/cli/fleetspeak-server.js") && files.includes("dist/BUILD-STAMP"), "the compiled tree");
    assert.ok(files.includes("deploy/systemd/fleetspeak-server.service"));
    assert.ok(files.includes("deploy/examples/configurator.config"));

    execFileSync("tar", ["-xzf", join(dir, packed!.filename), "-C", dir]);
    const pkg = join(dir, "package");
    const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")) as {
      bin: Record<string, string>;
      dependencies: Record<string, string>;
    };
    for (const tool of ["tsx", "esbuild", "typescript"]) assert.ok(!(tool in manifest.dependencies), `${tool} is no run-time dependency`);
    // The repository's production dependencies (and theirs), linked one by one.
    const production = execFileSync("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: ROOT, encoding: "utf8" })
      .split("\n")
      .map((p) => relative(join(ROOT, "node_modules"), p))
      .filter((p) => p !== "" && !p.startsWith("..") && !p.includes("/node_modules/"));
    for (const dep of production) {
      mkdirSync(dirname(join(pkg, "node_modules", dep)), { recursive: true });
      symlinkSync(join(ROOT, "node_modules", dep), join(pkg, "node_modules", dep));
    }
    assert.ok(!existsSync(join(pkg, "node_modules/tsx")) && !existsSync(join(pkg, "node_modules/esbuild")));
    const bins = manifest.bin;
    assert.deepEqual(Object.keys(bins).sort(), ["fleetspeak-admin", "fleetspeak-client", "fleetspeak-config", "fleetspeak-server"]);
    for (const [name, path] of Object.entries(bins)) {
      const r = spawnSync(process.execPath, [join(pkg, path), "--help"], { cwd: dir, encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, `${name} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: ${name} `), name);
    }
  });
});
