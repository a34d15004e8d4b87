// Shared by the four launchers: runs a compiled entry point of dist/cli/ (`npm run build` makes
// dist/ from src/). In a checkout, where src/ sits beside dist/, a missing dist/ or a source file
// newer than dist/BUILD-STAMP stops the launcher with one line naming `npm run build`: running
// yesterday's code after an edit is worse than not starting. The check stats every file of src/
// (~150 files, about a millisecond); an installed package has no src/ and skips it.
import { readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Why dist/ cannot run as it is, or undefined if it can (scripts/build.mjs asks too). */
export function distProblem() {
  let built;
  try {
    built = statSync(join(ROOT, "dist/BUILD-STAMP")).mtimeMs;
  } catch {
    return "dist/ is missing or incomplete";
  }
  const src = join(ROOT, "src");
  let files;
  try {
    files = readdirSync(src, { recursive: true });
  } catch {
    return undefined; // an installed package: no sources to compare with
  }
  // A directory newer than the build had a file added, renamed or removed; an edited file is
  // named rather than its directory when both are newer.
  let changedDir;
  for (const file of files) {
    const stat = statSync(join(src, file));
    if (stat.mtimeMs <= built) continue;
    if (!stat.isDirectory()) return `src/${file} changed after the last build`;
    changedDir ??= `src/${file}`;
  }
  return changedDir && `files in ${changedDir} were added or removed after the last build`;
}

/**
 * Runs dist/cli/<name>.js (or another file of dist/), or exits with one line if dist/ is missing
 * or stale.
 */
export async function runCompiled(name, file = `cli/${name}.js`) {
  const problem = distProblem();
  if (problem) {
    process.stderr.write(`${name}: ${problem}; run \`npm run build\` in ${ROOT}\n`);
    process.exit(1);
  }
  await import(pathToFileURL(join(ROOT, "dist", file)).href);
}
