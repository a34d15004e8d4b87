// Writes a client's Fleetspeak-format config files into a directory: the main config
// (fleetspeak.client.generic.Config), communicator.txt and textservices/*.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface ClientFilesOptions {
  dir: string;
  servers: string[];
  caPem: string;
  streaming?: boolean;
  labels?: string[];
  serverName?: string;
  /** communicator.txt text (Fleetspeak's CommunicatorConfig). */
  communicator?: string;
  /** textservices file name → text ClientServiceConfig. */
  textServices?: Record<string, string>;
}

/** Returns the path of the main config file. */
export function writeClientFiles(o: ClientFilesOptions): string {
  const confDir = join(o.dir, "etc");
  mkdirSync(join(confDir, "textservices"), { recursive: true });
  const lines = [
    `trusted_certs: ${JSON.stringify(o.caPem)}`,
    ...o.servers.map((s) => `server: ${JSON.stringify(s)}`),
    ...(o.labels ?? []).map((l) => `client_label: ${JSON.stringify(l)}`),
    `filesystem_handler: <`,
    `  configuration_directory: ${JSON.stringify(confDir)}`,
    `  state_file: ${JSON.stringify(join(o.dir, "client.state"))}`,
    `>`,
    `streaming: ${o.streaming ?? true}`,
  ];
  if (o.serverName) lines.push(`server_name: ${JSON.stringify(o.serverName)}`);
  const configFile = join(o.dir, "client.config");
  writeFileSync(configFile, `${lines.join("\n")}\n`);
  if (o.communicator !== undefined) writeFileSync(join(confDir, "communicator.txt"), o.communicator);
  for (const [name, text] of Object.entries(o.textServices ?? {})) {
    writeFileSync(join(confDir, "textservices", name), text);
  }
  return configFile;
}
