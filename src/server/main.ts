// The composition root: the two config files in, running components out. The one place that
// knows which store, notifier and listeners are concrete.
import type { Config as ComponentsConfig } from "../gen/fleetspeak_components/config_pb.js";
import type { ServerConfig } from "../gen/fleetspeak_server/server_pb.js";
import { createLogger, type Logger } from "../common/log.js";
import { startAdminServer } from "./admin/admin-server.js";
import { ConsoleData } from "./console/console-data.js";
import { startConsoleServer } from "./console/console-server.js";
import { AdminService } from "./admin/admin-service.js";
import { BroadcastManager } from "./comms/broadcasts.js";
import { ClientCache } from "./comms/client-cache.js";
import { Comms } from "./comms/comms.js";
import { Dispatcher } from "./comms/dispatcher.js";
import { DEFAULT_STREAM_TIMINGS, type StreamTimings } from "./comms/stream-session.js";
import { startFrontend } from "./frontend/frontend.js";
import type { FrontendListenerLimits } from "./frontend/listener.js";
import { HttpNotificationListener } from "./notify/http-listener.js";
import { HttpNotifier, LocalNotifier } from "./notify/http-notifier.js";
import { LOCAL_NOTIFICATION_ADDRESS, type Notifier } from "./notify/notifier.js";
import { startHealthCheck } from "./observe/health.js";
import { HeartbeatWriter } from "./observe/heartbeat.js";
import {
  describeMessage,
  instrumentAdminService,
  instrumentNotifier,
  instrumentStore,
  Metrics,
} from "./observe/metrics.js";
import { startMetricsServer } from "./observe/metrics-server.js";
import { adminTlsFromConfig, consoleFromConfig, notificationAuthFromConfig } from "./security/security-config.js";
import { ServiceManager } from "./services/manager.js";
import { openStore } from "./store/open-store.js";
import type { Store } from "./store/store.js";

export interface ServerOptions {
  components: ComponentsConfig;
  services: ServerConfig;
  /** The SQLite file used when the components config names no MySQL database. */
  sqlitePath: string;
  logger?: Logger;
  /** Tuning and test hooks; defaults are Fleetspeak's. */
  streamTimings?: StreamTimings;
  sweepIntervalMs?: number;
  frontendLimits?: Partial<FrontendListenerLimits>;
  notifyTimeoutMs?: number;
  clientCacheTtlMs?: number;
  /** How often this process writes its heartbeat row (operator console). Default 10 s. */
  heartbeatIntervalMs?: number;
}

export interface RunningServer {
  store: Store;
  metrics: Metrics;
  metricsAddress?: string;
  frontendAddress?: string;
  adminAddress?: string;
  consoleAddress?: string;
  notificationAddress?: string;
  healthAddress?: string;
  /** Connected streaming clients held by this process. */
  connectedClients(): number;
  stop(): Promise<void>;
}


