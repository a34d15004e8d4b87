// Fleetspeak's configurator procedure (cmd/fleetspeak_config): from one text-format
// fleetspeak.config.Config it creates the deployment CA and the server certificate where they are
// missing, writes the server components config with the certificate and key filled in, and writes
// the client configs for Linux, macOS and Windows where the config names a file.
//
// Differences from Fleetspeak, all on the side of saying more:
// - everything is checked before the first file is written, so a mistake leaves nothing half done;
// - the client configs carry no client_label when components_config.required_label is unset
//   (Fleetspeak writes one empty label "");
// - missing parent directories of the output files are created;
// - a CA key that does not belong to the CA certificate, and an existing server certificate that
//   does not cover a public_host_port host, are reported.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { createSecureContext } from "node:tls";
import { dirname, join } from "node:path";
import type { KeyObject, X509Certificate } from "node:crypto";
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  CertificateError,
  createCa,
  createServerCertificate,
  parsePemCertificates,
  parsePrivateKeyPem,
} from "../common/certs.js";
import { AddressError, parseHostPort } from "../common/net-address.js";
import { parseText, printText, TextFormatError } from "../common/textproto/index.js";
import { type Config as ClientConfig, ConfigSchema as ClientConfigSchema } from "../gen/fleetspeak_client_generic/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../gen/fleetspeak_components/config_pb.js";
import { type Config, ConfigSchema } from "../gen/fleetspeak_config/config_pb.js";
import { ServerConfigSchema } from "../gen/fleetspeak_server/server_pb.js";
import { serverConfigRegistry } from "../server/config.js";
import { ConfiguratorError } from "./configurator-error.js";
import { type DistributedPlan, planDistributed } from "./distributed.js";

export { ConfiguratorError };

/** Where Fleetspeak's packages keep the configurator's input. */
export const DEFAULT_CONFIGURATOR_CONFIG = "/etc/fleetspeak-server/configurator.config";

type Persistence = MessageInitShape<typeof ClientConfigSchema>["persistenceHandler"];

/** Persistence of each platform's client, as Fleetspeak's configurator writes it. */
const CLIENT_PLATFORMS: ReadonlyArray<{
  platform: string;
  field: string;
  path: (c: Config) => string;
  persistence: Persistence;
}> = [
  {
    platform: "Linux",
    field: "linux_client_configuration_file",
    path: (c: Config) => c.linuxClientConfigurationFile,
    persistence: {
      case: "filesystemHandler",
      value: { configurationDirectory: "/etc/fleetspeak-client", stateFile: "/var/lib/misc/fleetspeak-client.state" },
    },
  },
  {
    platform: "Darwin",
    field: "darwin_client_configuration_file",
    path: (c: Config) => c.darwinClientConfigurationFile,
    persistence: {
      case: "filesystemHandler",
      value: { configurationDirectory: "/etc/fleetspeak-client", stateFile: "/etc/fleetspeak-client/state" },
    },
  },
  {
    platform: "Windows",
    field: "windows_client_configuration_file",
    path: (c: Config) => c.windowsClientConfigurationFile,
    persistence: {
      case: "registryHandler",
      value: { configurationKey: "HKEY_LOCAL_MACHINE\\SOFTWARE\\FleetspeakClient" },
    },
  },
];

export interface ConfiguratorReport {
  /** One line per file created or written. */
  actions: string[];
  /** Things worth an operator's attention that did not stop the run. */
  warnings: string[];
}

/** Reads the configurator's text-format config; errors name the file, line and column. */
export function loadConfiguratorConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfiguratorError(`unable to read configuration file [${path}]: ${(e as Error).message}`);
  }
  try {
    // The registry resolves the Any configs of distributed.services_config.
    return parseText(ConfigSchema, text, { fileName: path, registry: serverConfigRegistry });
  } catch (e) {
    if (e instanceof TextFormatError) {
      throw new ConfiguratorError(`not a valid fleetspeak.config.Config: ${e.message}`);
    }
    throw e;
  }
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfiguratorError(`unable to read ${what} [${path}]: ${(e as Error).message}`);
  }
}

