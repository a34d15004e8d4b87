// docs/architecture.md, held to the code: every path it names exists, every folder of src/ has a
// row in its import table and imports only what that row allows (imports are parsed from the
// sources, type-only ones included), the contract-only rooms are entered only through their
// contracts, there are no import cycles, and each config field is read in the file it names.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");
const PAGE = readFileSync(join(ROOT, "docs/architecture.md"), "utf8");

/** The rows of the first table after the heading `## <heading>` (header and rule left out), as cells. */
function tables(heading: string): string[][][] {
  const section = PAGE.split(/^## /m).find((s) => s.startsWith(`${heading}\n`));
  assert.ok(section, `docs/architecture.md has no section "## ${heading}"`);
  const out: string[][][] = [];
  let current: string[][] | undefined;
  for (const line of section.split("\n")) {
    if (!line.startsWith("|")) {
      current = undefined;
      continue;
    }
    const cells = line.slice(1, -1).split("|").map((c) => c.trim());
    if (!current) {
      current = [];
      out.push(current);
      continue; // the header row
    }
    if (cells.every((c) => /^-+$/.test(c))) continue;
    current.push(cells);
  }
  return out;
}

/** The `backticked` words of a cell. */
const ticked = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

function sourceDirs(dir: string): string[] {
  return [
    `${dir}/`,
    ...readdirSync(join(ROOT, dir), { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .flatMap((e) => sourceDirs(join(dir, e.name))),
  ];
}

/**
 * Every relative import of a source file (static, dynamic, re-exports), as a repository path;
 * with `runtime`, leaving out `import type` statements, which vanish when compiled.
 */
function importsOf(file: string, runtime = false): string[] {
  const text = readFileSync(join(ROOT, file), "utf8");
  return [...text.matchAll(/(import type\b[^;]*?|\bfrom|\bimport)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)]
    .filter((m) => !(runtime && m[1]!.startsWith("import type")))
    .map((m) => relative(ROOT, resolve(ROOT, dirname(file), m[2]!)).replace(/\.js$/, ".ts"));
}

const folderOf = (file: string) => `${dirname(file)}/`;
const OURS = sourceFiles("src").filter((f) => !f.startsWith("src/gen/"));
/** What every folder may import: generated code and the shared ground floor, subfolders included. */
const alwaysAllowed = (folder: string) => folder.startsWith("src/gen/") || folder.startsWith("src/common/");

describe("docs/architecture.md", () => {
  it("names only paths that exist", () => {
    const named = new Set(
      [...PAGE.matchAll(/`((?:src|test|proto|deploy|docs|scripts|bench|bin)\/[^`\s<>*]*)`/g)].map((m) => m[1]!),
    );
    assert.ok(named.size > 40, `only ${named.size} paths found`);
    const missing = [...named].filter((p) => !existsSync(join(ROOT, p)));
    assert.deepEqual(missing, []);
  });

  it("has a row for every folder of src/ in its import table, and the code imports only what the rows allow", () => {
    const [table] = tables("Which way imports run");
    const allowed = new Map(table!.map(([folder, imports]) => [ticked(folder!)[0]!, new Set(ticked(imports!))]));
    const folders = sourceDirs("src").filter((d) => d !== "src/" && !d.startsWith("src/gen/"));
    assert.deepEqual(folders.filter((d) => !allowed.has(d)), [], "folders without a row");
    assert.deepEqual([...allowed.keys()].filter((d) => !folders.includes(d)), [], "rows for folders that do not exist");

    const wrong: string[] = [];
    for (const file of OURS) {
      const from = folderOf(file);
      for (const target of importsOf(file)) {
        const to = folderOf(target);
        if (to === from || alwaysAllowed(to) || allowed.get(from)!.has(to)) continue;
        wrong.push(`${file} imports ${target}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it("src/common/ imports nothing of ours but src/gen/", () => {
    const wrong = OURS.filter((f) => f.startsWith("src/common/")).flatMap((file) =>
      importsOf(file)
        .filter((t) => !t.startsWith("src/common/") && !t.startsWith("src/gen/"))
        .map((t) => `${file} imports ${t}`),
    );
    assert.deepEqual(wrong, []);
  });

  it("enters the contract-only rooms only through their contracts", () => {
    const [, doors] = tables("Which way imports run");
    assert.ok(doors && doors.length >= 2, "the table of contract-only rooms");
    const wrong: string[] = [];
    for (const [folderCell, filesCell, exceptCell] of doors) {
      const room = ticked(folderCell!)[0]!;
      const open = new Set(ticked(filesCell!));
      const exceptions = new Map<string, Set<string>>();
      for (const part of exceptCell!.split(";")) {
        const [files, rooms] = part.split(":");
        for (const f of ticked(files ?? "")) exceptions.set(f, new Set(ticked(rooms ?? "")));
      }
      for (const file of OURS.filter((f) => folderOf(f) !== room)) {
        for (const target of importsOf(file).filter((t) => folderOf(t) === room)) {
          const name = target.slice(room.length);
          if (open.has(name) || exceptions.get(name)?.has(folderOf(file))) continue;
          wrong.push(`${file} imports ${target}`);
        }
      }
    }
    assert.deepEqual(wrong, []);
  });

  it("has no import cycles at run time", () => {
    const graph = new Map(OURS.map((f) => [f, importsOf(f, true)]));
    const state = new Map<string, "open" | "done">();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]) => {
      state.set(f, "open");
      for (const t of graph.get(f) ?? []) {
        if (state.get(t) === "open") cycles.push([...path.slice(path.indexOf(t)), t].join(" -> "));
        else if (!state.has(t)) visit(t, [...path, t]);
      }
      state.set(f, "done");
    };
    for (const f of graph.keys()) if (!state.has(f)) visit(f, [f]);
    assert.deepEqual(cycles, []);
  });

  it("names, for each config field, a file that reads it", () => {
    const camel = (field: string) => field.split(".").pop()!.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    const rows = tables("Where each config field is read").flat();
    assert.ok(rows.length >= 20, `only ${rows.length} rows`);
    const wrong: string[] = [];
    for (const [fields, readers] of rows) {
      const files = ticked(readers!).filter((f) => f.endsWith(".ts"));
      assert.ok(files.length > 0, `no file named for ${fields}`);
      const text = files.map((f) => readFileSync(join(ROOT, f), "utf8")).join("\n");
      for (const field of ticked(fields!)) {
        if (!new RegExp(`\\b${camel(field)}\\b`).test(text)) wrong.push(`${field} is not read in ${files.join(", ")}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it("is what docs/development.md points to", () => {
    const dev = readFileSync(join(ROOT, "docs/development.md"), "utf8");
    assert.match(dev, /\(architecture\.md\)/);
    assert.doesNotMatch(dev, /\.\.\/shared/);
    assert.ok(statSync(join(ROOT, "docs/architecture.md")).isFile());
  });
});
