// `npm run build`: compiles src/ to JavaScript in dist/ (one .js and source map per .ts file, the
// same tree, and the client bundled into dist/fleetspeak-client.bundle.mjs), copies the console's assets beside their module, and writes dist/BUILD-STAMP last.
// The binaries in bin/ run dist/ and refuse to start when a file of src/ is newer than that stamp;
// when none is, this does nothing (`--force` builds anyway).
//
// esbuild transpiles each file on its own (~0.3 s for all of src/, against ~15 s for tsc's emit on
// this machine); the type check is `npm run typecheck` (tsc --noEmit), which `npm test` runs. esbuild
// only strips types here, so the two cannot disagree on what the code does.
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { distProblem } from "../bin/launch.js";
import { clientLogPlugin, loadEsbuild } from "./build-tools.mjs";

const ROOT = resolve(import.meta.dirname, "..");
const SRC = join(ROOT, "src");
const DIST = join(ROOT, "dist");
/** Files that modules read at run time next to themselves, copied as they are. */
const ASSETS = ["server/console/assets"];

// Up to date: nothing to do. This also keeps `npm pack` (which runs `prepare`) from emptying dist/
// under binaries that are running from it.
if (!process.argv.includes("--force") && distProblem() === undefined) process.exit(0);

const esbuild = await loadEsbuild("build");

function tsFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [path] : [];
  });
}

rmSync(DIST, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: tsFiles(SRC),
  outbase: SRC,
  outdir: DIST,
  absWorkingDir: ROOT,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "linked",
  logLevel: "warning",
});
if (result.errors.length > 0) process.exit(1);
// The client, which idles on every machine of a fleet, also as one file: loading one module
// instead of ~60 keeps ~2 MiB of resident memory away (bench/RESULTS.md); bin/fleetspeak-client.js
// runs it. Its logger is log-lite.ts (clientLogPlugin): the same lines without pino.
const clientBundle = await esbuild.build({
  entryPoints: [join(SRC, "cli/fleetspeak-client.ts")],
  outfile: join(DIST, "fleetspeak-client.bundle.mjs"),
  absWorkingDir: ROOT,
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "linked",
  plugins: [clientLogPlugin],
  logLevel: "warning",
  // Bundled CommonJS dependencies call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as __fsCreateRequire } from 'node:module'; const require = __fsCreateRequire(import.meta.url);" },
});
if (clientBundle.errors.length > 0) process.exit(1);
for (const assets of ASSETS) {
  for (const e of readdirSync(join(SRC, assets), { withFileTypes: true })) {
    if (!e.isFile()) continue;
    mkdirSync(join(DIST, assets), { recursive: true });
    copyFileSync(join(SRC, assets, e.name), join(DIST, assets, e.name));
  }
}
const stamp = join(DIST, "BUILD-STAMP");
mkdirSync(dirname(stamp), { recursive: true });
writeFileSync(stamp, `built from ${relative(ROOT, SRC)}/ at ${new Date().toISOString()}\n`);