function writeFile(path: string, data: string, mode: number, what: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, data, { mode });
  } catch (e) {
    throw new ConfiguratorError(
      `failed to write ${what} [${path}]: ${(e as Error).message}; check that its directory is writable by this user`,
    );
  }
}

function certificateOrThrow(pem: string, where: string): X509Certificate {
  try {
    return parsePemCertificates(pem, where)[0]!;
  } catch (e) {
    if (e instanceof CertificateError) throw new ConfiguratorError(`${e.message}; it must hold a PEM certificate`);
    throw e;
  }
}

/** Hosts of public_host_port ("host:port", "[v6]:port"), checked. */
function publicHosts(cfg: Config, source: string): string[] {
  return cfg.publicHostPort.map((hp) => {
    try {
      return parseHostPort(hp).host;
    } catch (e) {
      if (e instanceof AddressError) {
        throw new ConfiguratorError(`${source}: public_host_port "${hp}": ${e.message}`);
      }
      throw e;
    }
  });
}

/** Checks everything that can be checked before a file is written. */
function validate(cfg: Config, source: string): { hosts: string[]; plan?: DistributedPlan } {
  const need = (value: string, field: string, why: string) => {
    if (!value) throw new ConfiguratorError(`${source}: ${field} not set; ${why}`);
  };
  if (!cfg.configurationName) {
    throw new ConfiguratorError(
      `configuration_name required, not found in [${source}]; add configuration_name: "<installation name>" (used in certificate names)`,
    );
  }
  need(cfg.trustedCertFile, "trusted_cert_file", "name the CA certificate file (it is created if missing)");
  need(cfg.serverCertFile, "server_cert_file", "name the server certificate file (it is created if missing)");
  if (!cfg.distributed) {
    need(
      cfg.serverComponentConfigurationFile,
      "server_component_configuration_file",
      "name the file to write the server components config to (e.g. /etc/fleetspeak-server/server.components.config)",
    );
  }
  const https = cfg.componentsConfig?.httpsConfig;
  if (!cfg.componentsConfig) {
    throw new ConfiguratorError(`${source}: components_config is required; it is the template of the server components config`);
  }
  if (!https) {
    throw new ConfiguratorError(
      `${source}: components_config.https_config is required; add https_config { listen_address: "0.0.0.0:4443" }`,
    );
  }
  if (!https.listenAddress) {
    throw new ConfiguratorError(
      `${source}: components_config.https_config.listen_address is required; e.g. listen_address: "0.0.0.0:4443"`,
    );
  }
  try {
    parseHostPort(https.listenAddress, { emptyHost: "0.0.0.0" });
  } catch (e) {
    throw new ConfiguratorError(`${source}: components_config.https_config.listen_address: ${(e as Error).message}`);
  }
  const hosts = publicHosts(cfg, source);
  const clientOutputs = CLIENT_PLATFORMS.filter((p) => p.path(cfg));
  if (clientOutputs.length > 0 && hosts.length === 0) {
    throw new ConfiguratorError(
      `${source}: public_host_port is empty, so the client configs (${clientOutputs.map((p) => p.field).join(", ")}) would name no server; add public_host_port: "<host clients dial>:<port>"`,
    );
  }
  if (!cfg.distributed) return { hosts };
  if (hosts.length === 0) {
    throw new ConfiguratorError(
      `${source}: public_host_port is empty, so the distributed client config would name no server; add public_host_port: "<load balancer host>:<port>"`,
    );
  }
  return { hosts, plan: planDistributed(cfg, source) };
}

interface LoadedCa {
  cert: X509Certificate;
  pem: string;
  /** Undefined when the key file cannot be read: server certificates cannot be minted then. */
  key?: KeyObject;
  keyProblem?: string;
}

