// The contract between the client and the services it runs (Daemon, Socket, Stdin, NOOP, system).
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import type { Logger } from "../../common/log.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { ClientServiceConfig } from "../../gen/fleetspeak/system_pb.js";

export interface SendOptions {
  /** Called once a server has accepted the message. */
  onAck?: () => void;
  /** Gives up waiting for room in the outbox (the message is then not sent). */
  signal?: AbortSignal;
}

/** What the client offers a running service. */
export interface ServiceContext {
  /** The service's configured name (the source of what it sends). */
  readonly name: string;
  /** Current ClientID (it changes when the server asks for a rekey). */
  clientId(): Buffer;
  /**
   * Queues a message for the server (or for a local service when addressed to our own ClientID).
   * Fills in `source` and, if empty, a random 16-byte `source_message_id`. Resolves when queued;
   * waits while the outbox for its priority is full.
   */
  send(message: Message, opts?: SendOptions): Promise<void>;
  log: Logger;
}

export interface ClientService {
  start(ctx: ServiceContext): Promise<void>;
  /** Handles one message from the server; a throw becomes a MessageError to the server. */
  processMessage(message: Message): Promise<void>;
  stop(): Promise<void>;
}

/** Knobs the composition root passes to factories (tests shorten Fleetspeak's delays). */
export interface FactoryOptions {
  /** Minimum time between two starts of a daemon (Fleetspeak: 1 min). */
  daemonRespawnDelayMs: number;
  /** Daemons inherit the client's stdin/stdout/stderr (-std_forward). */
  stdForward: boolean;
}

export type ServiceFactory = (config: ClientServiceConfig, opts: FactoryOptions) => ClientService;

export class ServiceConfigError extends Error {}

/** The factory-specific config inside ClientServiceConfig.config, or a ServiceConfigError. */
export function unpackServiceConfig<Desc extends DescMessage>(
  config: ClientServiceConfig,
  schema: Desc,
): MessageShape<Desc> {
  if (!config.config) {
    throw new ServiceConfigError(
      `service ${config.name}: factory ${config.factory} needs a config of type ${schema.typeName}`,
    );
  }
  const inner = anyUnpack(config.config, schema);
  if (!inner) {
    throw new ServiceConfigError(
      `service ${config.name}: config is ${config.config.typeUrl}, factory ${config.factory} needs type.googleapis.com/${schema.typeName}`,
    );
  }
  return inner;
}

/** A google.protobuf.Duration in milliseconds (0 when absent). */
export function durationMs(d: { seconds: bigint; nanos: number } | undefined): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}
