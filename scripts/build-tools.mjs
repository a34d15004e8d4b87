// Shared by the build and packaging scripts: esbuild, which only a checkout with its development
// dependencies has, and strip for ELF files (the node binary, a native addon).
import { execFileSync } from "node:child_process";
import { join } from "node:path";

/** esbuild, or exit with one line saying how to get it; `who` names the script in that line. */
export async function loadEsbuild(who) {
  try {
    return await import("esbuild");
  } catch {
    console.error(`${who}: esbuild is not installed (a development dependency); run \`npm install\` in the checkout first`);
    process.exit(1);
  }
}

/**
 * Drops the symbol tables and debug info of an ELF file (~13 MiB of the node binary); the dynamic
 * symbols that native addons link against stay. Skipped, with a note, where binutils is missing.
 */
export function stripDebugSymbols(file) {
  try {
    execFileSync("strip", ["--strip-unneeded", file], { stdio: "pipe" });
  } catch (e) {
    console.error(`packaging: ${file} left unstripped (${e.code === "ENOENT" ? "no strip: apt-get install binutils" : e.stderr})`);
  }
}

/**
 * esbuild plugin for the client's bundles: src/common/log.ts (pino) becomes src/common/log-lite.ts,
 * which writes the same lines without pino (~1.8 MiB less idle RSS; see log-lite.ts).
 */
export const clientLogPlugin = {
  name: "client-log-lite",
  setup(build) {
    build.onResolve({ filter: /\/common\/log\.js$/ }, (args) => {
      const path = join(args.resolveDir, args.path).replace(/log\.js$/, "log-lite.ts");
      return path.includes("/src/common/") ? { path } : undefined;
    });
  },
};
