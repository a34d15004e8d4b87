// fleetspeak-client: runs the client from Fleetspeak-format config files.
//
//   fleetspeak-client --config /etc/fleetspeak-client/client.config [--reset_state] [--std_forward]
//   fleetspeak-client --config /etc/fleetspeak-client/client.config --print_client_id
//
// Go-style single-dash flags (-config FILE, -config=FILE) work too, and glog's flags
// (-logtostderr, -alsologtostderr, -v …) are accepted so existing unit files run unchanged; logs
// always go to stderr, and FLEETSPEAK_LOG_LEVEL (or -v ≥ 1 for debug) sets the level.
// Signals: SIGTERM/SIGINT stop gracefully (exit 0; exit 1 if that takes over 10 s); SIGHUP stops
// the client and starts it again from the re-read config. Exit codes: 1 bad config or state,
// 7 the server sent Die, 2 no server contact for failure_suicide_time.
import { parseArgs } from "node:util";
import { type ClientExit, clientIdOfConfig, type RunningClient, startClient } from "../client/main.js";
import { goStyleArgs } from "../common/go-flags.js";
import { createLogger, flushLogs, setLogLevel } from "../common/log.js";

const STOP_GRACE_MS = 10_000;
const RELOAD_GRACE_MS = 60_000;

const USAGE = `usage: fleetspeak-client --config FILE [--reset_state] [--std_forward]
       fleetspeak-client --config FILE --print_client_id

  --config FILE     the client config (text fleetspeak.client.generic.Config)
  --reset_state     if the state file is unreadable, keep it aside and create a new identity
                    (a new ClientID) instead of refusing to start
  --std_forward     daemons inherit this process's stdin/stdout/stderr (for testing a daemon)
  --print_client_id print the ClientID kept in the config's state file and exit (changes nothing;
                    reads Fleetspeak's own client's state file as well)
`;

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: goStyleArgs(argv),
      options: {
        config: { type: "string", default: "" },
        reset_state: { type: "boolean", default: false },
        std_forward: { type: "boolean", default: false },
        print_client_id: { type: "boolean", default: false },
        profile_dir: { type: "string" },
        help: { type: "boolean", short: "h" },
        // glog flags, accepted for compatibility with Fleetspeak's command lines.
        logtostderr: { type: "string" },
        alsologtostderr: { type: "string" },
        stderrthreshold: { type: "string" },
        log_dir: { type: "string" },
        v: { type: "string" },
        vmodule: { type: "string" },
        log_backtrace_at: { type: "string" },
      },
      allowPositionals: false,
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`fleetspeak-client: ${(e as Error).message}\n${USAGE}`);
    process.exit(1);
  }
}

// glog booleans come as "-logtostderr" (no value): give parseArgs an explicit value for them.
const BOOLEAN_GLOG = new Set(["-logtostderr", "--logtostderr", "-alsologtostderr", "--alsologtostderr"]);
const argv = process.argv.slice(2).map((a) => (BOOLEAN_GLOG.has(a) ? `${a}=true` : a));
const flags = parse(argv);
if (flags.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (flags.print_client_id) {
  try {
    process.stdout.write(`${clientIdOfConfig(flags.config ?? "")}\n`);
    process.exit(0);
  } catch (e) {
    process.stderr.write(`fleetspeak-client: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
if (flags.v !== undefined && Number(flags.v) >= 1 && !process.env.FLEETSPEAK_LOG_LEVEL) setLogLevel("debug");

const log = createLogger("fleetspeak-client");

function exit(code: number): never {
  flushLogs();
  process.exit(code);
}

async function start(): Promise<RunningClient> {
  try {
    return await startClient({
      configFile: flags.config ?? "",
      resetState: flags.reset_state,
      stdForward: flags.std_forward,
      log,
    });
  } catch (e) {
    process.stderr.write(`fleetspeak-client: ${(e as Error).message}\n`);
    exit(1);
  }
}

function watchExit(client: RunningClient): void {
  void client.exitRequested.then((e: ClientExit) => {
    if (client !== current) return;
    log.warn({ code: e.code }, e.reason);
    exit(e.code);
  });
}

async function stopWithin(client: RunningClient, ms: number): Promise<void> {
  const timer = setTimeout(() => {
    log.error({ graceMs: ms }, "client did not stop in time; exiting anyway");
    exit(1);
  }, ms);
  await client.stop();
  clearTimeout(timer);
}

// No top-level await: the single executable (scripts/package-client.mjs) runs this as CommonJS.
let current: RunningClient | undefined;
let busy = false;

async function main(): Promise<void> {
  // The handlers come first: "client started" is logged before start() returns, and a signal
  // that arrived before they were installed killed the client without a graceful stop. A signal
  // during the first start acts once the client has started.
  const first = start();
  const running = () => (current ? Promise.resolve(current) : first);

  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.on(sig, () => {
      log.info({ signal: sig }, "stopping");
      void running()
        .then((c) => stopWithin(c, STOP_GRACE_MS))
        .then(() => exit(0));
    });
  }

  process.on("SIGHUP", () => {
    if (busy) return;
    busy = true;
    log.info("SIGHUP: reloading");
    void (async () => {
      await stopWithin(await running(), RELOAD_GRACE_MS);
      current = await start();
      watchExit(current);
      busy = false;
    })();
  });

  const started = await first;
  // A SIGHUP during the first start may already have replaced it.
  if (!current) {
    current = started;
    watchExit(current);
  }
}

void main();
