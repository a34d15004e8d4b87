// Factory GRPC: forwards each message to an integrator's fleetspeak.grpcservice.Processor (GRR
// listens for Fleetspeak this way). As in Fleetspeak's grpcservice: a failed call is repeated after
// 1 s, 2 s, 4 s, … for as long as the processing budget lasts; then the last error decides whether
// the message is retried later (the integrator is down, overloaded or refusing us for now) or fails
// for good (it rejected the message). Delivery is at-least-once.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { createSecureContext } from "node:tls";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { bytesToHex } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import { encodeMessage } from "../../common/message-codec.js";
import { formatHostPort, parseHostPort } from "../../common/net-address.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import { type Config, ConfigSchema } from "../../gen/fleetspeak_grpcservice/grpcservice_pb.js";
import type { ServiceConfig } from "../../gen/fleetspeak_server/services_pb.js";
import { GrpcUnaryClient, type GrpcUnaryClientOptions, type UnaryCaller } from "./grpc-unary-client.js";
import { type Service, type ServiceFactory, TemporaryError } from "./service.js";

const PROCESS_PATH = "/fleetspeak.grpcservice.Processor/Process";

/** Codes after which a message is worth retrying later; others mean the integrator rejected it. */
const TEMPORARY_CODES = new Set<Code>([
  Code.DeadlineExceeded,
  Code.Unavailable,
  Code.Aborted,
  Code.Canceled,
  Code.Unauthenticated,
  Code.PermissionDenied,
]);

/** grpc-go's names for status codes, so that failure reasons read as Fleetspeak's do. */
const GO_CODE_NAMES: Record<Code, string> = {
  [Code.Canceled]: "Canceled",
  [Code.Unknown]: "Unknown",
  [Code.InvalidArgument]: "InvalidArgument",
  [Code.DeadlineExceeded]: "DeadlineExceeded",
  [Code.NotFound]: "NotFound",
  [Code.AlreadyExists]: "AlreadyExists",
  [Code.PermissionDenied]: "PermissionDenied",
  [Code.ResourceExhausted]: "ResourceExhausted",
  [Code.FailedPrecondition]: "FailedPrecondition",
  [Code.Aborted]: "Aborted",
  [Code.OutOfRange]: "OutOfRange",
  [Code.Unimplemented]: "Unimplemented",
  [Code.Internal]: "Internal",
  [Code.Unavailable]: "Unavailable",
  [Code.DataLoss]: "DataLoss",
  [Code.Unauthenticated]: "Unauthenticated",
};

export interface GrpcServiceOptions {
  /** First pause between attempts; doubles after each. Fleetspeak: 1 s. */
  initialBackoffMs?: number;
  /** Makes the Processor client (bench/admin.ts measures another gRPC stack through this). */
  makeClient?: (opts: GrpcUnaryClientOptions) => UnaryCaller;
}

export function grpcServiceFactory(opts: GrpcServiceOptions = {}): ServiceFactory {
  return (cfg, ctx) => {
    const conf = unpackConfig(cfg);
    const makeClient = opts.makeClient ?? ((o: GrpcUnaryClientOptions) => new GrpcUnaryClient(o));
    return new GrpcService(cfg.name, conf, ctx.logger, opts.initialBackoffMs ?? 1000, makeClient);
  };
}

function unpackConfig(cfg: ServiceConfig): Config {
  const where = `service "${cfg.name}" (factory GRPC)`;
  if (!cfg.config) {
    throw new Error(
      `${where}: config is missing; give a [type.googleapis.com/fleetspeak.grpcservice.Config] { target: "host:port" insecure: true } block`,
    );
  }
  let conf: Config | undefined;
  try {
    conf = anyUnpack(cfg.config, ConfigSchema);
  } catch (err) {
    throw new Error(`${where}: config cannot be decoded as fleetspeak.grpcservice.Config: ${(err as Error).message}`);
  }
  if (!conf) {
    throw new Error(
      `${where}: config has type ${JSON.stringify(cfg.config.typeUrl)}, expected type.googleapis.com/fleetspeak.grpcservice.Config`,
    );
  }
  if (!conf.insecure && conf.certFile === "") {
    throw new Error(
      `GRPCService requires either insecure or cert_file to be set, got: ${configText(conf)} (in ${where})`,
    );
  }
  if ((conf.clientCertificateFile === "") !== (conf.clientKeyFile === "")) {
    throw new Error(`${where}: client_certificate_file and client_key_file go together; set both or neither`);
  }
  if (conf.insecure && conf.clientCertificateFile !== "") {
    throw new Error(`${where}: a client certificate needs TLS; remove insecure and set cert_file`);
  }
  return conf;
}

