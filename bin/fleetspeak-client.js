#!/usr/bin/env -S node --max-semi-space-size=1 --optimize-for-size --lite-mode
// Launcher for fleetspeak-client, from any working directory.
//
// The shebang's V8 flags trade CPU for memory, as suits an agent that idles on every machine of a
// fleet: a 1 MiB young generation and --optimize-for-size keep ~35 MiB of heap growth away under
// a steady message flow, and --lite-mode (no optimizing compiler) saves ~7 MiB more at about
// twice the CPU per message (still ~6,000 msgs/s from one daemon; bench/client.ts measures it).
// `node bin/fleetspeak-client.js` skips the shebang: give node the same flags there.
//
// The client runs on every machine of a fleet, so its memory matters: loading the TypeScript
// sources through tsx costs ~35 MiB of resident memory on its own. The launcher therefore runs a
// single-file JavaScript bundle of the client, built with esbuild on first start and kept in
// node_modules/.cache/fleetspeak-client/. The bundle is rebuilt whenever one of the source files
// it was built from changed. If the bundle cannot be built or stored (no esbuild, read-only
// tree), or FLEETSPEAK_CLIENT_FROM_SOURCE=1 is set, the sources run through tsx instead.
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = join(root, "src/cli/fleetspeak-client.ts");
const cacheDir = join(root, "node_modules/.cache/fleetspeak-client");
const bundle = join(cacheDir, "fleetspeak-client.mjs");
const manifest = join(cacheDir, "inputs.json");

/** True if the bundle exists and every file it was built from is unchanged. */
function bundleIsFresh() {
  try {
    const inputs = JSON.parse(readFileSync(manifest, "utf8"));
    statSync(bundle);
    return Object.entries(inputs).every(([file, mtimeMs]) => statSync(join(root, file)).mtimeMs === mtimeMs);
  } catch {
    return false;
  }
}

async function buildBundle() {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    entryPoints: [entry],
    absWorkingDir: root,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: `${bundle}.${process.pid}.tmp`,
    metafile: true,
    logLevel: "silent",
    banner: { js: "import { createRequire as __fsCreateRequire } from 'node:module'; const require = __fsCreateRequire(import.meta.url);" },
  });
  const inputs = {};
  for (const file of Object.keys(result.metafile.inputs)) inputs[file] = statSync(join(root, file)).mtimeMs;
  renameSync(`${bundle}.${process.pid}.tmp`, bundle);
  writeFileSync(`${manifest}.${process.pid}.tmp`, JSON.stringify(inputs));
  renameSync(`${manifest}.${process.pid}.tmp`, manifest);
}

let useBundle = process.env.FLEETSPEAK_CLIENT_FROM_SOURCE !== "1";
if (useBundle && !bundleIsFresh()) {
  try {
    mkdirSync(cacheDir, { recursive: true });
    await buildBundle();
  } catch (e) {
    useBundle = false;
    process.stderr.write(`fleetspeak-client: running from source (cannot build the bundle: ${e.message})\n`);
  }
}
if (useBundle) {
  await import(pathToFileURL(bundle).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/fleetspeak-client.ts");
}
