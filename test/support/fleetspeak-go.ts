// The real Fleetspeak (Go server, client, config and admin tools, and GRR's Python connector),
// for the tests that claim compatibility with it. scripts/test-deps.sh (run before `npm test`)
// builds it with the workplace's shared/fleetspeak-go/build.sh when missing, under a lock so that
// test files starting together do not build it twice; a test file run on its own asks the same
// script. A build that cannot be made is a test failure saying what to run, never a skip.
import { execFileSync } from "node:child_process";
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

let cached: FleetspeakGo | undefined;

/** The real Fleetspeak, built on first use (a few minutes the first time on a fresh machine). */
export function fleetspeakGo(): FleetspeakGo {
  if (cached) return cached;
  const dir = process.env.FLEETSPEAK_GO_DIR ?? "/tmp/fleetspeak-go";
  // Exits 0 at once when the build is there; otherwise builds it, or prints what to run and fails.
  execFileSync(join(ROOT, "scripts/test-deps.sh"), ["fleetspeak-go"], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, FLEETSPEAK_GO_DIR: dir },
  });
  const bin = join(dir, "bin");
  cached = {
    bin,
    pythonPath: join(dir, "grr"),
    server: join(bin, "fleetspeak_server"),
    client: join(bin, "fleetspeak_client"),
    config: join(bin, "fleetspeak_config"),
    admin: join(bin, "fleetspeak_admin"),
  };
  return cached;
}
