// `npm start`: a complete Fleetspeak deployment on this machine, to see it work before deploying it
// anywhere. In a state folder (./.fleetspeak-local by default) it writes a configurator config,
// runs the configurator (CA, server certificate, server and client configs), starts
// fleetspeak-server (frontend + admin server on the embedded SQLite store) and one
// fleetspeak-client, waits until the client shows up in ListClients, and prints the
// fleetspeak-admin commands to try. Ctrl-C (or SIGTERM) stops both and exits 0.
//
//   node --import tsx scripts/local-deploy.ts [--state_dir DIR] [--frontend_port N] [--admin_port N]
//                                             [--metrics_port N]
// A port of 0 takes any free port; by default 4443, 6061 and 9100 are used when free.
// Running it again reuses the certificates, the database and the client's identity.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync, type WriteStream, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ConfiguratorError, runConfigurator } from "../src/cli/configurator.js";
import { bytesToHex } from "../src/common/ids.js";
import { parseText, printText } from "../src/common/textproto/index.js";
import { ConfigSchema as ClientConfigSchema } from "../src/gen/fleetspeak_client_generic/config_pb.js";
import { ConfigSchema } from "../src/gen/fleetspeak_config/config_pb.js";
import { Admin } from "../src/gen/fleetspeak_server/admin_pb.js";

const ROOT = resolve(import.meta.dirname, "..");
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;
const VERBOSE_LEVELS = new Set(["trace", "debug"]);
/** The client service that the printed `send` command addresses. */
const DEMO_SERVICE = "hello";

function fail(message: string): never {
  process.stderr.write(`local deployment: ${message}\n`);
  process.exit(1);
}

function parseFlags() {
  try {
    return parseArgs({
      options: {
        state_dir: { type: "string", default: process.env.FLEETSPEAK_LOCAL_STATE_DIR ?? ".fleetspeak-local" },
        frontend_port: { type: "string", default: "4443" },
        admin_port: { type: "string", default: "6061" },
        metrics_port: { type: "string", default: "9100" },
      },
      strict: true,
    }).values;
  } catch (e) {
    fail(`${(e as Error).message.split(". ")[0]}; flags: --state_dir DIR --frontend_port N --admin_port N --metrics_port N`);
  }
}

/** The preferred port on 127.0.0.1 when it is free, otherwise (or for 0) one the OS picks. */
async function choosePort(preferred: number): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<number | undefined>((done) => {
      const s = createServer();
      s.once("error", () => done(undefined));
      s.listen(port, "127.0.0.1", () => {
        const bound = (s.address() as { port: number }).port;
        s.close(() => done(bound));
      });
    });
  return (preferred !== 0 ? await tryListen(preferred) : undefined) ?? (await tryListen(0))!;
}

function port(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`--${flag} must be a port number, got ${JSON.stringify(text)}`);
  return n;
}

interface Child {
  name: string;
  proc: ChildProcess;
  exited: Promise<number>;
  /** Resolves with the first JSON log line whose msg matches. */
  waitForLog(msg: string): Promise<Record<string, unknown>>;
}