function loadOrCreateCa(cfg: Config, report: ConfiguratorReport): LoadedCa {
  if (!existsSync(cfg.trustedCertFile)) {
    if (!cfg.trustedCertKeyFile) {
      throw new ConfiguratorError(
        `unable to create a CA cert: trusted_cert_key_file not set; name the file for the new CA key (or provide trusted_cert_file [${cfg.trustedCertFile}])`,
      );
    }
    const ca = createCa(cfg.configurationName);
    writeFile(cfg.trustedCertFile, ca.certPem, 0o644, "CA cert file");
    writeFile(cfg.trustedCertKeyFile, ca.keyPem, 0o600, "CA key file");
    report.actions.push(`created CA certificate ${cfg.trustedCertFile} and key ${cfg.trustedCertKeyFile} (mode 0600)`);
  }
  const pem = readText(cfg.trustedCertFile, "trusted certificate file");
  const cert = certificateOrThrow(pem, `trusted certificate file [${cfg.trustedCertFile}]`);
  if (!cfg.trustedCertKeyFile) return { cert, pem, keyProblem: "trusted_cert_key_file is not set" };
  let keyPem: string;
  try {
    keyPem = readFileSync(cfg.trustedCertKeyFile, "utf8");
  } catch (e) {
    return { cert, pem, keyProblem: `cannot read trusted_cert_key_file [${cfg.trustedCertKeyFile}]: ${(e as Error).message}` };
  }
  let key: KeyObject;
  try {
    key = parsePrivateKeyPem(keyPem, `trusted certificate key file [${cfg.trustedCertKeyFile}]`);
  } catch (e) {
    throw new ConfiguratorError((e as Error).message);
  }
  if (!cert.checkPrivateKey(key)) {
    throw new ConfiguratorError(
      `trusted certificate key file [${cfg.trustedCertKeyFile}] does not belong to the certificate in [${cfg.trustedCertFile}]; restore the matching key, or move both away to create a new CA`,
    );
  }
  return { cert, pem, key };
}

function loadOrCreateServerCert(cfg: Config, ca: LoadedCa, hosts: string[], report: ConfiguratorReport) {
  if (!existsSync(cfg.serverCertFile)) {
    if (!ca.key) {
      throw new ConfiguratorError(
        `unable to create server certificate [${cfg.serverCertFile}]: CA key not loaded (${ca.keyProblem}); provide the CA key or an existing server certificate`,
      );
    }
    if (!cfg.serverCertKeyFile) {
      throw new ConfiguratorError("unable to create a server cert: server_cert_key_file not set; name the file for the server key");
    }
    const server = createServerCertificate(cfg.configurationName, { cert: ca.cert, key: ca.key }, hosts);
    writeFile(cfg.serverCertFile, server.certPem, 0o644, "server cert file");
    writeFile(cfg.serverCertKeyFile, server.keyPem, 0o600, "server key file");
    report.actions.push(
      `created server certificate ${cfg.serverCertFile} for ${hosts.join(", ") || "no host names"} and key ${cfg.serverCertKeyFile} (mode 0600)`,
    );
  }
  if (!cfg.serverCertKeyFile) {
    throw new ConfiguratorError(`server_cert_key_file not set; name the key file of [${cfg.serverCertFile}]`);
  }
  const certPem = readText(cfg.serverCertFile, "server certificate file");
  const keyPem = readText(cfg.serverCertKeyFile, "server certificate key file");
  try {
    createSecureContext({ cert: certPem, key: keyPem });
  } catch (e) {
    throw new ConfiguratorError(
      `error in server certificate/key [${cfg.serverCertFile}]/[${cfg.serverCertKeyFile}] configuration: ${(e as Error).message}; the key must belong to the certificate`,
    );
  }
  const cert = certificateOrThrow(certPem, `server certificate file [${cfg.serverCertFile}]`);
  for (const host of hosts) {
    const covered = isIP(host) ? cert.checkIP(host) : cert.checkHost(host);
    if (!covered) {
      report.warnings.push(
        `server certificate ${cfg.serverCertFile} does not cover "${host}" from public_host_port; clients dialing it will reject the server. Move the certificate and key away and run again to create a new one`,
      );
    }
  }
  if (Date.parse(cert.validTo) < Date.now()) {
    report.warnings.push(`server certificate ${cfg.serverCertFile} expired on ${cert.validTo}; move it and its key away and run again`);
  }
  if (!cert.checkIssued(ca.cert) || !cert.verify(ca.cert.publicKey)) {
    report.warnings.push(
      `server certificate ${cfg.serverCertFile} is not signed by the CA in ${cfg.trustedCertFile}; clients trusting that CA will reject the server`,
    );
  }
  return { certPem, keyPem };
}

