// The distributed deployment of a configurator config (its `distributed` section, our own field):
// from the one components_config template, a frontend-only and an admin-only components config
// per machine, the services config, and the HAProxy config for both tiers. Everything is checked
// here, before the configurator writes its first file; certificates are filled in by the caller.
//
// Per role, the template is kept and changed only where the scaling guide says:
//   frontend: https_config, notification listener (public address = its host), proxy_protocol;
//   admin server: admin_config, HTTP notifier, no https_config and no notification listener.
import { isIP } from "node:net";
import { clone, create } from "@bufbuild/protobuf";
import { parseMysqlDsn } from "../common/mysql-dsn.js";
import { formatHostPort, isLoopbackHost, parseHostPort } from "../common/net-address.js";
import { type Config as ComponentsConfig, ConfigSchema as ComponentsConfigSchema } from "../gen/fleetspeak_components/config_pb.js";
import type { Config, Machine } from "../gen/fleetspeak_config/config_pb.js";
import { type ServerConfig, ServerConfigSchema } from "../gen/fleetspeak_server/server_pb.js";
import { checkSecurityConfig } from "../server/security/security-config.js";
import { ConfiguratorError } from "./configurator-error.js";
import { type HaproxyTier, renderHaproxyConfig } from "./haproxy-config.js";

export type Role = "frontend" | "admin server";

export interface PlannedServer {
  machine: Machine;
  role: Role;
  /** Its components config; a frontend's https_config still lacks certificates and key. */
  components: ComponentsConfig;
}

export interface DistributedPlan {
  outputDirectory: string;
  servers: PlannedServer[];
  services: ServerConfig;
  haproxy: string;
  warnings: string[];
}

const WILDCARD_HOSTS = new Set(["", "0.0.0.0", "::"]);
const MACHINE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Plans the files of `cfg.distributed`; throws ConfiguratorError naming `source` and the field. */
export function planDistributed(cfg: Config, source: string): DistributedPlan {
  const d = cfg.distributed!;
  const template = cfg.componentsConfig!;
  const fail = (what: string): never => {
    throw new ConfiguratorError(`${source}: ${what}`);
  };
  const hostPort = (address: string, field: string) => {
    try {
      return parseHostPort(address, { emptyHost: "" });
    } catch (e) {
      return fail(`${field} "${address}": ${(e as Error).message}`);
    }
  };

  if (!d.outputDirectory) fail('distributed.output_directory is not set; name the folder to write the machines\' configs into, e.g. "/etc/fleetspeak-server/distributed"');
  if (d.frontend.length === 0 || d.adminServer.length === 0) {
    fail("distributed needs at least one frontend { name host } and one admin_server { name host }; for a single server, leave distributed out");
  }
  checkMachines([...d.frontend, ...d.adminServer], fail);
  if (!template.mysqlDataSourceName) {
    fail('components_config.mysql_data_source_name is not set; every server of a distributed deployment shares one MySQL database, e.g. "fleetspeak:PASSWORD@tcp(db.internal:3306)/fleetspeak"');
  }
  try {
    parseMysqlDsn(template.mysqlDataSourceName);
  } catch (e) {
    fail(`components_config.mysql_data_source_name: ${(e as Error).message}`);
  }
  if (!template.adminConfig?.listenAddress) {
    fail('components_config.admin_config.listen_address is not set; the admin servers listen there, e.g. "0.0.0.0:4444"');
  }
  if (!template.notificationListenAddress) {
    fail('components_config.notification_listen_address is not set; the frontends listen there for the admin servers\' notifications, e.g. "0.0.0.0:10000"');
  }

  /** The address a machine binds for a template address: its listen_ip where the template says "every interface". */
  const bind = (m: Machine, field: string, address: string, reachedBy: string): string => {
    const { host, port } = hostPort(address, `components_config.${field}`);
    const bound = m.listenIp && WILDCARD_HOSTS.has(host) ? formatHostPort(m.listenIp, port) : address;
    const boundHost = hostPort(bound, field).host;
    if (isLoopbackHost(boundHost) && !isLoopbackHost(m.host)) {
      fail(
        `components_config.${field} "${address}" listens on this machine only, so ${reachedBy} cannot reach ${m.name}; listen on "0.0.0.0:${port}" or set listen_ip of ${m.name}`,
      );
    }
    return bound;
  };
  const port = (field: string, address: string) => hostPort(address, `components_config.${field}`).port;

  const https = template.httpsConfig!;
  const health = template.healthCheckConfig;
  const servers: PlannedServer[] = [];
  for (const m of d.frontend) {
    const c = clone(ComponentsConfigSchema, template);
    c.adminConfig = undefined;
    c.httpsConfig!.listenAddress = bind(m, "https_config.listen_address", https.listenAddress, "HAProxy");
    // HAProxy sends PROXY v2, so that the addresses recorded are the clients' own.
    c.proxyProtocol = true;
    c.notificationListenAddress = bind(m, "notification_listen_address", template.notificationListenAddress, "the admin servers");
    c.notificationPublicAddress = formatHostPort(m.host, port("notification_listen_address", template.notificationListenAddress));
    bindSideListeners(c, m, bind);
    servers.push({ machine: m, role: "frontend", components: c });
  }
  for (const m of d.adminServer) {
    const c = clone(ComponentsConfigSchema, template);
    c.httpsConfig = undefined;
    c.proxyProtocol = false;
    c.notificationListenAddress = "";
    c.notificationPublicAddress = "";
    c.notificationUseHttpNotifier = true;
    c.adminConfig!.listenAddress = bind(m, "admin_config.listen_address", template.adminConfig!.listenAddress, "HAProxy");
    bindSideListeners(c, m, bind);
    servers.push({ machine: m, role: "admin server", components: c });
  }

  const warnings = roleWarnings(servers);
  if (!health) {
    warnings.push(
      `${source}: components_config has no health_check_config, so HAProxy can only check that the servers accept connections; add health_check_config { listen_address: "0.0.0.0:8080" }`,
    );
  }
  const db = parseMysqlDsn(template.mysqlDataSourceName);
  if (db.host && isLoopbackHost(db.host) && servers.some((s) => !isLoopbackHost(s.machine.host))) {
    warnings.push(
      `${source}: components_config.mysql_data_source_name names ${db.host}, so each machine would use a database of its own; name the database server's address`,
    );
  }
  if (!d.servicesConfig) {
    warnings.push(
      `${source}: distributed.services_config is not set, so messages from clients go nowhere (recorded as failed); add a services { factory: "GRPC" … } pointing at GRR`,
    );
  }

  const healthPort = health ? port("health_check_config.listen_address", health.listenAddress) : undefined;
  const serverOf = (s: PlannedServer, listenPort: number) => ({
    name: s.machine.name,
    address: formatHostPort(s.machine.host, listenPort),
    ...(healthPort !== undefined ? { healthPort } : {}),
  });
  const frontendPort = port("https_config.listen_address", https.listenAddress);
  const adminPort = port("admin_config.listen_address", template.adminConfig!.listenAddress);
  const publicPort = cfg.publicHostPort[0] ? parseHostPort(cfg.publicHostPort[0]).port : frontendPort;
  const balancer = (field: string, value: string, fallback: number) => {
    if (!value) return `:${fallback}`;
    hostPort(value, `distributed.${field}`);
    return value;
  };
  const tiers: HaproxyTier[] = [
    {
      title: "Clients -> frontends. send-proxy-v2 tells the frontends the clients' real addresses (proxy_protocol: true).",
      listenName: "fleetspeak_clients",
      backendName: "fleetspeak_frontends",
      bind: balancer("clients_balancer_address", d.clientsBalancerAddress, publicPort),
      balance: "leastconn",
      sendProxy: true,
      servers: servers.filter((s) => s.role === "frontend").map((s) => serverOf(s, frontendPort)),
    },
    {
      title: "GRR -> admin servers (gRPC over HTTP/2, passed through as TCP).",
      listenName: "fleetspeak_admin",
      backendName: "fleetspeak_admins",
      bind: balancer("admin_balancer_address", d.adminBalancerAddress, adminPort),
      balance: "roundrobin",
      sendProxy: false,
      servers: servers.filter((s) => s.role === "admin server").map((s) => serverOf(s, adminPort)),
    },
  ];
  return {
    outputDirectory: d.outputDirectory,
    servers,
    services: d.servicesConfig ?? create(ServerConfigSchema),
    haproxy: renderHaproxyConfig(`the Fleetspeak deployment "${cfg.configurationName}"`, tiers),
    warnings,
  };
}

