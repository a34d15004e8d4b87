// fleetspeak-admin: the admin API (fleetspeak.server.Admin) from the command line, for operators
// and scripts. Like Fleetspeak's admin tool it talks plaintext gRPC to --admin_addr (default
// localhost:6061); output is a table by default and JSON with --json. Go-style flags work too.
//   fleetspeak-admin [--admin_addr HOST:PORT] [--json] COMMAND [ARGS...]
// Exit codes: 0 done, 1 the server refused or could not be reached, 2 a wrong command line.
import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";
import { parseArgs } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { goStyleArgs } from "../common/go-flags.js";
import { AddressError, formatHostPort, parseHostPort } from "../common/net-address.js";
import { Admin } from "../gen/fleetspeak_server/admin_pb.js";
import {
  COMMANDS,
  type CommandFlags,
  commandHelp,
  findCommand,
  NotKnownError,
  parseDuration,
  UsageError,
} from "./admin-commands.js";
import { CONSOLE_TOKEN_USAGE, consoleToken } from "./console-token.js";

const DEFAULT_ADMIN_ADDR = "localhost:6061";
/** Fleetspeak's tool raises its receive limit so that ListClients of a large fleet fits. */
const READ_MAX_BYTES = 1024 * 1024 * 1024;

const USAGE = `usage: fleetspeak-admin [--admin_addr HOST:PORT] [--json] [--timeout 30s] COMMAND [ARGS...]

  --admin_addr HOST:PORT  the admin server (admin_config.listen_address); default ${DEFAULT_ADMIN_ADDR}
  --json                  print JSON (IDs in hex, times in RFC 3339) instead of tables
  --timeout DURATION      give up on the server after this long; default 30s
  --ca_cert FILE          talk TLS to the admin server, verifying it with these PEM CA certificates
  --client_cert FILE      with --client_key: present this PEM certificate (admin servers with mutual TLS)
  --client_key FILE
  --server_name NAME      the name in the admin server's certificate, when it differs from the host

commands (fleetspeak-admin COMMAND --help for one):
${COMMANDS.map((c) => `  ${c.usage}\n      ${c.summary}${c.aliases ? ` (also: ${c.aliases.join(", ")})` : ""}`).join("\n")}
  ${CONSOLE_TOKEN_USAGE}
`;

const GLOBAL_FLAGS_TEXT = "--admin_addr HOST:PORT, --json, --timeout DURATION, --ca_cert FILE, --client_cert FILE, --client_key FILE, --server_name NAME";

class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

const usageHint = "see fleetspeak-admin --help";

const UNTRUSTED_CERT_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
]);

/** One line saying what went wrong with the call and what to do. */
function describeRpcError(e: unknown, address: string, command: string, tls: boolean): string {
  const err = ConnectError.from(e);
  const cause = err.cause instanceof Error ? (err.cause as NodeJS.ErrnoException) : undefined;
  const sysCode = cause?.code ?? "";
  const detail = (cause?.message ?? err.rawMessage).replace(/\s+/g, " ").trim();
  // A plaintext call to a TLS port: the server reads the HTTP/2 preface as a bad TLS record and
  // closes, and the client sees the stream end or (when the close races its writes) ECONNRESET.
  const closedOnUs = (err.code === Code.Canceled || err.code === Code.Internal) && /stream closed|protocol error/i.test(detail);
  if (!tls && (sysCode === "ECONNRESET" || closedOnUs)) {
    return `the admin server at ${address} closed the connection (${detail}); if it uses TLS, call it with --ca_cert (and --client_cert/--client_key for mutual TLS)`;
  }
  if (["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ECONNRESET", "EAI_AGAIN"].includes(sysCode)) {
    return `cannot reach the admin server at ${address} (${detail}); the admin server may not be running, or the address is wrong (set it with --admin_addr HOST:PORT)`;
  }
  if (UNTRUSTED_CERT_CODES.has(sysCode)) {
    return `the admin server at ${address} presented a certificate that is not trusted (${detail}); give --ca_cert with the CA that issued it`;
  }
  if (sysCode === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return `the admin server's certificate does not match the name asked for (${detail}); use --server_name with a name it has, or another --admin_addr`;
  }
  if (tls && /wrong version number|packet length too long/.test(detail)) {
    return `the admin server at ${address} does not speak TLS (${detail}); leave out --ca_cert, --client_cert, --client_key and --server_name`;
  }
  if (err.code === Code.Unavailable) {
    return `cannot reach the admin server at ${address} (${detail}); the admin server may not be running, or the address is wrong (set it with --admin_addr HOST:PORT)`;
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
  // "help", "--help", "help COMMAND" and "COMMAND --help" all answer.
  const asksHelp = values.help || positionals[0] === "help";
  const [name, ...args] = positionals[0] === "help" ? positionals.slice(1) : positionals;
  if (asksHelp && !name) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!name) throw new ExitError(`no command given; ${usageHint}`, 2);
  if (name === "console-token") {
    if (!asksHelp) return printConsoleToken(values, args);
    process.stdout.write(`usage: fleetspeak-admin ${CONSOLE_TOKEN_USAGE}\n`);
    return 0;
  }
  const command = findCommand(name);
  if (!command) {
    throw new ExitError(`unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(", ")}`, 2);
  }
  if (asksHelp) {
    process.stdout.write(commandHelp(command, GLOBAL_FLAGS_TEXT));
    return 0;
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

  const tls = tlsOptions(values);
  const transport = createGrpcTransport({
    baseUrl: `${tls ? "https" : "http"}://${address}`,
    readMaxBytes: READ_MAX_BYTES,
    defaultTimeoutMs: timeoutMs,
    ...(tls ? { nodeOptions: tls } : {}),
  });
  const admin = createClient(Admin, transport);
  try {
    const out = await command.run(admin, args, values as CommandFlags);
    process.stdout.write(values.json ? `${JSON.stringify(out.json, null, 2)}\n` : out.text);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) throw new ExitError(e.message, 2);
    if (e instanceof NotKnownError) throw new ExitError(e.message, 1);
    throw new ExitError(describeRpcError(e, address, command.name, tls !== undefined), 1);
  }
}