export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const log = opts.logger ?? createLogger("server");
  const cfg = opts.components;
  const stops: Array<() => Promise<void> | void> = [];
  const stopAll = async () => {
    for (const s of stops.reverse()) {
      try {
        await s();
      } catch (e) {
        log.warn({ err: (e as Error).message }, "error while stopping");
      }
    }
  };

  try {
    const metrics = new Metrics();
    const rawStore = await openStore({ mysqlDataSourceName: cfg.mysqlDataSourceName, sqlitePath: opts.sqlitePath });
    stops.push(() => rawStore.close());
    const store = instrumentStore(rawStore, metrics);
    const cache = new ClientCache(store, opts.clientCacheTtlMs !== undefined ? { ttlMs: opts.clientCacheTtlMs } : {});
    stops.push(() => cache.close());
    const dispatcher = new Dispatcher({
      store,
      logger: createLogger("dispatcher"),
      ...(opts.sweepIntervalMs !== undefined ? { sweepIntervalMs: opts.sweepIntervalMs } : {}),
    });
    stops.push(() => dispatcher.close());
    metrics.trackConnectedClients(() => dispatcher.connectedCount);

    // Notifications. A frontend with a listener is reachable by other servers at its public
    // address; without one, only this process can wake its streams ("local").
    const notificationAuth = notificationAuthFromConfig(cfg);
    let streamingAddress = LOCAL_NOTIFICATION_ADDRESS;
    let notificationAddress: string | undefined;
    let listener: HttpNotificationListener | undefined;
    if (cfg.notificationListenAddress) {
      listener = new HttpNotificationListener({
        listenAddress: cfg.notificationListenAddress,
        publicAddress: cfg.notificationPublicAddress,
        logger: createLogger("notify"),
        onReceived: (known) => metrics.notificationReceived(known),
        ...(notificationAuth ? { verifier: notificationAuth.verifier } : {}),
      });
      await listener.start((id, message) => dispatcher.dispatch(id, message));
      stops.push(() => listener?.stop());
      streamingAddress = listener.publicAddress;
      notificationAddress = listener.boundAddress;
    }
    const local = new LocalNotifier((id, message) => dispatcher.dispatch(id, message));
    let notifier: Notifier = local;
    if (cfg.notificationListenAddress || cfg.notificationUseHttpNotifier) {
      const http = new HttpNotifier({
        local,
        ...(opts.notifyTimeoutMs !== undefined ? { timeoutMs: opts.notifyTimeoutMs } : {}),
        ...(notificationAuth ? { signer: notificationAuth.signer } : {}),
        withoutMessages: cfg.notificationWithoutMessages,
      });
      stops.push(() => http.close());
      const self = streamingAddress;
      // A stream held by this very process is woken directly, not through an HTTP round trip.
      notifier = {
        newMessageForClient: (target, id, carried) =>
          target === self
            ? local.newMessageForClient(target, id, carried)
            : http.newMessageForClient(target, id, carried),
      };
    }
    notifier = instrumentNotifier(notifier, metrics);

    const services = new ServiceManager({
      store,
      logger: createLogger("services"),
      lookupClient: async (id) => (await cache.getOrRead(id))?.data,
      invalidateClient: (id) => cache.invalidate(id),
      observer: {
        processed: (m, seconds, isFirstTry) => metrics.messageProcessed({ ...describeMessage(m), isFirstTry, seconds }),
        errored: (m, seconds, isTemp, isFirstTry) =>
          metrics.messageErrored({ ...describeMessage(m), isTemp, isFirstTry, seconds }),
        dropped: (m, isFirstTry) => metrics.messageDropped({ ...describeMessage(m), isFirstTry }),
      },
      systemHooks: {
        onMessagesAcked: (count) => metrics.messagesDelivered(count),
        onKillNotification: (id, kn) => {
          void cache.getOrRead(id).then((c) => {
            if (c) metrics.killNotificationReceived(c.data, kn);
          });
        },
      },
    });
    await services.install(opts.services);
    services.start();
    stops.push(() => services.stop());

    const running: RunningServer = {
      store,
      metrics,
      connectedClients: () => dispatcher.connectedCount,
      stop: stopAll,
    };

    if (cfg.httpsConfig) {
      const pollMs = opts.services.broadcastPollTime
        ? Number(opts.services.broadcastPollTime.seconds) * 1000 + opts.services.broadcastPollTime.nanos / 1e6
        : 60_000;
      const broadcasts = new BroadcastManager({
        store,
        logger: createLogger("broadcasts"),
        pollMs: pollMs > 0 ? pollMs : 60_000,
        onNewBroadcasts: () => {
          cache.clear();
          void dispatcher.dispatchAll();
        },
      });
      await broadcasts.start();
      stops.push(() => broadcasts.stop());
      const comms = new Comms({
        store,
        cache,
        handler: services,
        logger: createLogger("comms"),
        broadcasts,
        streamingAddress,
        ...(cfg.requiredLabel ? { requiredLabel: cfg.requiredLabel } : {}),
        onIngested: (msgs, contact) => {
          for (const m of msgs) metrics.messageIngested({ ...describeMessage(m, contact.data.labels), backlogged: false });
        },
      });
      const frontend = await startFrontend({
        https: cfg.httpsConfig,
        proxyProtocol: cfg.proxyProtocol,
        comms,
        dispatcher,
        readFile: (service, name) => store.readFile(service, name),
        logger: createLogger("frontend"),
        timings: opts.streamTimings ?? DEFAULT_STREAM_TIMINGS,
        ...(opts.frontendLimits ? { limits: opts.frontendLimits } : {}),
        observer: {
          messagesSent: (contact, msgs) => {
            for (const m of msgs) metrics.messageSent(describeMessage(m, contact.data.labels));
          },
          carried: (sent) => metrics.carriedMessage(sent),
        },
        onContact: (kind, status, seconds) =>
          metrics.clientPoll({
            pollType: kind === "poll" ? "POLL" : "STREAM_START",
            httpStatusCode: status,
            cacheHit: false,
            durationSeconds: seconds,
          }),
      });
      stops.push(() => frontend.close());
      // Stopping starts here (stops run last first): no more notifications, then the drain.
      stops.push(async () => {
        await listener?.stop();
        await frontend.drain();
      });
      running.frontendAddress = frontend.address;
    }

    if (cfg.adminConfig) {
      const service = instrumentAdminService(
        new AdminService({ store, notifier, logger: createLogger("admin") }),
        metrics,
      );
      const adminTls = adminTlsFromConfig(cfg.adminConfig);
      const admin = await startAdminServer({
        listenAddress: cfg.adminConfig.listenAddress,
        ...(adminTls ? { tls: adminTls } : {}),
        service,
        logger: createLogger("admin"),
      });
      stops.push(() => admin.close());
      running.adminAddress = admin.address;
      const consoleSettings = consoleFromConfig(cfg.adminConfig);
      if (consoleSettings) {
        const web = await startConsoleServer({ ...consoleSettings, data: new ConsoleData(store), logger: createLogger("console") });
        stops.push(() => web.close());
        running.consoleAddress = web.address;
      }
    }

    if (cfg.healthCheckConfig) {
      const health = await startHealthCheck({
        listenAddress: cfg.healthCheckConfig.listenAddress || "127.0.0.1:0",
        logger: createLogger("health"),
        ready: () => store.ping(),
      });
      stops.push(() => health.close());
      running.healthAddress = health.address;
    }
    if (cfg.statsConfig?.address) {
      const server = await startMetricsServer({
        address: cfg.statsConfig.address,
        metrics,
        logger: createLogger("metrics"),
      });
      stops.push(() => server.close());
      running.metricsAddress = server.address;
    }
    if (notificationAddress) running.notificationAddress = notificationAddress;
    const heartbeat = new HeartbeatWriter({
      store,
      activity: metrics.activity,
      connectedStreams: () => dispatcher.connectedCount,
      identity: {
        ...(running.frontendAddress ? { frontend: running.frontendAddress, streamingTo: streamingAddress } : {}),
        ...(running.adminAddress ? { admin: running.adminAddress } : {}),
        ...(running.consoleAddress ? { console: running.consoleAddress } : {}),
      },
      logger: createLogger("heartbeat"),
      ...(opts.heartbeatIntervalMs !== undefined ? { intervalMs: opts.heartbeatIntervalMs } : {}),
    });
    await heartbeat.start();
    stops.push(() => heartbeat.stop());
    log.info(
      {
        frontend: running.frontendAddress,
        admin: running.adminAddress,
        console: running.consoleAddress,
        notifications: notificationAddress,
        store: store.backend,
      },
      "Fleetspeak server started.",
    );
    return running;
  } catch (e) {
    await stopAll();
    throw e;
  }
}
