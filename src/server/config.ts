// The server's two config files, as Fleetspeak writes them: the components config
// (fleetspeak.components.Config: which parts run, where they listen, which database) and the
// services config (fleetspeak.server.ServerConfig: where client messages go). Both are protobuf
// text format. This module reads and checks them; `main` turns them into running components.
import { readFileSync } from "node:fs";
import { createRegistry, type Registry } from "@bufbuild/protobuf";
import { file_fleetspeak_components_config } from "../gen/fleetspeak_components/config_pb.js";
import type { Config as ComponentsConfig, HttpsConfig } from "../gen/fleetspeak_components/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../gen/fleetspeak_components/config_pb.js";
import { file_fleetspeak_cpsservice_cpsservice } from "../gen/fleetspeak_cpsservice/cpsservice_pb.js";
import { file_fleetspeak_grpcservice_grpcservice } from "../gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { type ServerConfig, ServerConfigSchema } from "../gen/fleetspeak_server/server_pb.js";
import { parseMysqlDsn, sqlitePathInDsn } from "../common/mysql-dsn.js";
import { parseHostPort } from "../common/net-address.js";
import { parseText } from "../common/textproto/index.js";
import { frontendModeUsesTls } from "./frontend/client-identity.js";
import { checkSecurityConfig } from "./security/security-config.js";

export const DEFAULT_COMPONENTS_CONFIG = "/etc/fleetspeak-server/server.components.config";
export const DEFAULT_SERVICES_CONFIG = "/etc/fleetspeak-server/server.services.config";

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** Types that may appear inside google.protobuf.Any in the services config. */
export const serverConfigRegistry: Registry = createRegistry(
  file_fleetspeak_grpcservice_grpcservice,
  file_fleetspeak_cpsservice_cpsservice,
  file_fleetspeak_components_config,
);

function readConfigFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const hint = code === "ENOENT" ? "the file does not exist; pass the right path with --" + what : (e as Error).message;
    throw new ConfigError(`${path}: cannot read the ${what.replace("_", " ")} file: ${hint}`);
  }
}

export function loadComponentsConfig(path: string): ComponentsConfig {
  const text = readConfigFile(path, "components_config");
  return parseText(ComponentsConfigSchema, text, { fileName: path, registry: serverConfigRegistry });
}

export function loadServicesConfig(path: string): ServerConfig {
  const text = readConfigFile(path, "services_config");
  return parseText(ServerConfigSchema, text, { fileName: path, registry: serverConfigRegistry });
}

export type FrontendMode =
  | "mtls"
  | "https_header"
  | "https_header_checksum"
  | "cleartext_header"
  | "cleartext_header_checksum"
  | "cleartext_xfcc";

export function frontendModeOf(https: HttpsConfig): FrontendMode {
  switch (https.frontendConfig?.frontendMode.case) {
    case "httpsHeaderConfig":
      return "https_header";
    case "httpsHeaderChecksumConfig":
      return "https_header_checksum";
    case "cleartextHeaderConfig":
      return "cleartext_header";
    case "cleartextHeaderChecksumConfig":
      return "cleartext_header_checksum";
    case "cleartextXfccConfig":
      return "cleartext_xfcc";
    default:
      return "mtls";
  }
}

export interface ConfigCheck {
  /** One line per component, for --check and the start-up log. */
  summary: string[];
  warnings: string[];
}

/**
 * Checks the components config with Fleetspeak's rules, plus ours: at least one of https_config
 * and admin_config, every address parses, the DSN parses. Throws ConfigError naming the file and
 * field; returns what would run.
 */
