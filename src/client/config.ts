// The client's configuration, read from Fleetspeak's own file formats:
//  - the main config (text `fleetspeak.client.generic.Config`, strict: an unknown field is an error),
//  - `<configuration_directory>/communicator.txt` (text `fleetspeak.client.CommunicatorConfig`,
//    lenient: unknown fields skipped, a broken file logged and replaced by the defaults),
//  - `<configuration_directory>/services/*` (binary `fleetspeak.SignedClientServiceConfig`) and
//    `<configuration_directory>/textservices/*` (text `fleetspeak.ClientServiceConfig`).
import { create, createRegistry, fromBinary, type Registry } from "@bufbuild/protobuf";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { CertificateError, parsePemCertificates } from "../common/certs.js";
import type { Logger } from "../common/log.js";
import { AddressError, parseHostPort } from "../common/net-address.js";
import { parseText, TextFormatError } from "../common/textproto/index.js";
import { type CommunicatorConfig, CommunicatorConfigSchema } from "../gen/fleetspeak_client/client_pb.js";
import { ConfigSchema as GenericConfigSchema } from "../gen/fleetspeak_client_generic/config_pb.js";
import { type Label, LabelSchema } from "../gen/fleetspeak/common_pb.js";
import {
  type ClientServiceConfig,
  ClientServiceConfigSchema,
  SignedClientServiceConfigSchema,
} from "../gen/fleetspeak/system_pb.js";
import { ConfigSchema as DaemonConfigSchema } from "../gen/fleetspeak_daemonservice/config_pb.js";
import { ConfigSchema as SocketConfigSchema } from "../gen/fleetspeak_socketservice/config_pb.js";
import { ConfigSchema as StdinConfigSchema } from "../gen/fleetspeak_stdinservice/config_pb.js";

export class ConfigError extends Error {}

/** The main config, checked and with the labels the client reports. */
export interface ClientConfig {
  /** Path of the main config file, for messages. */
  configFile: string;
  /** PEM text of the CA certificates that may sign the server's certificate. */
  trustedCertsPem: string;
  /** `host:port` entries, in the configured order. */
  servers: string[];
  /** GOARCH, GOOS, then every non-blank `client_label`, all with service_name "client". */
  labels: Label[];
  configurationDirectory: string;
  /** "" = keep no state (a new identity at every start), as in Fleetspeak. */
  stateFile: string;
  streaming: boolean;
  proxy: string;
  clientCertificateHeader: string;
  serverName: string;
}

/** Go's GOARCH spelling of this machine's architecture (servers match labels on it). */
export function goArch(arch: string = process.arch): string {
  const names: Record<string, string> = {
    x64: "amd64",
    ia32: "386",
    arm64: "arm64",
    arm: "arm",
    ppc64: "ppc64le",
    s390x: "s390x",
    riscv64: "riscv64",
    loong64: "loong64",
    mips: "mips",
    mipsel: "mipsle",
  };
  return names[arch] ?? arch;
}

/** Go's GOOS spelling of this machine's operating system. */
export function goOs(platform: string = process.platform): string {
  return platform === "win32" ? "windows" : platform;
}

