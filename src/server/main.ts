// The composition root: the two config files in, running components out. The one place that
// knows which store, notifier and listeners are concrete.
import cluster from "node:cluster";
import type { Config as ComponentsConfig } from "../gen/fleetspeak_components/config_pb.js";
import type { ServerConfig } from "../gen/fleetspeak_server/server_pb.js";
import { createLogger, type Logger } from "../common/log.js";
import { installLeanAsyncResourceBind } from "./lean-async-bind.js";
import { startAdminServer } from "./admin/admin-server.js";
import { STREAMING_ADDRESS_ENV, WORKER_INDEX_ENV, type WorkerAddresses } from "./cluster/messages.js";
import { hasWorkerNotificationPorts, workerNotificationAddress } from "./cluster/worker-notify.js";
import { Supervisor } from "./cluster/supervisor.js";
import { reportStartFailure, WorkerLink } from "./cluster/worker-link.js";

export { WorkerStartError } from "./cluster/supervisor.js";
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
import type { Message } from "../gen/fleetspeak/common_pb.js";
import { HttpNotificationListener } from "./notify/http-listener.js";
import { HttpNotifier, LocalNotifier } from "./notify/http-notifier.js";
import { LOCAL_NOTIFICATION_ADDRESS, type Notifier } from "./notify/notifier.js";
import { Activity, addCounts } from "./observe/activity.js";
import { startHealthCheck } from "./observe/health.js";
import { type HeartbeatIdentity, HeartbeatWriter } from "./observe/heartbeat.js";
import {
  ClusterMetrics,
  describeMessage,
  instrumentAdminService,
  instrumentNotifier,
  instrumentStore,
  Metrics,
} from "./observe/metrics.js";
import { type MetricsSource, startMetricsServer } from "./observe/metrics-server.js";
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
  /**
   * Set in a worker process of a supervisor (startSupervisor): the supervisor listens for
   * notifications, serves health and metrics and writes the heartbeat; the worker serves clients
   * and the admin API, and records its streams at the supervisor's notification address.
   */
  worker?: { streamingAddress: string; index: number };
}

/** What a server (one process, or a supervisor and its workers) serves, once started. */
export interface ServerAddresses {
  metricsAddress?: string;
  frontendAddress?: string;
  adminAddress?: string;
  consoleAddress?: string;
  notificationAddress?: string;
  healthAddress?: string;
}

export interface RunningServer extends ServerAddresses {
  store: Store;
  metrics: Metrics;
  /** Connected streaming clients held by this process. */
  connectedClients(): number;
  stop(): Promise<void>;
}

/** A supervisor and its worker processes. */
export interface RunningSupervisor extends ServerAddresses {
  workers: number;
  /** Connected streaming clients held by all workers. */
  connectedClients(): number;
  stop(): Promise<void>;
}


/** Things to stop, in the reverse order of their start; errors are logged, not thrown. */
class Stops {
  readonly #steps: Array<() => Promise<void> | void> = [];
  constructor(private readonly log: Logger) {}

  push(step: () => Promise<void> | void): void {
    this.#steps.push(step);
  }

  readonly run = async (): Promise<void> => {
    for (const s of this.#steps.splice(0).reverse()) {
      try {
        await s();
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, "error while stopping");
      }
    }
  };
}

/**
 * Starts the server as its components config and the --workers flag say: in this process (one
 * worker, or a test), as a worker of a supervisor (a process forked by node:cluster), or as the
 * supervisor of `workers` worker processes.
 */
export async function startServerProcess(opts: ServerOptions & { workers: number }): Promise<{ stop(): Promise<void> }> {
  // Every call to the Processor is an HTTP/2 request, for which Node 20 pays ~9 µs building a
  // deprecated accessor (src/server/lean-async-bind.ts).
  installLeanAsyncResourceBind();
  if (cluster.isWorker) {
    return startServer({
      ...opts,
      worker: {
        streamingAddress: process.env[STREAMING_ADDRESS_ENV] ?? LOCAL_NOTIFICATION_ADDRESS,
        index: Number(process.env[WORKER_INDEX_ENV] ?? 1),
      },
    });
  }
  return opts.workers > 1 ? startSupervisor(opts) : startServer(opts);
}