export function checkComponentsConfig(cfg: ComponentsConfig, path: string, sqlitePath: string): ConfigCheck {
  const summary: string[] = [];
  const warnings: string[] = [];
  const address = (field: string, value: string): void => {
    try {
      parseHostPort(value, { emptyHost: "0.0.0.0" });
    } catch (e) {
      throw new ConfigError(`${path}: ${field}: ${(e as Error).message}`);
    }
  };

  if (!cfg.httpsConfig && !cfg.adminConfig) {
    throw new ConfigError(
      `${path}: neither https_config nor admin_config is set, so this server would do nothing; add https_config (frontend) and/or admin_config (admin server)`,
    );
  }
  if (cfg.httpsConfig) {
    const h = cfg.httpsConfig;
    const mode = frontendModeOf(h);
    if (!frontendModeUsesTls(h.frontendConfig)) {
      if (!h.listenAddress) throw new ConfigError(`${path}: http_config requires listen_address`);
    } else if (!h.listenAddress || !h.certificates || !h.key) {
      throw new ConfigError(`${path}: https_config requires listen_address, certificates and key`);
    }
    address("https_config.listen_address", h.listenAddress);
    const extras = [mode, cfg.proxyProtocol ? "PROXY protocol" : "", h.disableStreaming ? "streaming disabled" : ""];
    summary.push(`frontend on ${h.listenAddress} (${extras.filter(Boolean).join(", ")})`);
  } else if (cfg.proxyProtocol) {
    warnings.push(`${path}: proxy_protocol is set but there is no https_config; it has no effect`);
  }
  if (cfg.adminConfig) {
    if (!cfg.adminConfig.listenAddress) throw new ConfigError(`${path}: admin_config.listen_address can't be empty`);
    address("admin_config.listen_address", cfg.adminConfig.listenAddress);
    summary.push(`admin server on ${cfg.adminConfig.listenAddress}`);
  }
  if (cfg.notificationListenAddress) {
    address("notification_listen_address", cfg.notificationListenAddress);
    const pub = cfg.notificationPublicAddress || cfg.notificationListenAddress;
    if (cfg.notificationPublicAddress) address("notification_public_address", cfg.notificationPublicAddress);
    else warnings.push(
      `${path}: notification_public_address is not set; other servers will be told to use ${pub}, which may not be reachable from them`,
    );
    summary.push(`notification listener on ${cfg.notificationListenAddress} (advertised as ${pub})`);
  } else if (cfg.notificationPublicAddress) {
    warnings.push(`${path}: notification_public_address has no effect without notification_listen_address`);
  }
  if (cfg.notificationUseHttpNotifier || cfg.notificationListenAddress) {
    summary.push(
      cfg.notificationWithoutMessages
        ? "notifications to frontends over HTTP (client ID only)"
        : "notifications to frontends over HTTP (carrying new messages)",
    );
  } else if (cfg.adminConfig) {
    summary.push("notifications in-process only");
  }
  const sqliteInDsn = sqlitePathInDsn(cfg.mysqlDataSourceName);
  if (sqliteInDsn !== undefined) {
    if (sqliteInDsn === "") throw new ConfigError(`${path}: mysql_data_source_name "sqlite:" names no file; write "sqlite:/path/to/file"`);
    summary.push(`datastore SQLite ${sqliteInDsn}`);
  } else if (cfg.mysqlDataSourceName) {
    let o: ReturnType<typeof parseMysqlDsn>;
    try {
      o = parseMysqlDsn(cfg.mysqlDataSourceName);
    } catch (e) {
      throw new ConfigError(`${path}: ${(e as Error).message}`);
    }
    summary.push(`datastore MySQL ${o.socketPath ?? `${o.host}:${o.port}`}/${o.database} as ${o.user || "(no user)"}`);
  } else if (cfg.spannerConfig) {
    throw new ConfigError(
      `${path}: spanner_config is set, but this server supports MySQL/MariaDB (mysql_data_source_name) and SQLite only`,
    );
  } else {
    summary.push(`datastore SQLite ${sqlitePath}`);
  }
  if (cfg.statsConfig?.address) {
    address("stats_config.address", cfg.statsConfig.address);
    summary.push(`metrics on http://${cfg.statsConfig.address}/metrics`);
  }
  if (cfg.healthCheckConfig) {
    if (cfg.healthCheckConfig.listenAddress) address("health_check_config.listen_address", cfg.healthCheckConfig.listenAddress);
    summary.push(`health check on ${cfg.healthCheckConfig.listenAddress || "a random port"}`);
  }
  if (cfg.requiredLabel) summary.push(`clients must carry label "${cfg.requiredLabel}"`);
  try {
    const security = checkSecurityConfig(cfg);
    summary.push(...security.summary);
    warnings.push(...security.warnings.map((w) => `${path}: ${w}`));
  } catch (e) {
    throw new ConfigError(`${path}: ${(e as Error).message}`);
  }
  return { summary, warnings };
}

const RESERVED_SERVICE_NAMES = new Set(["", "system", "client"]);

export function checkServicesConfig(cfg: ServerConfig, path: string): ConfigCheck {
  const summary: string[] = [];
  const names = new Map<string, string>();
  for (const s of cfg.services) {
    if (RESERVED_SERVICE_NAMES.has(s.name)) throw new ConfigError(`${path}: illegal service name [${s.name}]`);
    if (s.factory !== "GRPC" && s.factory !== "NOOP") {
      const hint = s.factory === "CPS" ? " (Cloud Pub/Sub is not supported by this server)" : "; known factories: GRPC, NOOP";
      throw new ConfigError(`${path}: service ${s.name}: unable to find factory [${s.factory}]${hint}`);
    }
    names.set(s.name, s.factory);
  }
  summary.push(
    names.size === 0
      ? "no services (client messages are recorded as failed: unknown service)"
      : `services: ${[...names].map(([n, f]) => `${n} (${f})`).join(", ")}`,
  );
  if (cfg.broadcastPollTime) {
    summary.push(`broadcast poll time ${Number(cfg.broadcastPollTime.seconds) + cfg.broadcastPollTime.nanos / 1e9}s`);
  }
  return { summary, warnings: [] };
}
