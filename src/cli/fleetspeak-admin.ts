// fleetspeak-admin: the admin API (fleetspeak.server.Admin) from the command line, for operators
// and scripts. Like Fleetspeak's admin tool it talks plaintext gRPC to --admin_addr (default
// localhost:6061); output is a table by default and JSON with --json. Go-style flags work too.
//   fleetspeak-admin [--admin_addr HOST:PORT] [--json] COMMAND [ARGS...]
// Exit codes: 0 done, 1 the server refused or could not be reached, 2 a wrong command line.
import { parseArgs } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { goStyleArgs } from "../common/go-flags.js";
import { AddressError, formatHostPort, parseHostPort } from "../common/net-address.js";
import { Admin } from "../gen/fleetspeak_server/admin_pb.js";
import { COMMANDS, type CommandFlags, findCommand, NotKnownError, parseDuration, UsageError } from "./admin-commands.js";

const DEFAULT_ADMIN_ADDR = "localhost:6061";
/** Fleetspeak's tool raises its receive limit so that ListClients of a large fleet fits. */
const READ_MAX_BYTES = 1024 * 1024 * 1024;

const USAGE = `usage: fleetspeak-admin [--admin_addr HOST:PORT] [--json] [--timeout 30s] COMMAND [ARGS...]

  --admin_addr HOST:PORT  the admin server (admin_config.listen_address); default ${DEFAULT_ADMIN_ADDR}
  --json                  print JSON (IDs in hex, times in RFC 3339) instead of tables
  --timeout DURATION      give up on the server after this long; default 30s

commands:
${COMMANDS.map((c) => `  ${c.usage}\n      ${c.summary}${c.aliases ? ` (also: ${c.aliases.join(", ")})` : ""}`).join("\n")}
`;

class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

const usageHint = "see fleetspeak-admin --help";

/** One line saying what went wrong with the call and what to do. */
function describeRpcError(e: unknown, address: string, command: string): string {
  const err = ConnectError.from(e);
  const cause = err.cause instanceof Error ? err.cause : undefined;
  const sysCode = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (
    err.code === Code.Unavailable ||
    sysCode === "ECONNREFUSED" ||
    sysCode === "ENOTFOUND" ||
    sysCode === "EHOSTUNREACH"
  ) {
    const why = cause?.message ?? err.rawMessage;
    return `cannot reach the admin server at ${address} (${why}); the admin server may not be running, or the address is wrong (set it with --admin_addr HOST:PORT)`;
  }
  if (err.code === Code.DeadlineExceeded) {
    return `no answer from the admin server at ${address} in time (${err.rawMessage}); check that ${address} is the admin port (admin_config.listen_address), or raise --timeout`;
  }
  if (err.code === Code.Unimplemented && err.rawMessage.startsWith("HTTP ")) {
    return `the server at ${address} is not a Fleetspeak admin server (${err.rawMessage}); check --admin_addr (admin_config.listen_address)`;
  }
  return `${command}: the server answered ${Code[err.code] ?? err.code}: ${err.rawMessage}`;
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    // node's text goes on about positionals after "--"; its first sentence is what matters.
    throw new ExitError(`${(e as Error).message.split(". ")[0]}; ${usageHint}`, 2);
  }
  const { values, positionals } = parsed;
  if (values.help || positionals[0] === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const [name, ...args] = positionals;
  if (!name) throw new ExitError(`no command given; ${usageHint}`, 2);
  const command = findCommand(name);
  if (!command) {
    throw new ExitError(`unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(", ")}`, 2);
  }
  for (const flag of Object.keys(values)) {
    if (GLOBAL_FLAGS.has(flag)) continue;
    if (!command.flags.includes(flag as keyof CommandFlags)) {
      throw new ExitError(`${command.name} does not take --${flag}; usage: fleetspeak-admin ${command.usage}`, 2);
    }
  }
  if (args.length < command.minArgs || (command.maxArgs !== undefined && args.length > command.maxArgs)) {
    throw new ExitError(`wrong number of arguments; usage: fleetspeak-admin ${command.usage}`, 2);
  }

  const addressText = values.admin_addr ?? DEFAULT_ADMIN_ADDR;
  let address: string;
  try {
    const { host, port } = parseHostPort(addressText, { emptyHost: "localhost" });
    address = formatHostPort(host, port);
  } catch (e) {
    if (e instanceof AddressError) throw new ExitError(`--admin_addr: ${e.message}`, 2);
    throw e;
  }
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(values.timeout ?? "30s", "timeout");
  } catch (e) {
    throw new ExitError((e as Error).message, 2);
  }

  const transport = createGrpcTransport({
    baseUrl: `http://${address}`,
    readMaxBytes: READ_MAX_BYTES,
    defaultTimeoutMs: timeoutMs,
  });
  const admin = createClient(Admin, transport);
  try {
    const out = await command.run(admin, args, values as CommandFlags);
    process.stdout.write(values.json ? `${JSON.stringify(out.json, null, 2)}\n` : out.text);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) throw new ExitError(e.message, 2);
    if (e instanceof NotKnownError) throw new ExitError(e.message, 1);
    throw new ExitError(describeRpcError(e, address, command.name), 1);
  }
}

const GLOBAL_FLAGS = new Set(["admin_addr", "json", "timeout", "help"]);

function parse(argv: string[]) {
  return parseArgs({
    args: goStyleArgs(argv),
    options: {
      admin_addr: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
      data_text: { type: "string" },
      data_hex: { type: "string" },
      type_url: { type: "string" },
      source: { type: "string" },
      offset: { type: "string" },
      limit: { type: "string" },
      data: { type: "boolean" },
      labels: { type: "string" },
      expires: { type: "string" },
      since: { type: "string" },
    },
    allowPositionals: true,
    strict: true,
  });
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof ExitError)) throw e;
  process.stderr.write(`fleetspeak-admin: ${e.message}\n`);
  process.exitCode = e.code;
}