/**
 * In a worker process that could not start: hands the one-line reason to the supervisor, which
 * reports it once for all workers, and says whether it did (false: print it yourself).
 */
export async function handOverStartFailure(message: string): Promise<boolean> {
  if (!cluster.isWorker) return false;
  await reportStartFailure(message);
  return true;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const log = opts.logger ?? createLogger("server");
  const cfg = opts.components;
  const stops = new Stops(log);
  try {
    const metrics = new Metrics();
    const core = await startCore(opts, metrics, stops);
    const notifications = await startNotifications(opts, core, metrics, stops);
    const services = await startServices(opts, core, metrics, stops);
    const running: RunningServer = {
      store: core.store,
      metrics,
      connectedClients: () => core.dispatcher.connectedCount,
      stop: stops.run,
    };
    if (cfg.httpsConfig) {
      running.frontendAddress = await startFrontendComponent(opts, core, notifications, services, metrics, stops);
    }
    if (cfg.adminConfig) Object.assign(running, await startAdminComponent(opts, core, notifications.notifier, metrics, stops));
    if (core.link) {
      metrics.shareWithSupervisor();
      core.link.ready({
        ...(running.frontendAddress ? { frontend: running.frontendAddress } : {}),
        ...(running.adminAddress ? { admin: running.adminAddress } : {}),
        ...(running.consoleAddress ? { console: running.consoleAddress } : {}),
      });
      log.info({ frontend: running.frontendAddress, admin: running.adminAddress, pid: process.pid }, "worker process started");
      return running;
    }
    Object.assign(running, await startObservers(opts, core.store, metrics, () => core.dispatcher.connectedCount, stops));
    await startHeartbeat(opts, core.store, metrics.activity, () => core.dispatcher.connectedCount, {
      ...(running.frontendAddress ? { frontend: running.frontendAddress, streamingTo: notifications.streamingAddress } : {}),
      ...(running.adminAddress ? { admin: running.adminAddress } : {}),
      ...(running.consoleAddress ? { console: running.consoleAddress } : {}),
    }, stops);
    if (notifications.notificationAddress) running.notificationAddress = notifications.notificationAddress;
    logStarted(log, running, core.store.backend);
    return running;
  } catch (e) {
    await stops.run();
    throw e;
  }
}

function logStarted(log: Logger, running: ServerAddresses, store: string, workers?: number): void {
  log.info(
    {
      frontend: running.frontendAddress,
      admin: running.adminAddress,
      console: running.consoleAddress,
      notifications: running.notificationAddress,
      store,
      ...(workers !== undefined ? { workers } : {}),
    },
    "Fleetspeak server started.",
  );
}

interface Core {
  store: Store;
  cache: ClientCache;
  dispatcher: Dispatcher;
  /** What closes the client listener (set once the frontend runs): a supervisor's stop asks a worker for it first. */
  stopAccepting: () => void;
  /** In a worker process: its channel to the supervisor. */
  link?: WorkerLink;
}

