// A server-side service: where messages from clients go (e.g. GRR's Processor through the GRPC
// factory). Services are built by factories named in the services config.
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { ServiceConfig } from "../../gen/fleetspeak_server/services_pb.js";
import type { Logger } from "../../common/log.js";
import type { Store } from "../store/store.js";

/**
 * Thrown by a service when a message could not be processed now but may succeed later (the
 * integrator is down, overloaded, timed out): the message stays pending and is retried.
 * Any other error fails the message permanently, with the error text as its failure reason.
 */
export class TemporaryError extends Error {
  override readonly name = "TemporaryError";
}

export interface Service {
  processMessage(msg: Message, signal: AbortSignal): Promise<void>;
  stop(): Promise<void>;
}

/** What a service may use from the server around it. */
export interface ServiceContext {
  store: Store;
  logger: Logger;
  /** Forget cached data about a client (labels changed, blacklisted). */
  invalidateClient(clientId: Uint8Array): void;
}

export type ServiceFactory = (config: ServiceConfig, ctx: ServiceContext) => Service | Promise<Service>;
