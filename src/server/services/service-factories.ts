// The factories a services config may name, as in Fleetspeak's stock server binary: GRPC and NOOP.
// CPS (Google Cloud Pub/Sub) exists in Fleetspeak but needs Google Cloud; naming it is a clear
// startup error instead of an "unable to find factory".
import type { ServiceConfig } from "../../gen/fleetspeak_server/services_pb.js";
import { checkGrpcServiceConfig, type GrpcServiceOptions, grpcServiceFactory } from "./grpc-service.js";
import { noopServiceFactory } from "./noop-service.js";
import type { ServiceFactory } from "./service.js";

const unsupportedCps: ServiceFactory = (cfg) => {
  throw new Error(
    `service "${cfg.name}": factory CPS (Google Cloud Pub/Sub) is not supported by this server;` +
      ' use factory "GRPC" with a fleetspeak.grpcservice.Config pointing at the integrator\'s Processor',
  );
};

export function defaultServiceFactories(opts: { grpc?: GrpcServiceOptions } = {}): Record<string, ServiceFactory> {
  return {
    GRPC: grpcServiceFactory(opts.grpc),
    NOOP: noopServiceFactory,
    CPS: unsupportedCps,
  };
}

/** What installing a service of the stock factories would check, without starting it. */
export function checkServiceConfig(cfg: ServiceConfig): void {
  if (cfg.factory === "GRPC") checkGrpcServiceConfig(cfg);
}
