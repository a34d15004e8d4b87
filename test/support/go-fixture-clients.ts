// The Go fixture's client machines: each a directory as a Fleetspeak client installation has it
// (the client config written by the real fleetspeak_config, edited the way an operator does:
// labels and per-machine paths; communicator.txt; a text service config for a daemon service
// written against GRR's Python connector; the state file the client writes), and the client
// process, Fleetspeak's own (Go) or ours, started on that directory.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { clientIdOfKey, keyFromSec1Der } from "../../src/common/certs.js";
import { clientIdToHex } from "../../src/common/ids.js";
import { ClientStateSchema } from "../../src/gen/fleetspeak_client/client_pb.js";
import type { FleetspeakGo } from "./fleetspeak-go.js";
import { type ManagedProcess, manage } from "./processes.js";

const ROOT = resolve(import.meta.dirname, "../..");
const DAEMON = join(import.meta.dirname, "go-fixture-daemon.py");

/** The daemon service every fixture client runs (named as GRR's is). */
export const DAEMON_SERVICE = "GRR";

export interface ClientMachine {
  name: string;
  /** The machine's directory: etc/ (configuration directory) and var/ (state). */
  dir: string;
  configFile: string;
  configDir: string;
  stateFile: string;
  /** Lines "<message id hex> <type>" that the daemon service wrote for every message it got. */
  receivedLog: string;
}

/**
 * Writes a client machine's directory from the configurator's linux client config: that config
 * names /etc and /var/lib paths and one empty label, so the paths and labels are set per machine,
 * as an operator packaging the client does.
 */
export function writeClientMachine(
  root: string,
  name: string,
  configuratorConfig: string,
  opts: { labels: string[]; streaming: boolean },
  go: FleetspeakGo,
): ClientMachine {
  const { labels } = opts;
  const dir = join(root, "clients", name);
  const configDir = join(dir, "etc");
  const stateFile = join(dir, "var", "fleetspeak-client.state");
  const receivedLog = join(dir, "received.log");
  mkdirSync(join(configDir, "textservices"), { recursive: true });
  mkdirSync(join(configDir, "services"), { recursive: true });
  mkdirSync(join(dir, "var"), { recursive: true });
  const labelText = labels.map((l) => `client_label:${JSON.stringify(l)}`).join(" ");
  const handler = `filesystem_handler:{configuration_directory:${JSON.stringify(configDir)} state_file:${JSON.stringify(stateFile)}}`;
  const streaming = `streaming:${opts.streaming}`;
  const configText = configuratorConfig
    .replace(/client_label:\s*""/, labelText)
    .replace(/filesystem_handler:\s*\{[^}]*\}/, handler)
    .replace(/streaming:\s*true/, streaming);
  if (!configText.includes(handler) || !configText.includes(streaming) || (labels.length > 0 && !configText.includes(labelText))) {
    throw new Error(`fleetspeak_config's linux client config has an unexpected shape; cannot set paths and labels in:\n${configuratorConfig}`);
  }
  const configFile = join(configDir, "client.config");
  writeFileSync(configFile, configText);
  // Reconnect within a second after a server restart (Fleetspeak's default waits minutes).
  writeFileSync(
    join(configDir, "communicator.txt"),
    "min_failure_delay_seconds: 1\nmax_poll_delay_seconds: 1\nmax_buffer_delay_seconds: 1\n",
  );
  const argv = ["/usr/bin/env", `PYTHONPATH=${go.pythonPath}`, "/usr/bin/python3", DAEMON, receivedLog];
  writeFileSync(
    join(configDir, "textservices", "grr_service_config.txt"),
    `name: "${DAEMON_SERVICE}"
factory: "Daemon"
config: {
  [type.googleapis.com/fleetspeak.daemonservice.Config]: {
${argv.map((a) => `    argv: ${JSON.stringify(a)}`).join("\n")}
    resource_monitoring_sample_size: 2
    resource_monitoring_sample_period: { seconds: 1 }
  }
}
`,
  );
  return { name, dir, configFile, configDir, stateFile, receivedLog };
}

export interface MachineState {
  /** The ID of the key in the state file. */
  clientId: string;
  sequencingNonce: bigint;
  /** Revoked server-certificate serials (hex) the client keeps. */
  revokedSerials: string[];
}

/** What the machine's state file holds, once the client wrote it. */
export function machineState(m: ClientMachine): MachineState | undefined {
  if (!existsSync(m.stateFile)) return undefined;
  const state = fromBinary(ClientStateSchema, readFileSync(m.stateFile));
  if (state.clientKey.length === 0) return undefined;
  return {
    clientId: clientIdToHex(clientIdOfKey(keyFromSec1Der(state.clientKey, m.stateFile))),
    sequencingNonce: state.sequencingNonce,
    revokedSerials: state.revokedCertSerials.map((s) => Buffer.from(s).toString("hex")).sort(),
  };
}

/** Points the machine's client config at another server ("host:port"). */
export function pointMachineAt(m: ClientMachine, server: string): void {
  const text = readFileSync(m.configFile, "utf8");
  const replaced = text.replace(/\bserver:\s*"[^"]*"/, `server:${JSON.stringify(server)}`);
  if (replaced === text && !text.includes(`server:${JSON.stringify(server)}`)) {
    throw new Error(`no server entry to replace in ${m.configFile}`);
  }
  writeFileSync(m.configFile, replaced);
}

export type ClientKind = "go" | "ours";

/** Starts the machine's client: Fleetspeak's own (Go) binary or ours, on the same files. */
export function startClient(kind: ClientKind, m: ClientMachine, go: FleetspeakGo): ManagedProcess {
  const proc =
    kind === "go"
      ? spawn(go.client, ["-config", m.configFile, "-logtostderr"], { stdio: ["ignore", "pipe", "pipe"] })
      : spawn(process.execPath, [join(ROOT, "bin/fleetspeak-client.js"), "-config", m.configFile], {
          cwd: ROOT,
          env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "info", FLEETSPEAK_DAEMON_RESPAWN_DELAY_MS: "500" },
          stdio: ["ignore", "pipe", "pipe"],
        });
  return manage(`${kind} client ${m.name}`, proc);
}

/** What the machine's daemon service received so far, in order. */
export function receivedBy(m: ClientMachine): Array<{ messageId: string; messageType: string }> {
  if (!existsSync(m.receivedLog)) return [];
  return readFileSync(m.receivedLog, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const [messageId = "", messageType = ""] = l.split(" ");
      return { messageId, messageType };
    });
}