/** Services configs may carry factory configs of these types inside their `Any`. */
export const serviceConfigRegistry: Registry = createRegistry(
  DaemonConfigSchema,
  SocketConfigSchema,
  StdinConfigSchema,
);

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads and checks the main config file; every problem names the file and the field. */
export function loadClientConfig(configFile: string): ClientConfig {
  if (configFile === "") {
    throw new ConfigError("no config file given; start the client with --config /etc/fleetspeak-client/client.config");
  }
  let text: string;
  try {
    text = readFileSync(configFile, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read the client config ${configFile}: ${describeError(e)}`);
  }
  let cfg: ReturnType<typeof parseText<typeof GenericConfigSchema>>;
  try {
    cfg = parseText(GenericConfigSchema, text, { fileName: configFile });
  } catch (e) {
    if (e instanceof TextFormatError) {
      throw new ConfigError(`client config is not a valid fleetspeak.client.generic.Config: ${e.message}`);
    }
    throw e;
  }

  try {
    parsePemCertificates(cfg.trustedCerts, `${configFile}: trusted_certs`);
  } catch (e) {
    if (e instanceof CertificateError) {
      throw new ConfigError(`unable to parse trusted_certs: ${e.message}; put the PEM of the deployment CA there`);
    }
    throw e;
  }

  if (cfg.server.length === 0) {
    throw new ConfigError(`${configFile}: no server provided; add at least one 'server: "host:port"'`);
  }
  for (const s of cfg.server) {
    try {
      parseHostPort(s);
    } catch (e) {
      if (e instanceof AddressError) throw new ConfigError(`${configFile}: server: ${e.message}`);
      throw e;
    }
  }

  const handler = cfg.persistenceHandler;
  if (handler.case === "registryHandler") {
    throw new ConfigError(
      `${configFile}: registry_handler is for Windows and is not supported here; use filesystem_handler`,
    );
  }
  if (handler.case !== "filesystemHandler") {
    throw new ConfigError(
      `${configFile}: persistence_handler is required; add filesystem_handler { configuration_directory: "/etc/fleetspeak-client" state_file: "/var/lib/misc/fleetspeak-client.state" }`,
    );
  }
  const { configurationDirectory, stateFile } = handler.value;
  if (configurationDirectory === "") {
    throw new ConfigError(`${configFile}: filesystem_handler.configuration_directory must be set`);
  }
  if (!isDirectory(configurationDirectory)) {
    throw new ConfigError(
      `${configFile}: filesystem_handler.configuration_directory ${configurationDirectory} is not an existing directory`,
    );
  }
  if (stateFile !== "" && !isDirectory(dirname(stateFile))) {
    throw new ConfigError(
      `${configFile}: the directory of filesystem_handler.state_file ${stateFile} does not exist; create ${dirname(stateFile)}`,
    );
  }

  const labelTexts = [goArch(), goOs(), ...cfg.clientLabel.map((l) => l.trim()).filter((l) => l !== "")];
  return {
    configFile,
    trustedCertsPem: cfg.trustedCerts,
    servers: [...cfg.server],
    labels: labelTexts.map((label) => create(LabelSchema, { serviceName: "client", label })),
    configurationDirectory,
    stateFile,
    streaming: cfg.streaming,
    proxy: cfg.proxy,
    clientCertificateHeader: cfg.clientCertificateHeader,
    serverName: cfg.serverName,
  };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * `communicator.txt`: optional. When present it replaces the built-in (all-zero) config as a whole;
 * when it cannot be read or parsed the problem is logged and the defaults are used, as Fleetspeak
 * does, so a typo there never keeps a client off the network.
 */
export function readCommunicatorConfig(configurationDirectory: string, log: Logger): CommunicatorConfig {
  const path = join(configurationDirectory, "communicator.txt");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      log.error({ path, err: describeError(e) }, "cannot read communicator config; using defaults");
    }
    return create(CommunicatorConfigSchema);
  }
  try {
    return parseText(CommunicatorConfigSchema, text, { fileName: path, discardUnknown: true });
  } catch (e) {
    log.error({ path, err: describeError(e) }, "communicator config is not a valid CommunicatorConfig; using defaults");
    return create(CommunicatorConfigSchema);
  }
}

/** One service config found on disk. */
export interface ServiceConfigFile {
  config: ClientServiceConfig;
  /** Signature bytes of a signed config (reported back in ClientInfo, never checked). */
  signature: Uint8Array;
  path: string;
}

function listDirectory(dir: string, log: Logger): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      log.warn({ dir }, "service config directory does not exist; no services from it");
    } else {
      log.error({ dir, err: describeError(e) }, "cannot list service config directory");
    }
    return [];
  }
}

/**
 * Every service config, in install order: `services/` (binary, signed) then `textservices/` (text),
 * each sorted by file name. A file that cannot be read or parsed is logged and skipped.
 */
export function readServiceConfigs(configurationDirectory: string, log: Logger): ServiceConfigFile[] {
  const out: ServiceConfigFile[] = [];
  const signedDir = join(configurationDirectory, "services");
  for (const name of listDirectory(signedDir, log)) {
    const path = join(signedDir, name);
    try {
      const signed = fromBinary(SignedClientServiceConfigSchema, readFileSync(path));
      const config = fromBinary(ClientServiceConfigSchema, signed.serviceConfig);
      out.push({ config, signature: signed.signature, path });
    } catch (e) {
      log.error(
        { path, err: describeError(e) },
        "skipping service config: not a binary fleetspeak.SignedClientServiceConfig",
      );
    }
  }
  const textDir = join(configurationDirectory, "textservices");
  for (const name of listDirectory(textDir, log)) {
    const path = join(textDir, name);
    try {
      if (!statSync(path).isFile()) continue;
      const config = parseText(ClientServiceConfigSchema, readFileSync(path, "utf8"), {
        fileName: path,
        discardUnknown: true,
        registry: serviceConfigRegistry,
      });
      out.push({ config, signature: new Uint8Array(0), path });
    } catch (e) {
      log.error({ path, err: describeError(e) }, "skipping service config: not a text fleetspeak.ClientServiceConfig");
    }
  }
  return out;
}