/** The config as Go's prototext prints it (set fields only), for error messages. */
function configText(conf: Config): string {
  const parts: string[] = [];
  if (conf.target !== "") parts.push(`target:${JSON.stringify(conf.target)}`);
  if (conf.insecure) parts.push("insecure:true");
  if (conf.certFile !== "") parts.push(`cert_file:${JSON.stringify(conf.certFile)}`);
  if (conf.clientCertificateFile !== "") parts.push(`client_certificate_file:${JSON.stringify(conf.clientCertificateFile)}`);
  if (conf.clientKeyFile !== "") parts.push(`client_key_file:${JSON.stringify(conf.clientKeyFile)}`);
  return parts.join(" ");
}

/**
 * A grpc-go dial target as an http(s) base URL: "host:port", "dns:///host:port" and
 * "passthrough:///host:port" are understood; without a port, 443 as grpc-go does.
 */
function baseUrlFor(target: string, tls: boolean, where: string): string {
  const m = /^(dns|passthrough):\/\/[^/]*\/(.*)$/.exec(target);
  const address = m ? m[2]! : target;
  if (address === "" || /^[a-z][a-z0-9+.-]*:\//i.test(address) || address.startsWith("unix:")) {
    throw new Error(`${where}: target ${JSON.stringify(target)} is not supported; write it as "host:port"`);
  }
  try {
    const { host, port } = parseHostPort(address, { defaultPort: 443 });
    return `${tls ? "https" : "http"}://${formatHostPort(host, port)}`;
  } catch (err) {
    throw new Error(`${where}: bad target ${JSON.stringify(target)}: ${(err as Error).message}`);
  }
}

/** Where and how the service calls the Processor: its files read and its TLS set up, nothing dialed. */
function connectionSettings(name: string, conf: Config) {
  const where = `service "${name}" (factory GRPC)`;
  const tls = !conf.insecure;
  const baseUrl = baseUrlFor(conf.target, tls, where);
  const read = (field: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${where}: cannot read ${field} ${path}: ${(err as Error).message}`);
    }
  };
  const tlsOptions: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  if (tls) tlsOptions.ca = read("cert_file", conf.certFile);
  if (conf.clientCertificateFile !== "") {
    // Mutual TLS: the integrator may require a certificate from its callers.
    tlsOptions.cert = read("client_certificate_file", conf.clientCertificateFile);
    tlsOptions.key = read("client_key_file", conf.clientKeyFile);
  }
  if (tls) {
    // A bad file would otherwise only show as every call failing (and being retried) later.
    try {
      createSecureContext(tlsOptions);
    } catch (err) {
      throw new Error(`${where}: cannot use the TLS files (cert_file, client_certificate_file, client_key_file): ${(err as Error).message}`);
    }
  }
  return { baseUrl, tls, tlsOptions };
}

/** Everything installing the service checks (config, target, files, TLS), without installing it. */
export function checkGrpcServiceConfig(cfg: ServiceConfig): void {
  connectionSettings(cfg.name, unpackConfig(cfg));
}

class GrpcService implements Service {
  readonly #name: string;
  readonly #log: Logger;
  readonly #initialBackoffMs: number;
  readonly #client: UnaryCaller;
  #stopped = false;

  constructor(
    name: string,
    conf: Config,
    log: Logger,
    initialBackoffMs: number,
    makeClient: (opts: GrpcUnaryClientOptions) => UnaryCaller,
  ) {
    this.#name = name;
    this.#log = log;
    this.#initialBackoffMs = initialBackoffMs;
    const { baseUrl, tls, tlsOptions } = connectionSettings(name, conf);
    // Like grpc-go's non-blocking dial: nothing connects until the first message.
    this.#client = makeClient({ baseUrl, tls: tlsOptions });
    log.info(
      { target: conf.target, tls, clientCertificate: tlsOptions.cert !== undefined },
      `service ${name} forwards messages to a Processor`,
    );
  }

  async processMessage(msg: Message, signal: AbortSignal): Promise<void> {
    if (this.#stopped) throw new TemporaryError("connection unavailable");
    let delay = this.#initialBackoffMs;
    let last: unknown;
    const request = encodeMessage(msg);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#client.call(PROCESS_PATH, request, signal);
        return;
      } catch (err) {
        last = err;
      }
      if (signal.aborted) break;
      this.#log.debug(
        { message: bytesToHex(msg.messageId), attempt, err: ConnectError.from(last).message, retryInMs: delay },
        "Processor call failed",
      );
      try {
        await sleep(delay, undefined, { signal });
      } catch {
        break;
      }
      delay *= 2;
    }
    const ce = ConnectError.from(last);
    const text = `rpc error: code = ${GO_CODE_NAMES[ce.code] ?? ce.code} desc = ${ce.rawMessage}`;
    if (TEMPORARY_CODES.has(ce.code)) throw new TemporaryError(text, { cause: last });
    throw new Error(text, { cause: last });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#client.close();
    this.#log.debug(`service ${this.#name}: Processor connection closed`);
  }
}