function clientConfig(cfg: Config, caPem: string, persistence: Persistence): ClientConfig {
  const components = cfg.componentsConfig!;
  return create(ClientConfigSchema, {
    trustedCerts: caPem,
    server: [...cfg.publicHostPort],
    clientLabel: components.requiredLabel ? [components.requiredLabel] : [],
    persistenceHandler: persistence,
    streaming: !components.httpsConfig!.disableStreaming,
    proxy: cfg.proxy,
    serverName: cfg.serverName,
  });
}

/**
 * Runs the procedure; `source` names the config in messages. Throws ConfiguratorError with one
 * line that says what is wrong and what to do.
 */
export function runConfigurator(cfg: Config, source: string): ConfiguratorReport {
  const report: ConfiguratorReport = { actions: [], warnings: [] };
  const { hosts, plan } = validate(cfg, source);
  const ca = loadOrCreateCa(cfg, report);
  const server = loadOrCreateServerCert(cfg, ca, hosts, report);

  if (cfg.serverComponentConfigurationFile) {
    const components = clone(ComponentsConfigSchema, cfg.componentsConfig!);
    components.httpsConfig!.certificates = server.certPem;
    components.httpsConfig!.key = server.keyPem;
    writeFile(
      cfg.serverComponentConfigurationFile,
      printText(ComponentsConfigSchema, components),
      0o600,
      "server component configuration file",
    );
    report.actions.push(`wrote server components config ${cfg.serverComponentConfigurationFile} (mode 0600)`);
  }

  for (const p of CLIENT_PLATFORMS) {
    const path = p.path(cfg);
    if (!path) continue;
    const out = clientConfig(cfg, ca.pem, p.persistence);
    writeFile(path, printText(ClientConfigSchema, out), 0o644, `${p.platform} client configuration file`);
    report.actions.push(`wrote ${p.platform} client config ${path}`);
  }
  if (plan) writeDistributed(cfg, plan, server, ca.pem, report);
  return report;
}

/** One folder per machine, with where each goes on it in the report. */
function writeDistributed(
  cfg: Config,
  plan: DistributedPlan,
  server: { certPem: string; keyPem: string },
  caPem: string,
  report: ConfiguratorReport,
): void {
  const dir = plan.outputDirectory;
  const services = printText(ServerConfigSchema, plan.services, { registry: serverConfigRegistry });
  for (const s of plan.servers) {
    if (s.components.httpsConfig) {
      s.components.httpsConfig.certificates = server.certPem;
      s.components.httpsConfig.key = server.keyPem;
    }
    const folder = join(dir, s.machine.name);
    writeFile(join(folder, "server.components.config"), printText(ComponentsConfigSchema, s.components), 0o600, `${s.role} components config`);
    writeFile(join(folder, "server.services.config"), services, 0o644, "services config");
    report.actions.push(`wrote ${folder}/: ${s.role} ${s.machine.name}; copy both files to ${s.machine.host}:/etc/fleetspeak-server/`);
  }
  writeFile(join(dir, "load-balancer", "haproxy.cfg"), plan.haproxy, 0o644, "HAProxy config");
  report.actions.push(`wrote ${join(dir, "load-balancer", "haproxy.cfg")}; copy it to the load balancer's /etc/haproxy/haproxy.cfg`);
  const linux = CLIENT_PLATFORMS[0]!;
  writeFile(join(dir, "client", "client.config"), printText(ClientConfigSchema, clientConfig(cfg, caPem, linux.persistence)), 0o644, "client config");
  report.actions.push(`wrote ${join(dir, "client", "client.config")}; copy it to /etc/fleetspeak-client/client.config on each Linux client`);
  report.warnings.push(...plan.warnings);
}
