// The server's two config files, as Fleetspeak writes them: the components config
// (fleetspeak.components.Config: which parts run, where they listen, which database) and the
// services config (fleetspeak.server.ServerConfig: where client messages go). Both are protobuf
// text format. This module reads and checks them; `main` turns them into running components.
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { availableParallelism } from "node:os";
import { createRegistry, type Registry } from "@bufbuild/protobuf";
import { file_fleetspeak_components_config } from "../gen/fleetspeak_components/config_pb.js";
import type { Config as ComponentsConfig, HttpsConfig } from "../gen/fleetspeak_components/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../gen/fleetspeak_components/config_pb.js";
import { file_fleetspeak_cpsservice_cpsservice } from "../gen/fleetspeak_cpsservice/cpsservice_pb.js";
import { file_fleetspeak_grpcservice_grpcservice } from "../gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { type ServerConfig, ServerConfigSchema } from "../gen/fleetspeak_server/server_pb.js";
import { parseMysqlDsn, sqlitePathInDsn } from "../common/mysql-dsn.js";
import { isLoopbackHost, parseHostPort } from "../common/net-address.js";
import { parseText, type TextPosition } from "../common/textproto/index.js";
import { frontendModeUsesTls } from "./frontend/client-identity.js";
import { checkSecurityConfig } from "./security/security-config.js";
import { checkServerTls, checkValidity, parseCertificates, TlsMaterialError } from "./security/tls-material.js";
import { checkServiceConfig } from "./services/service-factories.js";

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

/** Where each field of a config read from a file was set, for messages that name the place. */
const fieldPositions = new WeakMap<object, Map<string, TextPosition>>();

export function loadComponentsConfig(path: string): ComponentsConfig {
  const text = readConfigFile(path, "components_config");
  const positions = new Map<string, TextPosition>();
  const cfg = parseText(ComponentsConfigSchema, text, { fileName: path, registry: serverConfigRegistry, positions });
  fieldPositions.set(cfg, positions);
  return cfg;
}

export function loadServicesConfig(path: string): ServerConfig {
  const text = readConfigFile(path, "services_config");
  const positions = new Map<string, TextPosition>();
  const cfg = parseText(ServerConfigSchema, text, { fileName: path, registry: serverConfigRegistry, positions });
  fieldPositions.set(cfg, positions);
  return cfg;
}

/**
 * `path:line:column` of a field ("https_config.key"), or of the nearest enclosing field that is
 * written in the file, or `path` alone for a config not read from a file.
 */