function checkMachines(machines: Machine[], fail: (what: string) => never): void {
  const seen = new Set<string>();
  for (const m of machines) {
    if (!MACHINE_NAME.test(m.name)) {
      fail(`distributed: machine name "${m.name}" must be letters, digits, ".", "_" or "-" (it names a folder and an HAProxy server)`);
    }
    if (seen.has(m.name)) fail(`distributed: machine name "${m.name}" is used twice`);
    seen.add(m.name);
    if (!m.host) fail(`distributed: machine "${m.name}" has no host; set the name or IP address other machines reach it at`);
    if (/[\s:/]/.test(m.host) && isIP(m.host) !== 6) {
      fail(`distributed: host "${m.host}" of machine "${m.name}" must be a host name or IP address, without a port`);
    }
    if (m.listenIp && isIP(m.listenIp) === 0) {
      fail(`distributed: listen_ip "${m.listenIp}" of machine "${m.name}" is not an IP address`);
    }
  }
}

/** Health check and metrics listen on the machine's listen_ip too; HAProxy probes the health check. */
function bindSideListeners(
  c: ComponentsConfig,
  m: Machine,
  bind: (m: Machine, field: string, address: string, reachedBy: string) => string,
): void {
  if (c.healthCheckConfig?.listenAddress) {
    c.healthCheckConfig.listenAddress = bind(m, "health_check_config.listen_address", c.healthCheckConfig.listenAddress, "HAProxy's health check");
  }
  if (c.statsConfig?.address) {
    const { host, port } = parseHostPort(c.statsConfig.address, { emptyHost: "" });
    if (m.listenIp && WILDCARD_HOSTS.has(host)) c.statsConfig.address = formatHostPort(m.listenIp, port);
  }
}

/** The security warnings of each role, once per role rather than once per machine. */
function roleWarnings(servers: PlannedServer[]): string[] {
  const out = new Set<string>();
  for (const s of servers) {
    for (const w of checkSecurityConfig(s.components).warnings) out.add(`${s.role}s: ${w}`);
  }
  return [...out];
}
