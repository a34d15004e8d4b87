// Client machines set up the way Fleetspeak's users set theirs up, for the tests that move a client
// between Fleetspeak's Go client and ours: the deployment comes from Fleetspeak's own
// fleetspeak_config (test/support/go-server.ts) and is served by ours or by Fleetspeak's server;
// clients of either kind run on a configuration directory laid out as Fleetspeak's packages lay it
// out. Fleetspeak's own
// generated Python modules read the state files and write the binary service configs, so neither
// direction relies on our protobuf code to judge our protobuf code.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FleetspeakGo, fleetspeakGo } from "../../support/fleetspeak-go.js";
import { type GoDeployment, goComponentsConfig, makeGoDeployment, startGoServer } from "../../support/go-server.js";
import { type ManagedProcess, manage, startServerProcess } from "../../support/processes.js";
import { PYTHON, REPO, tempDir } from "./client-env.js";

const FILES_PY = join(REPO, "test/support/python/fleetspeak_client_files.py");

export type ServerKind = "ours" | "go";

/**
 * A deployment made by fleetspeak_config on its own SQLite file, served by our server or by
 * Fleetspeak's (both read the same components config, `mysql_data_source_name: "sqlite:…"`).
 */
export async function startDeployment(
  kind: ServerKind,
  services: string,
): Promise<{ deployment: GoDeployment; server: ManagedProcess }> {
  const dir = tempDir(`fs-${kind}-site-`);
  const deployment = await makeGoDeployment(`sqlite:${join(dir, "fleetspeak.sqlite")}`, `site-${kind}`);
  const server =
    kind === "go"
      ? await startGoServer(deployment, services)
      : await startServerProcess({ name: "our-server", components: goComponentsConfig(deployment), services });
  return { deployment, server };
}

/** One machine's client files: the config, its configuration directory and state file. */
export interface ClientTree {
  configFile: string;
  configDir: string;
  stateFile: string;
}

/**
 * Lays out a client as Fleetspeak's Linux package does (`<dir>/etc/fleetspeak-client/` with
 * communicator.txt, textservices/ and services/; the state file under `<dir>/var/lib/misc/`), its
 * config being fleetspeak_config's Linux client config with only those two paths moved under `dir`.
 */
export function installClientTree(
  deployment: GoDeployment,
  services: { text?: Record<string, string>; signedDaemons?: Record<string, { name: string; argv: string[] }> } = {},
  dir = tempDir("fs-machine-"),
): ClientTree {
  const configDir = join(dir, "etc/fleetspeak-client");
  const stateFile = join(dir, "var/lib/misc/fleetspeak-client.state");
  let config = readFileSync(deployment.clientConfigPath, "utf8");
  for (const [goPath, ours] of [
    ["/etc/fleetspeak-client", configDir],
    ["/var/lib/misc/fleetspeak-client.state", stateFile],
  ] as const) {
    if (!config.includes(JSON.stringify(goPath))) {
      throw new Error(`fleetspeak_config's Linux client config no longer holds ${goPath}:\n${config}`);
    }
    config = config.replace(JSON.stringify(goPath), JSON.stringify(ours));
  }
  mkdirSync(join(configDir, "textservices"), { recursive: true });
  mkdirSync(join(configDir, "services"), { recursive: true });
  mkdirSync(join(dir, "var/lib/misc"), { recursive: true });
  const configFile = join(configDir, "client.config");
  writeFileSync(configFile, config);
  writeFileSync(
    join(configDir, "communicator.txt"),
    "# fleetspeak.client.CommunicatorConfig: retry fast after a failure (tests restart servers)\nmin_failure_delay_seconds: 1\n",
  );
  for (const [file, text] of Object.entries(services.text ?? {})) {
    writeFileSync(join(configDir, "textservices", file), text);
  }
  for (const [file, { name, argv }] of Object.entries(services.signedDaemons ?? {})) {
    fleetspeakPython(["daemon-service", join(configDir, "services", file), name, ...argv]);
  }
  return { configFile, configDir, stateFile };
}

/** Fleetspeak's Go client on a config file, supervised (killed if the test process exits). */
export function startGoClient(name: string, configFile: string): ManagedProcess {
  const go = fleetspeakGo();
  const proc = spawn(go.client, ["-config", configFile, "-logtostderr"], { stdio: ["ignore", "pipe", "pipe"] });
  return manage(name, proc);
}

/** Our fleetspeak-client on a config file, supervised likewise; it logs at info level. */
export function startOurClient(name: string, configFile: string, args: string[] = []): ManagedProcess {
  const proc = spawn(process.execPath, [join(REPO, "bin/fleetspeak-client.js"), "-config", configFile, ...args], {
    cwd: tmpdir(),
    env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return manage(name, proc);
}

/** `fleetspeak-client -config FILE -print_client_id`, run to its end. */
export function printClientId(configFile: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(REPO, "bin/fleetspeak-client.js"), "-config", configFile, "-print_client_id"], {
    cwd: tmpdir(),
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A fleetspeak.client.ClientState as Fleetspeak's own Python module decodes it. */
export interface DecodedState {
  /** Field numbers present in the file, known and unknown. */
  fields: number[];
  clientKey: string;
  sequencingNonce: bigint;
  revokedCertSerials: string[];
}

export function decodeStateFile(path: string): DecodedState {
  const out = JSON.parse(fleetspeakPython(["state", path]));
  return {
    fields: out.fields,
    clientKey: out.client_key,
    sequencingNonce: BigInt(out.sequencing_nonce),
    revokedCertSerials: out.revoked_cert_serials,
  };
}

function fleetspeakPython(args: string[]): string {
  const go: FleetspeakGo = fleetspeakGo();
  return execFileSync(PYTHON, [FILES_PY, ...args], {
    env: { ...process.env, PYTHONPATH: go.pythonPath },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}
