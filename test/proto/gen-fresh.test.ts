// src/gen/ is committed; this catches a proto/ edit without `npm run gen`. It runs the project's own
// buf.gen.yaml (so plugin options cannot drift) into a temporary output directory and compares the
// result byte for byte with src/gen/.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(root, "node_modules", ".bin");
const committedDir = join(root, "src", "gen");

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out;
}

describe("generated code", () => {
  it("src/gen matches a fresh buf generate of proto/", { timeout: 180_000 }, () => {
    const tmp = mkdtempSync(join(tmpdir(), "fleetspeak-gen-"));
    try {
      // -o prefixes the template's out (src/gen); the local plugin protoc-gen-es is found via PATH.
      execFileSync(join(bin, "buf"), ["generate", "-o", tmp], {
        cwd: root,
        env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 150_000,
      });
      const freshDir = join(tmp, "src", "gen");
      const fresh = listFiles(freshDir);
      assert.ok(fresh.length > 0, `buf generate wrote nothing under ${freshDir}; check buf.gen.yaml's out`);

      const committed = new Set(listFiles(committedDir));
      const problems: string[] = [];
      for (const file of fresh) {
        const shown = join("src", "gen", file);
        if (!committed.has(file)) {
          problems.push(`${shown} is missing`);
        } else if (!readFileSync(join(freshDir, file)).equals(readFileSync(join(committedDir, file)))) {
          problems.push(`${shown} is stale`);
        }
        committed.delete(file);
      }
      for (const file of committed) problems.push(`${join("src", "gen", file)} is not generated from proto/ any more`);
      assert.deepEqual(problems, [], `generated code is out of date (${problems.join("; ")}): run npm run gen`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