/** Starts a bin/ launcher; its JSON log lines go to `logFile` and are watched for `waitForLog`. */
function startChild(name: string, bin: string, args: string[], logFile: string): Child {
  const log: WriteStream = createWriteStream(logFile, { flags: "a" });
  const proc = spawn(process.execPath, [join(ROOT, "bin", bin), ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    // Readiness is read from info lines, so the children log at least that much.
    env: { ...process.env, FLEETSPEAK_LOG_LEVEL: VERBOSE_LEVELS.has(process.env.FLEETSPEAK_LOG_LEVEL ?? "") ? process.env.FLEETSPEAK_LOG_LEVEL : "info" },
  });
  const waiters: Array<{ msg: string; resolve: (line: Record<string, unknown>) => void }> = [];
  let partial = "";
  const onData = (chunk: Buffer) => {
    log.write(chunk);
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith("{")) continue;
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      for (const w of [...waiters]) {
        if (parsed.msg === w.msg) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  };
  proc.stdout!.on("data", onData);
  proc.stderr!.on("data", onData);
  const exited = new Promise<number>((done) => {
    proc.on("exit", (code, signal) => {
      log.end();
      done(code ?? (signal ? 128 : 1));
    });
  });
  return {
    name,
    proc,
    exited,
    waitForLog: (msg) => new Promise((resolveLine) => waiters.push({ msg, resolve: resolveLine })),
  };
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const stateDir = resolve(flags.state_dir);
  const rel = (p: string) => {
    const r = relative(process.cwd(), p);
    return r === "" ? "." : r.startsWith("..") ? p : r;
  };
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const clientDir = join(stateDir, "client");
  mkdirSync(join(clientDir, "textservices"), { recursive: true });

  const frontendPort = await choosePort(port(flags.frontend_port, "frontend_port"));
  const adminPort = await choosePort(port(flags.admin_port, "admin_port"));
  const metricsPort = await choosePort(port(flags.metrics_port, "metrics_port"));
  const adminAddr = `127.0.0.1:${adminPort}`;

  // The configurator's input, written where the operator can read (and reuse) it.
  const configurator = create(ConfigSchema, {
    configurationName: "local",
    componentsConfig: {
      httpsConfig: { listenAddress: `127.0.0.1:${frontendPort}` },
      adminConfig: { listenAddress: adminAddr },
      statsConfig: { address: `127.0.0.1:${metricsPort}` },
    },
    publicHostPort: [`localhost:${frontendPort}`],
    trustedCertFile: join(stateDir, "ca.pem"),
    trustedCertKeyFile: join(stateDir, "ca-key.pem"),
    serverCertFile: join(stateDir, "server.pem"),
    serverCertKeyFile: join(stateDir, "server-key.pem"),
    serverComponentConfigurationFile: join(stateDir, "server.components.config"),
    linuxClientConfigurationFile: join(stateDir, "linux_client.config"),
  });
  const configuratorPath = join(stateDir, "configurator.config");
  writeFileSync(configuratorPath, printText(ConfigSchema, configurator));
  try {
    runConfigurator(configurator, configuratorPath);
  } catch (e) {
    if (e instanceof ConfiguratorError) fail(e.message);
    throw e;
  }

  // The generated Linux client config keeps its state in the state folder instead of /etc.
  const clientConfig = parseText(ClientConfigSchema, readFileSync(configurator.linuxClientConfigurationFile, "utf8"));
  clientConfig.persistenceHandler = {
    case: "filesystemHandler",
    value: create(ClientConfigSchema, {
      persistenceHandler: {
        case: "filesystemHandler",
        value: { configurationDirectory: clientDir, stateFile: join(clientDir, "client.state") },
      },
    }).persistenceHandler.value as never,
  };
  const clientConfigPath = join(clientDir, "client.config");
  writeFileSync(clientConfigPath, printText(ClientConfigSchema, clientConfig));
  writeFileSync(join(clientDir, "textservices", `${DEMO_SERVICE}.textproto`), `name: "${DEMO_SERVICE}"\nfactory: "NOOP"\n`);
  const servicesPath = join(stateDir, "server.services.config");
  writeFileSync(servicesPath, "# Services that receive messages from clients; none in the local deployment.\n");

  const started = Date.now();
  const children: Child[] = [];
  let stopping = false;
  const stopAll = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${why}: stopping the client and the server...\n`);
    const force = setTimeout(() => {
      process.stderr.write(`local deployment: not stopped after ${STOP_GRACE_MS / 1000} s; killing\n`);
      for (const c of children) c.proc.kill("SIGKILL");
    }, STOP_GRACE_MS);
    // The client first, so that the server does not log it as lost.
    for (const c of [...children].reverse()) {
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGTERM");
      const exit = await c.exited;
      if (exit !== 0) code = code || 1;
    }
    clearTimeout(force);
    process.stdout.write(code === 0 ? "stopped.\n" : `stopped (exit ${code}); see the logs in ${rel(stateDir)}\n`);
    process.exit(code);
  };
  process.on("SIGINT", () => void stopAll("SIGINT", 0));
  process.on("SIGTERM", () => void stopAll("SIGTERM", 0));
  const watch = (c: Child) =>
    void c.exited.then((code) => {
      if (!stopping) {
        process.stderr.write(`local deployment: ${c.name} exited with code ${code}; see ${rel(join(stateDir, `${c.name}.log`))}\n`);
        void stopAll(`${c.name} exited`, 1);
      }
    });

  const server = startChild(
    "server",
    "fleetspeak-server.js",
    [
      "-components_config",
      configurator.serverComponentConfigurationFile,
      "-services_config",
      servicesPath,
      "-sqlite_path",
      join(stateDir, "fleetspeak.sqlite"),
    ],
    join(stateDir, "server.log"),
  );
  children.push(server);
  watch(server);
  let waitingFor = `the server to start (log ${rel(join(stateDir, "server.log"))})`;
  const timeout = setTimeout(
    () => void stopAll(`not ready within ${READY_TIMEOUT_MS / 1000} s, waiting for ${waitingFor}`, 1),
    READY_TIMEOUT_MS,
  );
  await server.waitForLog("Fleetspeak server started.");
  waitingFor = `the client to start (log ${rel(join(stateDir, "client.log"))})`;

  const client = startChild("client", "fleetspeak-client.js", ["-config", clientConfigPath], join(stateDir, "client.log"));
  children.push(client);
  watch(client);
  const clientId = String((await client.waitForLog("client started")).clientId);
  waitingFor = `client ${clientId} to connect (logs in ${rel(stateDir)})`;

  const admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://${adminAddr}` }));
  for (;;) {
    const { clients } = await admin.listClients({ clientIds: [Buffer.from(clientId, "hex")] });
    const c = clients[0];
    if (c && bytesToHex(c.clientId) === clientId && c.lastContactTime && timestampMs(c.lastContactTime) >= started - 1000) {
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  clearTimeout(timeout);

  const adminCmd = `node ${rel(join(ROOT, "bin/fleetspeak-admin.js"))} --admin_addr ${adminAddr}`;
  process.stdout.write(
    [
      `Fleetspeak is running on this machine (state and logs in ${rel(stateDir)}):`,
      `  frontend     127.0.0.1:${frontendPort}   (clients connect here; log ${rel(join(stateDir, "server.log"))})`,
      `  admin API    ${adminAddr}   (gRPC, what GRR and fleetspeak-admin call)`,
      `  metrics      http://127.0.0.1:${metricsPort}/metrics`,
      `  client       ${clientId}   (log ${rel(join(stateDir, "client.log"))})`,
      "",
      "In another terminal:",
      `  ${adminCmd} listclients`,
      `  ${adminCmd} send ${clientId} ${DEMO_SERVICE} Greeting --data_text "hello, client"`,
      `  ${adminCmd} status MESSAGE_ID        (the id that send printed)`,
      "",
      "Fleetspeak is ready. Press Ctrl-C to stop.",
      "",
    ].join("\n"),
  );
}

await main();