/** The store (instrumented), the client cache, the dispatcher, and in a worker its supervisor link. */
async function startCore(opts: ServerOptions, metrics: Metrics, stops: Stops): Promise<Core> {
  // SQLite's WAL checkpoints run in a thread of the process owning the file: this one, or the supervisor.
  const rawStore = await openStore({
    mysqlDataSourceName: opts.components.mysqlDataSourceName,
    sqlitePath: opts.sqlitePath,
    sqliteCheckpoints: opts.worker ? "elsewhere" : "thread",
    logger: createLogger("store"),
  });
  stops.push(() => rawStore.close());
  const store = instrumentStore(rawStore, metrics);
  const cache = new ClientCache(store, opts.clientCacheTtlMs !== undefined ? { ttlMs: opts.clientCacheTtlMs } : {});
  stops.push(() => cache.close());
  let link: WorkerLink | undefined;
  const dispatcher = new Dispatcher({
    store,
    logger: createLogger("dispatcher"),
    ...(opts.sweepIntervalMs !== undefined ? { sweepIntervalMs: opts.sweepIntervalMs } : {}),
    ...(opts.worker ? { onPresence: (id: Uint8Array, held: boolean) => link?.presence(id, held) } : {}),
  });
  stops.push(() => dispatcher.close());
  metrics.trackConnectedClients(() => dispatcher.connectedCount);
  if (opts.worker) {
    link = new WorkerLink({
      held: () => dispatcher.connectedCount,
      activity: metrics.activity,
      wake: (id, message, counted) => {
        const held = dispatcher.dispatch(id, message);
        if (counted && held) metrics.notificationReceived(true);
        return held;
      },
      unknownNotification: () => metrics.notificationReceived(false),
      stopAccepting: () => core.stopAccepting(),
    });
    const l = link;
    stops.push(() => l.close());
  }
  const core: Core = { store, cache, dispatcher, stopAccepting: () => {}, ...(link ? { link } : {}) };
  return core;
}

interface Notifications {
  notifier: Notifier;
  /** What this process's streams record as last_contact_streaming_to. */
  streamingAddress: string;
  /** The notification listener's bound address, when this process runs one. */
  notificationAddress?: string;
  listener?: HttpNotificationListener;
}

/**
 * How this process wakes streams: its own directly, a sibling worker's through the supervisor,
 * another server's over HTTP. A frontend with a listener is reachable by other servers at its
 * public address; without one, only this server can wake its streams ("local").
 */
async function startNotifications(opts: ServerOptions, core: Core, metrics: Metrics, stops: Stops): Promise<Notifications> {
  const cfg = opts.components;
  const { dispatcher, link } = core;
  const notificationAuth = notificationAuthFromConfig(cfg);
  let streamingAddress = opts.worker?.streamingAddress ?? LOCAL_NOTIFICATION_ADDRESS;
  // A worker holds only some of this server's streams: one it does not hold may be a sibling's.
  const wakeHere = async (id: Uint8Array, message?: Message): Promise<boolean> =>
    dispatcher.dispatch(id, message) || (link !== undefined && (await link.route(id, message)));
  // One process listens at notification_listen_address; a worker with a port of its own listens there.
  const own = opts.worker ? workerNotificationAddress(cfg, opts.worker.index) : undefined;
  let listener: HttpNotificationListener | undefined;
  if (own || (cfg.notificationListenAddress && !opts.worker)) {
    const l = new HttpNotificationListener({
      listenAddress: own?.listen ?? cfg.notificationListenAddress,
      publicAddress: own?.public ?? cfg.notificationPublicAddress,
      ...(own ? { field: `worker_notification_port (worker ${opts.worker!.index})`, exclusive: true } : {}),
      logger: createLogger("notify"),
      onReceived: (known) => metrics.notificationReceived(known),
      ...(notificationAuth ? { verifier: notificationAuth.verifier } : {}),
    });
    await l.start(link ? wakeHere : (id, message) => dispatcher.dispatch(id, message));
    stops.push(() => l.stop());
    streamingAddress = l.publicAddress;
    listener = l;
  }
  const local: Notifier = link
    ? { newMessageForClient: async (_target, id, carried) => ((await wakeHere(id, carried?.message)) ? "held" : "absent") }
    : new LocalNotifier((id, message) => dispatcher.dispatch(id, message));
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
    // A stream held by this very server is woken directly, not through an HTTP round trip.
    notifier = {
      newMessageForClient: (target, id, carried) =>
        target === self ? local.newMessageForClient(target, id, carried) : http.newMessageForClient(target, id, carried),
    };
  }
  return {
    notifier: instrumentNotifier(notifier, metrics),
    streamingAddress,
    ...(listener ? { listener, notificationAddress: listener.boundAddress } : {}),
  };
}

