// The client's composition root: config files in, a running client out. Startup order follows
// Fleetspeak: state (identity) → system service → communicator → configured services → ClientInfo.
import { createLogger, type Logger } from "../common/log.js";
import { type CommsHost, type Communicator, commsTiming } from "./comms/communicator.js";
import { Outbox } from "./comms/outbox.js";
import { PollingCommunicator } from "./comms/polling.js";
import { StreamingCommunicator } from "./comms/streaming.js";
import { Transport } from "./comms/transport.js";
import { loadClientConfig, readCommunicatorConfig, readServiceConfigs } from "./config.js";
import { daemonFactory } from "./services/daemon.js";
import { ServiceManager } from "./services/manager.js";
import { noopFactory } from "./services/noop.js";
import type { ServiceFactory } from "./services/service.js";
import { socketFactory } from "./services/socket.js";
import { stdinFactory } from "./services/stdin.js";
import { REVOKED_FETCH_TIMEOUT_MS, SystemService } from "./services/system.js";
import { ClientStateStore, clientIdOfStateFile, StateError, serialKey } from "./state.js";

/** Fleetspeak's minimum time between two starts of a daemon. */
export const DEFAULT_RESPAWN_DELAY_MS = 60_000;

/** The service factories of the stock client, by the names service configs use. */
export const clientFactories: ReadonlyMap<string, ServiceFactory> = new Map<string, ServiceFactory>([
  ["Daemon", daemonFactory],
  ["NOOP", noopFactory],
  ["Socket", socketFactory],
  ["Stdin", stdinFactory],
]);

export interface ClientOptions {
  /** The main config file (text fleetspeak.client.generic.Config). */
  configFile: string;
  /** Replace an unreadable state file with a new identity instead of refusing to start. */
  resetState?: boolean;
  /** Daemons inherit the client's stdin/stdout/stderr (Fleetspeak's -std_forward). */
  stdForward?: boolean;
  /**
   * Minimum time between two starts of a daemon; default 1 min, or the environment variable
   * FLEETSPEAK_DAEMON_RESPAWN_DELAY_MS (for tests that watch a daemon crash and restart).
   */
  daemonRespawnDelayMs?: number;
  log?: Logger;
}

/** Why the client wants its process to end. */
export interface ClientExit {
  /** 7 = the server said Die; 2 = no server contact for failure_suicide_time. */
  code: number;
  reason: string;
  /** Exit at once: the client was not stopped (a forced Die). */
  force: boolean;
}

export interface RunningClient {
  /** Current ClientID, 16 hex characters (changes on rekey). */
  readonly clientId: string;
  /** Graceful stop: connections closed, daemons torn down, state written. */
  stop(): Promise<void>;
  /** Resolves when the client asks for its process to end; never rejects. */
  readonly exitRequested: Promise<ClientExit>;
}

/**
 * The ClientID this config's state file holds, read without starting anything: an operator checks
 * it before and after swapping the client binary (a Go client's state file works too).
 */
export function clientIdOfConfig(configFile: string): string {
  const config = loadClientConfig(configFile);
  if (config.stateFile === "") {
    throw new StateError(
      `${configFile}: filesystem_handler.state_file is empty, so the client keeps no identity (a new ClientID at every start)`,
    );
  }
  return clientIdOfStateFile(config.stateFile);
}

export async function startClient(options: ClientOptions): Promise<RunningClient> {
  const log = options.log ?? createLogger("client");
  const config = loadClientConfig(options.configFile);
  const state = new ClientStateStore({ stateFile: config.stateFile, resetState: options.resetState ?? false, log });
  const commsConfig = readCommunicatorConfig(config.configurationDirectory, log);
  state.write();
  state.startSync();

  let resolveExit!: (e: ClientExit) => void;
  const exitRequested = new Promise<ClientExit>((r) => {
    resolveExit = r;
  });
  let stopping: Promise<void> | undefined;

  const outbox = new Outbox();
  const transport = new Transport({
    config,
    identity: () => ({ clientId: state.clientId, key: state.key }),
    isRevoked: (serialHex) => state.isRevoked(serialKey(serialHex)),
    preferHttp2: commsConfig.preferHttp2,
    log,
  });
  const labelTexts = config.labels.map((l) => l.label);

  const envDelay = Number(process.env.FLEETSPEAK_DAEMON_RESPAWN_DELAY_MS);
  let system: SystemService | undefined;
  const manager = new ServiceManager({
    outbox,
    clientId: () => state.clientId,
    labels: () => config.labels,
    factories: clientFactories,
    factoryOptions: {
      daemonRespawnDelayMs:
        options.daemonRespawnDelayMs ?? (Number.isFinite(envDelay) && envDelay >= 0 ? envDelay : DEFAULT_RESPAWN_DELAY_MS),
      stdForward: options.stdForward ?? false,
    },
    onProcessed: (id, error) => (error === undefined ? system?.ack(id) : system?.error(id, error)),
    log,
  });

  const requestExit = (exit: ClientExit) => {
    if (exit.force) {
      resolveExit(exit);
      void stop();
    } else {
      void stop().then(() => resolveExit(exit));
    }
  };

  system = new SystemService({
    state,
    labels: config.labels,
    serviceIds: () => manager.serviceIds(),
    restartService: (name) => manager.restart(name),
    fetchRevokedCertificates: () =>
      transport.fetchFile(config.servers, "system", "RevokedCertificates", labelTexts, REVOKED_FETCH_TIMEOUT_MS),
    revokedChanged: () => transport.closeIdle(),
    die: (force) => requestExit({ code: 7, reason: "the server sent Die", force }),
    selfMonitor: { samplePeriodMs: 30_000, sampleSize: 20 },
    log: log.child({ service: "system" }),
  });
  await system.start(manager.context("system"));
  manager.installSystem(system);

  const host: CommsHost = {
    outbox,
    transport,
    servers: [...config.servers],
    labelTexts,
    clientId: () => state.clientId,
    nonce: () => state.sequencingNonce,
    setNonce: (n) => {
      state.sequencingNonce = n;
    },
    serviceCounts: () => manager.counts(),
    deliver: (messages) => manager.deliver(messages),
    onBeacon: (l) => manager.onBeacon(l),
    fatal: (code, reason) => {
      log.fatal({ code }, reason);
      requestExit({ code, reason, force: false });
    },
    timing: commsTiming(commsConfig),
    log: log.child({ comms: config.streaming ? "streaming" : "polling" }),
  };
  const communicator: Communicator = config.streaming ? new StreamingCommunicator(host) : new PollingCommunicator(host);
  communicator.start();
  void system.refreshRevokedCertificates();

  for (const file of readServiceConfigs(config.configurationDirectory, log)) {
    await manager.install(file.config, file.signature, file.path);
  }
  state.markDirty();
  state.write();
  void system.sendClientInfo();
  log.info({ clientId: state.clientIdHex, servers: config.servers, streaming: config.streaming }, "client started");

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info("client stopping");
      await communicator.stop();
      await manager.stopAll();
      outbox.close();
      transport.close();
      state.stop();
      log.info("client stopped");
    })();
    return stopping;
  };

  return {
    get clientId() {
      return state.clientIdHex;
    },
    stop,
    exitRequested,
  };
}