const CONSOLE_TOKEN_FLAGS = new Set(["components_config", "user", "valid_for"]);

/** console-token works on a config file, not on the admin API: no connection is made. */
function printConsoleToken(values: ReturnType<typeof parse>["values"], args: string[]): number {
  for (const flag of Object.keys(values)) {
    if (!CONSOLE_TOKEN_FLAGS.has(flag)) {
      throw new ExitError(`console-token does not take --${flag}; usage: fleetspeak-admin ${CONSOLE_TOKEN_USAGE.split("\n")[0]}`, 2);
    }
  }
  if (args.length > 0) throw new ExitError(`console-token takes no arguments; ${usageHint}`, 2);
  try {
    const { token, hint } = consoleToken(values);
    process.stdout.write(`${token}\n`);
    process.stderr.write(`fleetspeak-admin: ${hint}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) throw new ExitError(e.message, 2);
    throw e;
  }
}

const GLOBAL_FLAGS = new Set([
  "admin_addr",
  "json",
  "timeout",
  "help",
  "ca_cert",
  "client_cert",
  "client_key",
  "server_name",
]);

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ExitError(`--${flag}: cannot read ${path}: ${(e as Error).message}`, 2);
  }
}

/** TLS options when any TLS flag is given; undefined for Fleetspeak's plaintext admin port. */
function tlsOptions(values: {
  ca_cert?: string;
  client_cert?: string;
  client_key?: string;
  server_name?: string;
}): SecureClientSessionOptions | undefined {
  if (!values.ca_cert && !values.client_cert && !values.client_key && !values.server_name) return undefined;
  if (Boolean(values.client_cert) !== Boolean(values.client_key)) {
    throw new ExitError("--client_cert and --client_key go together; give both", 2);
  }
  return {
    ...(values.ca_cert ? { ca: readPem(values.ca_cert, "ca_cert") } : {}),
    ...(values.client_cert ? { cert: readPem(values.client_cert, "client_cert") } : {}),
    ...(values.client_key ? { key: readPem(values.client_key, "client_key") } : {}),
    ...(values.server_name ? { servername: values.server_name } : {}),
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: goStyleArgs(argv),
    options: {
      admin_addr: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
      ca_cert: { type: "string" },
      client_cert: { type: "string" },
      client_key: { type: "string" },
      server_name: { type: "string" },
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
      components_config: { type: "string" },
      user: { type: "string" },
      valid_for: { type: "string" },
    },
    allowPositionals: true,
    strict: true,
  });
}

// Exits explicitly: a half-open HTTP/2 session to a misbehaving server must not keep us alive.
let exitCode: number;
try {
  exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof ExitError)) throw e;
  process.stderr.write(`fleetspeak-admin: ${e.message}\n`);
  exitCode = e.code;
}
process.stdout.write("", () => process.exit(exitCode));
