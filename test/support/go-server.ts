// The real Fleetspeak (Go) server, run by tests that claim compatibility with it: its configs are
// made by its own configurator (fleetspeak_config), it runs as a supervised process.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RowDataPacket } from "mysql2/promise";
import { fleetspeakGo } from "./fleetspeak-go.js";
import { freePort } from "./haproxy.js";
import { adminConnection, dsnForDatabase } from "./mariadb.js";
import { type ManagedProcess, manage } from "./processes.js";

export interface GoDeployment {
  dir: string;
  /** mysql_data_source_name as written in the components config ("sqlite:/path" for SQLite). */
  datastore: string;
  httpsAddress: string;
  adminAddress: string;
  notificationAddress: string;
  /** Files written by fleetspeak_config. */
  componentsConfigPath: string;
  clientConfigPath: string;
  caCertPath: string;
}

/**
 * Runs Fleetspeak's own configurator for a deployment on `datastore` (a Go MySQL DSN, or
 * "sqlite:/path/file" for Fleetspeak's SQLite datastore): CA, server certificate, the server's
 * components config (frontend + admin + HTTP notifications on free loopback ports) and the Linux
 * client config, in a new temporary directory.
 */
export async function makeGoDeployment(datastore: string, name = "go"): Promise<GoDeployment> {
  const dir = mkdtempSync(join(tmpdir(), `fs-${name}-`));
  const [https, admin, notify] = [await freePort(), await freePort(), await freePort()];
  const d: GoDeployment = {
    dir,
    datastore,
    httpsAddress: `127.0.0.1:${https}`,
    adminAddress: `127.0.0.1:${admin}`,
    notificationAddress: `127.0.0.1:${notify}`,
    componentsConfigPath: join(dir, "server.components.config"),
    clientConfigPath: join(dir, "linux_client.config"),
    caCertPath: join(dir, "ca.pem"),
  };
  const configurator = join(dir, "configurator.config");
  writeFileSync(
    configurator,
    `configuration_name: "${name}"
components_config {
  mysql_data_source_name: ${JSON.stringify(datastore)}
  https_config { listen_address: "${d.httpsAddress}" }
  admin_config { listen_address: "${d.adminAddress}" }
  notification_listen_address: "${d.notificationAddress}"
  notification_public_address: "${d.notificationAddress}"
  notification_use_http_notifier: true
}
public_host_port: "localhost:${https}"
trusted_cert_file: "${d.caCertPath}"
trusted_cert_key_file: "${join(dir, "ca-key.pem")}"
server_cert_file: "${join(dir, "server.pem")}"
server_cert_key_file: "${join(dir, "server-key.pem")}"
server_component_configuration_file: "${d.componentsConfigPath}"
linux_client_configuration_file: "${d.clientConfigPath}"
`,
  );
  execFileSync(fleetspeakGo().config, ["-config", configurator], { stdio: ["ignore", "pipe", "pipe"] });
  return d;
}

/** Starts Fleetspeak's (Go) server on a deployment; resolves once it serves. */
export async function startGoServer(d: GoDeployment, servicesConfig = ""): Promise<ManagedProcess> {
  const services = join(d.dir, "server.services.config");
  writeFileSync(services, servicesConfig);
  const proc = spawn(
    fleetspeakGo().server,
    // FLEETSPEAK_GO_VERBOSE=N: Fleetspeak's glog verbosity, for looking into a failure.
    ["-components_config", d.componentsConfigPath, "-services_config", services, "-logtostderr", `-v=${process.env.FLEETSPEAK_GO_VERBOSE ?? "0"}`],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const m = manage("fleetspeak_server (Go)", proc);
  await m.waitFor(/Fleetspeak server started/, 30_000);
  return m;
}

/** Lets Fleetspeak's (Go) server create its schema in `datastore`, then stops it. */
export async function createGoSchema(datastore: string): Promise<void> {
  const server = await startGoServer(await makeGoDeployment(datastore, "go-schema"));
  await server.stop("SIGTERM");
}

/** The components config fleetspeak_config wrote, e.g. to start our server on the same file. */
export function goComponentsConfig(d: GoDeployment): string {
  return readFileSync(d.componentsConfigPath, "utf8");
}

let goMysqlSchema: Promise<string[]> | undefined;

/**
 * SHOW CREATE TABLE of every table Fleetspeak's (Go) server creates on the test MariaDB, in a
 * database made with the server's default character set (as an operator's CREATE DATABASE makes
 * it). Made once per test process; replay them (with foreign key checks off) to get a database
 * exactly as Fleetspeak left it, without starting its server again.
 */
export function goMysqlSchemaStatements(): Promise<string[]> {
  goMysqlSchema ??= (async () => {
    const name = `fstest_goschema_${process.pid}`;
    const admin = await adminConnection();
    try {
      await admin.query(`CREATE DATABASE \`${name}\``);
      await createGoSchema(dsnForDatabase("root@tcp(127.0.0.1:3306)/", name));
      const [tables] = await admin.query<RowDataPacket[]>(
        "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = ?",
        [name],
      );
      const out: string[] = [];
      for (const { t } of tables) {
        const [[row]] = await admin.query<RowDataPacket[]>(`SHOW CREATE TABLE \`${name}\`.\`${t}\``);
        out.push(String(row!["Create Table"]));
      }
      if (out.length !== 12) throw new Error(`Fleetspeak's server made ${out.length} tables, not its 12`);
      return out;
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.end();
    }
  })();
  return goMysqlSchema;
}
