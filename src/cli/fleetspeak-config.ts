// fleetspeak-config: Fleetspeak's configurator. From one text-format fleetspeak.config.Config it
// creates the CA and server certificate where missing and writes the server components config and
// the client configs (see configurator.ts for the procedure), and a distributed deployment's
// files (distributed.ts).
//   fleetspeak-config --config /etc/fleetspeak-server/configurator.config
// Go-style flags work too (-config FILE); -config_file is accepted as an alias.
import { parseArgs } from "node:util";
import { goStyleArgs } from "../common/go-flags.js";
import {
  ConfiguratorError,
  DEFAULT_CONFIGURATOR_CONFIG,
  loadConfiguratorConfig,
  runConfigurator,
} from "./configurator.js";

const USAGE = `usage: fleetspeak-config --config FILE

  --config FILE   text-format fleetspeak.config.Config (template: ${DEFAULT_CONFIGURATOR_CONFIG});
                  creates the CA and the server certificate where missing, then writes the server
                  components config and the client configs named in it; with a distributed
                  section, also every frontend's and admin server's configs, the HAProxy config
                  and the client config, one folder per machine (docs/scaling.md).
                  Everything is checked before the first file is written.`;

function fail(message: string, code: number): never {
  process.stderr.write(`fleetspeak-config: ${message}\n`);
  process.exit(code);
}

function main(argv: string[]): void {
  let values: { config?: string; config_file?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: goStyleArgs(argv),
      options: {
        config: { type: "string" },
        config_file: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (e) {
    fail(`${(e as Error).message.split(". ")[0]}; usage: fleetspeak-config --config FILE`, 2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const path = values.config ?? values.config_file;
  if (!path) fail(`no config given; run fleetspeak-config --config ${DEFAULT_CONFIGURATOR_CONFIG}`, 2);
  try {
    const report = runConfigurator(loadConfiguratorConfig(path), path);
    for (const line of report.actions) process.stdout.write(`${line}\n`);
    for (const line of report.warnings) process.stderr.write(`fleetspeak-config: warning: ${line}\n`);
  } catch (e) {
    if (e instanceof ConfiguratorError) fail(e.message, 1);
    throw e;
  }
}

main(process.argv.slice(2));
