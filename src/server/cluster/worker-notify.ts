// Where each worker process of a server listens for notifications, when the components config
// gives them ports of their own (worker_notification_port): worker k of N listens on that port
// + k - 1 at the host of notification_listen_address and records its streams at the host of
// notification_public_address (or of the listen address) with the same port. A worker keeps its
// port across restarts, so an address recorded for a client stays the worker's.
import { formatHostPort, parseHostPort } from "../../common/net-address.js";
import type { Config as ComponentsConfig } from "../../gen/fleetspeak_components/config_pb.js";

export interface WorkerNotificationAddress {
  /** What the worker binds. */
  listen: string;
  /** What its streams record as last_contact_streaming_to. */
  public: string;
}

/** Whether the config gives the workers notification ports of their own. */
export function hasWorkerNotificationPorts(cfg: ComponentsConfig): boolean {
  return cfg.workerNotificationPort !== 0 && cfg.notificationListenAddress !== "";
}

/** The notification addresses of worker `index` (1..N); undefined when the workers have none. */
export function workerNotificationAddress(cfg: ComponentsConfig, index: number): WorkerNotificationAddress | undefined {
  if (!hasWorkerNotificationPorts(cfg)) return undefined;
  const port = cfg.workerNotificationPort + index - 1;
  const listenHost = parseHostPort(cfg.notificationListenAddress, { emptyHost: "0.0.0.0" }).host;
  const publicHost = cfg.notificationPublicAddress ? parseHostPort(cfg.notificationPublicAddress, { emptyHost: "0.0.0.0" }).host : listenHost;
  return { listen: formatHostPort(listenHost, port), public: formatHostPort(publicHost, port) };
}
