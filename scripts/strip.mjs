// Shared by the packaging scripts: strips an ELF file (the node binary, a native addon).
import { execFileSync } from "node:child_process";

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
