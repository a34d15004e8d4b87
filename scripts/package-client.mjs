// `npm run package:client`: out/fleetspeak-client, one self-contained linux-x64 executable of the
// client for machines without Node.js (Node's single executable applications):
//   1. esbuild bundles src/cli/fleetspeak-client.ts and its dependencies into one CommonJS file
//      (the client needs no native module: it never loads better-sqlite3 or mysql2);
//   2. `node --experimental-sea-config` turns the bundle into a blob;
//   3. postject injects the blob into a copy of the node binary running this script (stripped of
//      its debug symbols: ~13 MiB).
// The executable takes the same flags and config files as bin/fleetspeak-client.js.
//
//   node scripts/package-client.mjs [--out DIR]      (default out/)
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { clientLogPlugin, loadEsbuild, stripDebugSymbols } from "./build-tools.mjs";

const ROOT = resolve(import.meta.dirname, "..");
const { values } = parseArgs({ options: { out: { type: "string", default: join(ROOT, "out") } } });
const OUT = resolve(values.out);
const WORK = join(OUT, "client-sea");
/**
 * bin/fleetspeak-client.js's node flags (see there). A single executable takes no node flags from
 * its command line, so it sets them first thing, after V8 has started: measured idle, that keeps
 * ~2.5 MiB of the ~7 MiB they save when given at start (bench/RESULTS.md, single executable).
 */
const V8_FLAGS = "--max-semi-space-size=1 --optimize-for-size --lite-mode";
/** The fuse postject flips so that node looks for the blob (from Node's SEA documentation). */
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

if (process.platform !== "linux" || process.arch !== "x64") {
  console.error(`package-client: builds a linux-x64 executable from this machine's node; this is ${process.platform}-${process.arch}`);
  process.exit(1);
}
const major = Number(process.versions.node.split(".")[0]);
if (major < 20) {
  console.error(`package-client: needs Node.js 20 or newer (single executable applications); this is ${process.version}`);
  process.exit(1);
}
const esbuild = await loadEsbuild("package-client");

rmSync(WORK, { recursive: true, force: true });
mkdirSync(WORK, { recursive: true });
const bundle = join(WORK, "fleetspeak-client.cjs");
await esbuild.build({
  entryPoints: [join(ROOT, "src/cli/fleetspeak-client.ts")],
  absWorkingDir: ROOT,
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  minify: true,
  banner: { js: `require("node:v8").setFlagsFromString(${JSON.stringify(V8_FLAGS)});` },
  outfile: bundle,
  plugins: [clientLogPlugin],
  logLevel: "warning",
});

const seaConfig = join(WORK, "sea-config.json");
const blob = join(WORK, "sea-prep.blob");
writeFileSync(seaConfig, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true }));
try {
  execFileSync(process.execPath, ["--experimental-sea-config", seaConfig], { stdio: "pipe" });
} catch (e) {
  console.error(`package-client: node --experimental-sea-config failed: ${e.stderr}`);
  process.exit(1);
}

const exe = join(OUT, "fleetspeak-client");
rmSync(exe, { force: true });
copyFileSync(process.execPath, exe);
chmodSync(exe, 0o755);
stripDebugSymbols(exe);
const postject = join(ROOT, "node_modules/postject/dist/cli.js");
// postject warns about ELF note sections it does not know on every run; its output matters only
// when it fails.
try {
  execFileSync(process.execPath, [postject, exe, "NODE_SEA_BLOB", blob, "--sentinel-fuse", SEA_FUSE], { stdio: "pipe" });
} catch (e) {
  console.error(`package-client: postject failed: ${e.stderr}`);
  process.exit(1);
}
rmSync(WORK, { recursive: true, force: true });
const mib = (statSync(exe).size / 1024 / 1024).toFixed(1);
console.log(`package-client: ${exe} (${mib} MiB, node ${process.version}, linux-x64)`);
