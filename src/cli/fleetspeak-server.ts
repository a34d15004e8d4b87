// fleetspeak-server: one binary whose components (frontend, admin server, or both) are chosen by
// its components config, as Fleetspeak's. Flags are Go-style (-components_config FILE works).
//   fleetspeak-server --components_config FILE --services_config FILE [--check]
//   fleetspeak-server prune --older_than 720h [...]
//   fleetspeak-server migrate [--to-fleetspeak] [...]
import cluster from "node:cluster";
import { parseArgs } from "node:util";
import { goStyleArgs } from "../common/go-flags.js";
import { createLogger, flushLogs, setLogLevel } from "../common/log.js";
import {
  ConfigError,
  checkComponentsConfig,
  checkServicesConfig,
  DEFAULT_COMPONENTS_CONFIG,
  DEFAULT_SERVICES_CONFIG,
  loadComponentsConfig,
  loadServicesConfig,
  MAX_WORKER_PROCESSES,
  workerProcesses,
} from "../server/config.js";
import { handOverStartFailure, startServerProcess, WorkerStartError } from "../server/main.js";
import { probeStore } from "../server/store/open-store.js";

const USAGE = `usage: fleetspeak-server [--components_config FILE] [--services_config FILE] [--sqlite_path FILE] [--workers N] [--check [--connect]]
       fleetspeak-server prune --older_than DURATION [--mysql_data_source_name DSN | --sqlite_path FILE]
       fleetspeak-server migrate [--to-fleetspeak] [--components_config FILE | --mysql_data_source_name DSN | --sqlite_path FILE]

  --components_config  fleetspeak.components.Config, text format (default ${DEFAULT_COMPONENTS_CONFIG})
  --services_config    fleetspeak.server.ServerConfig, text format (default ${DEFAULT_SERVICES_CONFIG})
  --sqlite_path        database file used when the components config has no mysql_data_source_name
                       (default $FLEETSPEAK_SQLITE_PATH or /var/lib/fleetspeak-server/fleetspeak.sqlite)
  --workers            worker processes sharing the listen ports (default: the components config's
                       worker_processes, else one per CPU; 1 runs everything in one process)
  --check              check both files as a start would (addresses, certificates and keys,
                       files, the DSN), print what would run, and exit: 0 if it would start
  --connect            with --check: also connect to the MySQL database and check its schema
  --log_level          trace, debug, info, warn, error (default info; or $FLEETSPEAK_LOG_LEVEL)
Go/glog flags such as -logtostderr, -alsologtostderr, -v and -log_dir are accepted and ignored
(logs always go to stderr as JSON lines).`;

/** Subcommands, each with its own flags and --help; loaded only when asked for. */
const SUBCOMMANDS: Record<string, () => Promise<(argv: string[]) => Promise<number>>> = {
  prune: async () => (await import("./prune.js")).runPrune,
  migrate: async () => (await import("./migrate.js")).runMigrate,
};

const GLOG_STRING_FLAGS = ["stderrthreshold", "log_dir", "v", "vmodule", "log_backtrace_at"];
const GLOG_BOOL_FLAGS = ["logtostderr", "alsologtostderr"];
const BOOL_FLAGS = new Set(["check", "connect", "help", ...GLOG_BOOL_FLAGS]);

/** Go booleans may be written -flag=true / -flag=false; parseArgs only knows --flag. */
function normalizeBooleans(args: string[]): string[] {
  const out: string[] = [];
  for (const a of args) {
    const m = /^--([\w.-]+)=(true|false|1|0)$/.exec(a);
    if (m && BOOL_FLAGS.has(m[1]!)) {
      if (m[2] === "true" || m[2] === "1") out.push(`--${m[1]}`);
    } else out.push(a);
  }
  return out;
}