function placeOf(cfg: object, path: string): (field: string) => string {
  const positions = fieldPositions.get(cfg);
  return (field) => {
    for (let f = field; f !== ""; f = f.includes(".") ? f.slice(0, f.lastIndexOf(".")) : "") {
      const p = positions?.get(f);
      if (p) return `${path}:${p.line}:${p.column}`;
    }
    return path;
  };
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

/** A listen address's host when it names one interface (not 0.0.0.0, :: or loopback): a name clients may dial. */
function dialedHost(address: string): string | undefined {
  const { host } = parseHostPort(address, { emptyHost: "" });
  return host === "" || host === "0.0.0.0" || host === "::" || isLoopbackHost(host) ? undefined : host;
}

/**
 * Checks the components config with Fleetspeak's rules, plus what would stop the server from
 * starting or clients from trusting it: at least one of https_config and admin_config, every
 * address parses, certificates and keys parse and belong together and are valid now (warning
 * within 30 days of expiry), the DSN parses, the SQLite file's folder is writable. Throws
 * ConfigError naming file:line:column and field; returns what would run.
 */
/** More worker processes than this is a typo, not a plan (each costs ~60 MiB before its first client). */
export const MAX_WORKER_PROCESSES = 256;

/**
 * How many worker processes to run: the --workers flag, else worker_processes, else one per CPU.
 * Both are checked (1..MAX_WORKER_PROCESSES) before this is called.
 */
export function workerProcesses(cfg: ComponentsConfig, flag?: number): number {
  const n = flag ?? cfg.workerProcesses;
  return n > 0 ? n : availableParallelism();
}

export function checkComponentsConfig(cfg: ComponentsConfig, path: string, sqlitePath: string, workersFlag?: number): ConfigCheck {
  const summary: string[] = [];
  const warnings: string[] = [];
  const at = placeOf(cfg, path);
  const fail = (field: string, reason: string): never => {
    throw new ConfigError(`${at(field)}: ${field}: ${reason}`);
  };
  const address = (field: string, value: string): void => {
    try {
      parseHostPort(value, { emptyHost: "0.0.0.0" });
    } catch (e) {
      fail(field, (e as Error).message);
    }
  };
  /** Runs a TLS material check, placing its errors and warnings at their fields. */
  const tls = <T>(check: () => T): T => {
    try {
      return check();
    } catch (e) {
      if (e instanceof TlsMaterialError) throw new ConfigError(`${at(e.field)}: ${e.message}`);
      throw e;
    }
  };
  const warnAt = (list: Array<{ field: string; message: string }>) => {
    for (const w of list) warnings.push(`${at(w.field)}: ${w.message}`);
  };

  /** A listener's certificate chain and key: errors thrown, warnings kept, a summary line. */
  const serverCertificate = (role: string, listen: string, [chainField, chainPem]: [string, string], [keyField, keyPem]: [string, string]) => {
    const host = dialedHost(listen);
    const cert = tls(() => checkServerTls({ chainPem, keyPem, chainField, keyField, ...(host ? { host } : {}) }));
    warnAt(cert.warnings);
    summary.push(`${role} certificate ${cert.description}`);
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
      if (!h.listenAddress) fail("https_config", "http_config requires listen_address");
    } else if (!h.listenAddress || !h.certificates || !h.key) {
      fail("https_config", "https_config requires listen_address, certificates and key");
    }
    address("https_config.listen_address", h.listenAddress);
    const extras = [mode, cfg.proxyProtocol ? "PROXY protocol" : "", h.disableStreaming ? "streaming disabled" : ""];
    summary.push(`frontend on ${h.listenAddress} (${extras.filter(Boolean).join(", ")})`);
    if (frontendModeUsesTls(h.frontendConfig)) {
      serverCertificate("frontend", h.listenAddress, ["https_config.certificates", h.certificates], ["https_config.key", h.key]);
    }
  } else if (cfg.proxyProtocol) {
    warnings.push(`${at("proxy_protocol")}: proxy_protocol is set but there is no https_config; it has no effect`);
  }
  if (cfg.adminConfig) {
    const a = cfg.adminConfig;
    if (!a.listenAddress) fail("admin_config.listen_address", "admin_config.listen_address can't be empty");
    address("admin_config.listen_address", a.listenAddress);
    summary.push(`admin server on ${a.listenAddress}`);
    if (a.tlsCertificates && a.tlsKey) {
      serverCertificate("admin", a.listenAddress, ["admin_config.tls_certificates", a.tlsCertificates], ["admin_config.tls_key", a.tlsKey]);
    }
    if (a.clientCaCertificates) {
      const field = "admin_config.client_ca_certificates";
      warnAt(tls(() => checkValidity(parseCertificates(a.clientCaCertificates, field), field, Date.now())));
    }
  }
  if (cfg.notificationListenAddress) {
    address("notification_listen_address", cfg.notificationListenAddress);
    const pub = cfg.notificationPublicAddress || cfg.notificationListenAddress;
    if (cfg.notificationPublicAddress) address("notification_public_address", cfg.notificationPublicAddress);
    else warnings.push(
      `${at("notification_listen_address")}: notification_public_address is not set; other servers will be told to use ${pub}, which may not be reachable from them`,
    );
    summary.push(`notification listener on ${cfg.notificationListenAddress} (advertised as ${pub})`);
  } else if (cfg.notificationPublicAddress) {
    warnings.push(`${at("notification_public_address")}: notification_public_address has no effect without notification_listen_address`);
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
    if (sqliteInDsn === "") fail("mysql_data_source_name", '"sqlite:" names no file; write "sqlite:/path/to/file"');
    const problem = sqliteProblem(sqliteInDsn);
    if (problem) fail("mysql_data_source_name", `${sqliteInDsn}: ${problem}`);
    summary.push(`datastore SQLite ${sqliteInDsn}`);
  } else if (cfg.mysqlDataSourceName) {
    let o: ReturnType<typeof parseMysqlDsn>;
    try {
      o = parseMysqlDsn(cfg.mysqlDataSourceName);
    } catch (e) {
      return fail("mysql_data_source_name", (e as Error).message);
    }
    if (o.database === "") fail("mysql_data_source_name", 'names no database; write it like "user:password@tcp(host:3306)/fleetspeak"');
    summary.push(`datastore MySQL ${o.socketPath ?? `${o.host}:${o.port}`}/${o.database} as ${o.user || "(no user)"}`);
  } else if (cfg.spannerConfig) {
    fail("spanner_config", "spanner_config is set, but this server supports MySQL/MariaDB (mysql_data_source_name) and SQLite only");
  } else {
    const problem = sqliteProblem(sqlitePath);
    if (problem) throw new ConfigError(`--sqlite_path ${sqlitePath}: ${problem}`);
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
  if (cfg.workerProcesses > MAX_WORKER_PROCESSES) {
    fail("worker_processes", `${cfg.workerProcesses} is more than ${MAX_WORKER_PROCESSES}; use about one per CPU, more only to hold more streams (docs/scaling.md)`);
  }
  const workers = workerProcesses(cfg, workersFlag);
  const source =
    workersFlag !== undefined ? " (--workers)" : cfg.workerProcesses === 0 ? " (one per CPU; worker_processes sets another number)" : "";
  summary.push(workers === 1 ? `one process${source}` : `${workers} worker processes${source}`);
  if (cfg.workerNotificationPort !== 0) {
    const field = "worker_notification_port";
    if (!cfg.notificationListenAddress) fail(field, "needs notification_listen_address (its host is where the workers listen)");
    const first = cfg.workerNotificationPort;
    const last = first + workers - 1;
    if (last > 65535) fail(field, `${workers} workers from port ${first} go past 65535; choose a lower port`);
    const others: Array<[string, string | undefined]> = [
      ["https_config.listen_address", cfg.httpsConfig?.listenAddress],
      ["admin_config.listen_address", cfg.adminConfig?.listenAddress],
      ["notification_listen_address", cfg.notificationListenAddress],
      ["stats_config.address", cfg.statsConfig?.address],
      ["health_check_config.listen_address", cfg.healthCheckConfig?.listenAddress],
    ];
    for (const [other, value] of others) {
      if (!value) continue;
      const port = parseHostPort(value, { emptyHost: "0.0.0.0" }).port;
      if (port >= first && port <= last) {
        fail(field, `the workers' ports ${first}-${last} include ${other}'s port ${port}; choose ${workers} ports no other listener uses`);
      }
    }
    summary.push(
      workers === 1
        ? "worker_notification_port unused (one process: notifications go to notification_listen_address)"
        : `each worker notified at its own port, ${first}-${last}`,
    );
  }
  try {
    const security = checkSecurityConfig(cfg);
    summary.push(...security.summary);
    warnings.push(...security.warnings.map((w) => `${at(leadingField(w))}: ${w}`));
  } catch (e) {
    const message = (e as Error).message;
    throw new ConfigError(`${at(leadingField(message))}: ${message}`);
  }
  return { summary, warnings };
}

/** The field a message starts with ("admin_config.tls_key: …"). */
function leadingField(message: string): string {
  return /^[a-z_.]+/.exec(message)?.[0] ?? "";
}

/** Why the server could not open or create its SQLite file, or undefined when it can. */
function sqliteProblem(file: string): string | undefined {
  const dir = dirname(file);
  if (!existsSync(dir)) return `its folder ${dir} does not exist; create it (owned by the server's user) or pass another --sqlite_path`;
  try {
    if (existsSync(file)) {
      if (!statSync(file).isFile()) return "is not a file";
      accessSync(file, constants.R_OK | constants.W_OK);
    } else {
      accessSync(dir, constants.W_OK);
    }
  } catch {
    return existsSync(file)
      ? "this user cannot read and write it; chown it to the server's user"
      : `this user cannot create files in ${dir}; chown the folder to the server's user`;
  }
  return undefined;
}

const RESERVED_SERVICE_NAMES = new Set(["", "system", "client"]);

export function checkServicesConfig(cfg: ServerConfig, path: string): ConfigCheck {
  const summary: string[] = [];
  const at = placeOf(cfg, path);
  const names = new Map<string, string>();
  for (const [i, s] of cfg.services.entries()) {
    const where = at(`services[${i}]`);
    if (RESERVED_SERVICE_NAMES.has(s.name)) throw new ConfigError(`${where}: illegal service name [${s.name}]`);
    if (s.factory !== "GRPC" && s.factory !== "NOOP") {
      const hint = s.factory === "CPS" ? " (Cloud Pub/Sub is not supported by this server)" : "; known factories: GRPC, NOOP";
      throw new ConfigError(`${at(`services[${i}].factory`)}: service ${s.name}: unable to find factory [${s.factory}]${hint}`);
    }
    // What the service would do at start: decode its config, read its files, set up TLS.
    try {
      checkServiceConfig(s);
    } catch (e) {
      throw new ConfigError(`${at(`services[${i}].config`)}: ${(e as Error).message}`);
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