/** The service manager, with the services of the services config installed and started. */
async function startServices(opts: ServerOptions, core: Core, metrics: Metrics, stops: Stops): Promise<ServiceManager> {
  const { store, cache } = core;
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
  return services;
}

/** The client-facing frontend (https_config) with its broadcasts; answers its bound address. */
async function startFrontendComponent(
  opts: ServerOptions,
  core: Core,
  notifications: Notifications,
  services: ServiceManager,
  metrics: Metrics,
  stops: Stops,
): Promise<string> {
  const cfg = opts.components;
  const https = cfg.httpsConfig!;
  const { store, cache, dispatcher } = core;
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
    streamingAddress: notifications.streamingAddress,
    ...(cfg.requiredLabel ? { requiredLabel: cfg.requiredLabel } : {}),
    onIngested: (msgs, contact) => {
      for (const m of msgs) metrics.messageIngested({ ...describeMessage(m, contact.data.labels), backlogged: false });
    },
  });
  const frontend = await startFrontend({
    https,
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
  core.stopAccepting = () => frontend.stopAccepting();
  // Stopping starts here (stops run last first): no more notifications, then the drain.
  stops.push(async () => {
    await notifications.listener?.stop();
    await frontend.drain();
  });
  return frontend.address;
}

/** The admin gRPC server (admin_config) and, when configured, the operator console. */
async function startAdminComponent(
  opts: ServerOptions,
  core: Core,
  notifier: Notifier,
  metrics: Metrics,
  stops: Stops,
): Promise<Pick<ServerAddresses, "adminAddress" | "consoleAddress">> {
  const adminConfig = opts.components.adminConfig!;
  const { store } = core;
  const service = instrumentAdminService(new AdminService({ store, notifier, logger: createLogger("admin") }), metrics);
  const adminTls = adminTlsFromConfig(adminConfig);
  const admin = await startAdminServer({
    listenAddress: adminConfig.listenAddress,
    ...(adminTls ? { tls: adminTls } : {}),
    service,
    logger: createLogger("admin"),
  });
  stops.push(() => admin.close());
  const consoleSettings = consoleFromConfig(adminConfig);
  if (!consoleSettings) return { adminAddress: admin.address };
  const web = await startConsoleServer({ ...consoleSettings, data: new ConsoleData(store), logger: createLogger("console") });
  stops.push(() => web.close());
  return { adminAddress: admin.address, consoleAddress: web.address };
}

/** The health check (health_check_config) and the metrics endpoint (stats_config). */
async function startObservers(
  opts: ServerOptions,
  store: Store,
  metrics: MetricsSource,
  ready: () => unknown,
  stops: Stops,
): Promise<Pick<ServerAddresses, "healthAddress" | "metricsAddress">> {
  const cfg = opts.components;
  const out: Pick<ServerAddresses, "healthAddress" | "metricsAddress"> = {};
  if (cfg.healthCheckConfig) {
    const health = await startHealthCheck({
      listenAddress: cfg.healthCheckConfig.listenAddress || "127.0.0.1:0",
      logger: createLogger("health"),
      ready: async () => {
        await ready();
        await store.ping();
      },
    });
    stops.push(() => health.close());
    out.healthAddress = health.address;
  }
  if (cfg.statsConfig?.address) {
    const server = await startMetricsServer({ address: cfg.statsConfig.address, metrics, logger: createLogger("metrics") });
    stops.push(() => server.close());
    out.metricsAddress = server.address;
  }
  return out;
}

/** The heartbeat row the operator console reads (one per server, written by the supervisor when there are workers). */
async function startHeartbeat(
  opts: ServerOptions,
  store: Store,
  activity: Activity,
  connectedStreams: () => number,
  identity: HeartbeatIdentity,
  stops: Stops,
): Promise<void> {
  const heartbeat = new HeartbeatWriter({
    store,
    activity,
    connectedStreams,
    identity,
    logger: createLogger("heartbeat"),
    ...(opts.heartbeatIntervalMs !== undefined ? { intervalMs: opts.heartbeatIntervalMs } : {}),
  });
  await heartbeat.start();
  stops.push(() => heartbeat.stop());
}

/**
 * The supervisor of `workers` worker processes (node:cluster). It opens the store first (so that
 * schema migrations run once, before any worker), listens for notifications and routes each to
 * the worker holding the client's stream, serves the health check and the metrics endpoint for
 * the whole server (every worker's metrics summed), and writes the server's one heartbeat row.
 * The workers share the frontend, admin and console ports. docs/scaling.md says more.
 */
export async function startSupervisor(opts: ServerOptions & { workers: number }): Promise<RunningSupervisor> {
  const log = opts.logger ?? createLogger("server");
  const cfg = opts.components;
  const stops = new Stops(log);
  try {
    const store = await openStore({
      mysqlDataSourceName: cfg.mysqlDataSourceName,
      sqlitePath: opts.sqlitePath,
      sqliteCheckpoints: "thread",
      logger: createLogger("store"),
    });
    stops.push(() => store.close());
    const activity = new Activity();
    let supervisor: Supervisor | undefined;
    let listener: HttpNotificationListener | undefined;
    if (cfg.notificationListenAddress) {
      const notificationAuth = notificationAuthFromConfig(cfg);
      const l = new HttpNotificationListener({
        listenAddress: cfg.notificationListenAddress,
        publicAddress: cfg.notificationPublicAddress,
        logger: createLogger("notify"),
        onReceived: (known) => {
          if (!known) supervisor?.countUnknownNotification();
        },
        ...(notificationAuth ? { verifier: notificationAuth.verifier } : {}),
      });
      await l.start((id, message) => supervisor?.route(id, message, undefined, true) ?? false);
      stops.push(() => l.stop());
      listener = l;
    }
    const streamingAddress = listener?.publicAddress ?? LOCAL_NOTIFICATION_ADDRESS;
    const s = new Supervisor({
      workers: opts.workers,
      streamingAddress,
      logger: createLogger("supervisor"),
      onActivity: (counts) => addCounts(activity, counts),
    });
    supervisor = s;
    const addresses: WorkerAddresses = await s.start();
    // Stopping starts here: no more notifications, then every worker drains.
    stops.push(async () => {
      await listener?.stop();
      await s.stop();
    });
    const running: RunningSupervisor = {
      workers: opts.workers,
      connectedClients: () => s.streams,
      stop: stops.run,
      ...(addresses.frontend ? { frontendAddress: addresses.frontend } : {}),
      ...(addresses.admin ? { adminAddress: addresses.admin } : {}),
      ...(addresses.console ? { consoleAddress: addresses.console } : {}),
      ...(listener ? { notificationAddress: listener.boundAddress } : {}),
    };
    const workersRunning = () => {
      if (s.liveWorkers === 0) throw new Error("no worker process is running");
    };
    Object.assign(running, await startObservers(opts, store, new ClusterMetrics(), workersRunning, stops));
    const workersStreamingTo = hasWorkerNotificationPorts(cfg)
      ? Array.from({ length: opts.workers }, (_, i) => workerNotificationAddress(cfg, i + 1)!.public)
      : [];
    await startHeartbeat(opts, store, activity, () => s.streams, {
      ...(addresses.frontend ? { frontend: addresses.frontend, streamingTo: streamingAddress, workersStreamingTo } : {}),
      ...(addresses.admin ? { admin: addresses.admin } : {}),
      ...(addresses.console ? { console: addresses.console } : {}),
    }, stops);
    logStarted(log, running, store.backend, opts.workers);
    return running;
  } catch (e) {
    await stops.run();
    throw e;
  }
}
