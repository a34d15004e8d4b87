// The launchers in bin/ run the compiled dist/: in a checkout whose dist/ is missing, or older
// than a file of src/, they stop with one line naming `npm run build` instead of running old code.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");

describe("bin/ and dist/", () => {
  const tree = mkdtempSync(join(tmpdir(), "fs-build-"));
  after(() => rmSync(tree, { recursive: true, force: true }));
  cpSync(join(ROOT, "bin"), join(tree, "bin"), { recursive: true });
  writeFileSync(join(tree, "package.json"), '{ "type": "module" }\n');
  mkdirSync(join(tree, "src/common"), { recursive: true });
  writeFileSync(join(tree, "src/common/ids.ts"), "export {};\n");
  const run = () => spawnSync(process.execPath, [join(tree, "bin/fleetspeak-admin.js"), "--help"], { encoding: "utf8" });

  it("refuses to start without dist/, naming npm run build", () => {
    const r = run();
    assert.equal(r.status, 1);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, `fleetspeak-admin: dist/ is missing or incomplete; run \`npm run build\` in ${tree}\n`);
  });

  it("refuses a dist/ older than a source file, naming the file", () => {
    mkdirSync(join(tree, "dist/cli"), { recursive: true });
    writeFileSync(join(tree, "dist/cli/fleetspeak-admin.js"), 'process.stdout.write("compiled\\n");\n');
    writeFileSync(join(tree, "dist/BUILD-STAMP"), "built\n");
    const past = new Date(Date.now() - 60_000);
    utimesSync(join(tree, "dist/BUILD-STAMP"), past, past);
    const r = run();
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `fleetspeak-admin: src/common/ids.ts changed after the last build; run \`npm run build\` in ${tree}\n`);
  });

  it("refuses a dist/ older than a source directory (a file removed)", () => {
    const past = new Date(Date.now() - 120_000);
    utimesSync(join(tree, "src/common/ids.ts"), past, past);
    const r = run();
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^fleetspeak-admin: files in src(\/common)? were added or removed after the last build; run `npm run build` in /);
  });

  it("runs dist/ once it is newer than every source file", () => {
    const past = new Date(Date.now() - 120_000);
    for (const path of ["src", "src/common", "src/common/ids.ts"]) utimesSync(join(tree, path), past, past);
    const r = run();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "compiled\n");
  });
});