function die(message: string, code = 2): never {
  process.stderr.write(`fleetspeak-server: ${message}\n`);
  flushLogs();
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  const [first, second] = argv;
  // "fleetspeak-server SUB ..." and "fleetspeak-server help SUB" (its usage).
  const sub = first === "help" && second !== undefined ? second : first;
  if (sub !== undefined && Object.hasOwn(SUBCOMMANDS, sub)) {
    const run = await SUBCOMMANDS[sub]!();
    process.exit(await run(first === "help" ? ["--help"] : argv.slice(1)));
  }
  if (first === "help") argv = ["--help"];
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: normalizeBooleans(goStyleArgs(argv)),
      options: {
        components_config: { type: "string", default: DEFAULT_COMPONENTS_CONFIG },
        services_config: { type: "string", default: DEFAULT_SERVICES_CONFIG },
        sqlite_path: {
          type: "string",
          default: process.env.FLEETSPEAK_SQLITE_PATH ?? "/var/lib/fleetspeak-server/fleetspeak.sqlite",
        },
        check: { type: "boolean", default: false },
        connect: { type: "boolean", default: false },
        log_level: { type: "string" },
        workers: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
        ...Object.fromEntries(GLOG_STRING_FLAGS.map((f) => [f, { type: "string" as const }])),
        ...Object.fromEntries(GLOG_BOOL_FLAGS.map((f) => [f, { type: "boolean" as const }])),
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (e) {
    // node's first sentence says what is wrong; the usage line says what would be right.
    const what = (e as Error).message.split(". ")[0]!;
    const hint = /Unexpected argument/.test(what) ? `; subcommands: ${Object.keys(SUBCOMMANDS).join(", ")}` : "";
    die(`${what}${hint}; ${USAGE.split("\n")[0]} (fleetspeak-server --help says more)`);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (values.connect && !values.check) die("--connect goes with --check: fleetspeak-server --check --connect");
  if (typeof values.log_level === "string") setLogLevel(values.log_level);
  const componentsPath = values.components_config as string;
  const servicesPath = values.services_config as string;
  const sqlitePath = values.sqlite_path as string;
  let workersFlag: number | undefined;
  if (typeof values.workers === "string") {
    workersFlag = Number(values.workers);
    if (!Number.isInteger(workersFlag) || workersFlag < 1 || workersFlag > MAX_WORKER_PROCESSES) {
      die(`--workers ${values.workers}: give a whole number from 1 to ${MAX_WORKER_PROCESSES} (1 runs everything in one process)`);
    }
  }

  let components: ReturnType<typeof loadComponentsConfig>;
  let services: ReturnType<typeof loadServicesConfig>;
  let summary: string[];
  try {
    components = loadComponentsConfig(componentsPath);
    services = loadServicesConfig(servicesPath);
    const c = checkComponentsConfig(components, componentsPath, sqlitePath, workersFlag);
    const s = checkServicesConfig(services, servicesPath);
    // A worker process reads the same files; its supervisor has printed the warnings already.
    if (!cluster.isWorker) for (const w of [...c.warnings, ...s.warnings]) process.stderr.write(`fleetspeak-server: warning: ${w}\n`);
    summary = [...c.summary, ...s.summary];
  } catch (e) {
    die((e as Error).message, 1);
  }
  if (values.check) {
    if (values.connect) {
      try {
        const answer = await probeStore({ mysqlDataSourceName: components.mysqlDataSourceName, sqlitePath });
        if (answer) summary.push(answer);
      } catch (e) {
        die(`${componentsPath}: mysql_data_source_name: ${(e as Error).message}`, 1);
      }
    }
    process.stdout.write(`config OK: ${summary.join("; ")}\n`);
    return;
  }

  const log = createLogger("server");
  let server: Awaited<ReturnType<typeof startServerProcess>>;
  try {
    server = await startServerProcess({ components, services, sqlitePath, logger: log, workers: workerProcesses(components, workersFlag) });
  } catch (e) {
    const msg = e instanceof ConfigError || e instanceof WorkerStartError ? e.message : `cannot start: ${(e as Error).message}`;
    if (await handOverStartFailure(msg)) process.exit(1);
    die(msg, 1);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping");
    // A supervisor waits for its workers, each of which gives up after 30 s.
    const forceMs = cluster.isPrimary ? 35_000 : 30_000;
    const force = setTimeout(() => die(`did not stop within ${forceMs / 1000} s; exiting`, 1), forceMs);
    force.unref();
    await server.stop();
    log.info("stopped");
    flushLogs();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

process.on("unhandledRejection", (e) => {
  createLogger("server").error({ err: e instanceof Error ? e.stack : String(e) }, "unhandled rejection");
});

await main(process.argv.slice(2));
