// The real Fleetspeak (Go server, client, config and admin tools, and GRR's Python connector),
// for the tests that claim compatibility with it: built from the source kept in the workplace's
// shared/fleetspeak-go by its build.sh (see its README). A missing build is made here, once, under
// a lock so that test files starting together do not build it twice; a missing build script is a
// test failure that says where to find it, never a skip.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");

export interface FleetspeakGo {
  /** Directory of fleetspeak_server, fleetspeak_client, fleetspeak_config, fleetspeak_admin. */
  bin: string;
  /** PYTHONPATH for /usr/bin/python3: fleetspeak.server_connector, fleetspeak.client_connector. */
  pythonPath: string;
  server: string;
  client: string;
  config: string;
  admin: string;
}

const BINARIES = ["fleetspeak_server", "fleetspeak_client", "fleetspeak_config", "fleetspeak_admin"];

/** Where build.sh lives: FLEETSPEAK_GO_SRC, or shared/fleetspeak-go beside the checkout. */
function buildScript(): string {
  const candidates = [
    process.env.FLEETSPEAK_GO_SRC,
    join(ROOT, "../shared/fleetspeak-go"),
    "/work/shared/fleetspeak-go",
  ].filter((d): d is string => d !== undefined);
  for (const d of candidates) {
    if (existsSync(join(d, "build.sh"))) return join(d, "build.sh");
  }
  throw new Error(
    `cannot find the real Fleetspeak's build script (looked in ${candidates.join(", ")}); ` +
      "set FLEETSPEAK_GO_SRC to the folder holding build.sh and fleetspeak-src.tar.gz",
  );
}

function layout(dir: string): FleetspeakGo {
  const bin = join(dir, "bin");
  return {
    bin,
    pythonPath: join(dir, "grr"),
    server: join(bin, "fleetspeak_server"),
    client: join(bin, "fleetspeak_client"),
    config: join(bin, "fleetspeak_config"),
    admin: join(bin, "fleetspeak_admin"),
  };
}

function built(fs: FleetspeakGo): boolean {
  return BINARIES.every((b) => existsSync(join(fs.bin, b))) && existsSync(join(fs.pythonPath, "fleetspeak"));
}

let cached: FleetspeakGo | undefined;

/** The real Fleetspeak, built on first use (a few minutes the first time on a fresh machine). */
export function fleetspeakGo(): FleetspeakGo {
  if (cached) return cached;
  const dir = process.env.FLEETSPEAK_GO_DIR ?? "/tmp/fleetspeak-go";
  const fs = layout(dir);
  if (!built(fs)) {
    // flock serialises concurrent test files; the second one finds the build done and returns.
    const script = buildScript();
    execFileSync(
      "flock",
      [`${dir}.lock`, "sh", "-c", `${BINARIES.map((b) => `[ -x "$0/bin/${b}" ]`).join(" && ")} || exec "$1"`, dir, script],
      { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, FLEETSPEAK_GO_DIR: dir }, cwd: ROOT },
    );
    if (!built(fs)) throw new Error(`${script} finished but ${fs.bin} lacks the Fleetspeak binaries`);
  }
  cached = fs;
  return fs;
}
