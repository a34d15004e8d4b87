// The "Fleetspeak Server" component: the client-facing listener with its three endpoints.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpsConfig } from "../../gen/fleetspeak_components/config_pb.js";
import type { Logger } from "../../common/log.js";
import type { Comms } from "../comms/comms.js";
import type { Dispatcher } from "../comms/dispatcher.js";
import type { StreamObserver, StreamTimings } from "../comms/stream-session.js";
import type { StoredFile } from "../store/store.js";
import { BufferBudget } from "../security/buffer-budget.js";
import { LogThrottle } from "../security/log-throttle.js";
import { frontendModeUsesTls, identifyClient } from "./client-identity.js";
import { type ContactHandlerDeps, handlePoll, handleStream } from "./contact-handlers.js";
import { handleFileRequest } from "./file-handler.js";
import {
  clientAddressOf,
  DEFAULT_FRONTEND_LISTENER_LIMITS,
  type FrontendListener,
  type FrontendListenerLimits,
  frontendLimitsFromConfig,
  startFrontendListener,
} from "./listener.js";

export interface FrontendOptions {
  https: HttpsConfig;
  proxyProtocol: boolean;
  comms: Comms;
  dispatcher: Dispatcher;
  readFile: (service: string, name: string) => Promise<StoredFile | undefined>;
  logger: Logger;
  timings: StreamTimings;
  limits?: Partial<FrontendListenerLimits>;
  observer?: StreamObserver;
  onContact?: ContactHandlerDeps["onContact"];
}

export interface Frontend extends FrontendListener {
  /**
   * The graceful stop's first step: no new connections, done_sending on every stream (after the
   * frames under way), and their clients' last frames answered. Resolves once every stream has
   * closed, or after the listener's closeGraceMs; close() then ends what is left.
   */
  drain(): Promise<void>;
}

export async function startFrontend(opts: FrontendOptions): Promise<Frontend> {
  const mode = opts.https.frontendConfig;
  // https_config.limits, then the caller's overrides (tests, tuning).
  const limits = { ...frontendLimitsFromConfig(opts.https.limits), ...opts.limits };
  const budget = new BufferBudget(limits.maxBufferedRequestBytes ?? DEFAULT_FRONTEND_LISTENER_LIMITS.maxBufferedRequestBytes);
  const deps: ContactHandlerDeps = {
    budget,
    ...(limits.uploadGraceMs !== undefined ? { uploadGraceMs: limits.uploadGraceMs } : {}),
    ...(limits.contactHoldMs !== undefined ? { contactHoldMs: limits.contactHoldMs } : {}),
    ...(limits.maxStreamFramesPerSecond !== undefined ? { maxStreamFramesPerSecond: limits.maxStreamFramesPerSecond } : {}),
    comms: opts.comms,
    dispatcher: opts.dispatcher,
    logger: opts.logger,
    timings: opts.timings,
    identify: (req) => identifyClient(req, mode).spki,
    addressOf: clientAddressOf,
    unavailableLog: new LogThrottle(10_000),
    ...(opts.observer ? { observer: opts.observer } : {}),
    ...(opts.onContact ? { onContact: opts.onContact } : {}),
  };
  const streaming = !opts.https.disableStreaming;
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (path === "/message") {
      void handlePoll(deps, req, res);
    } else if (path === "/streaming-message" && streaming) {
      void handleStream(deps, req, res);
    } else if (path.startsWith("/files/")) {
      void handleFileRequest(req, res, {
        readFile: opts.readFile,
        authorize: opts.https.enableFileServerAuthorization,
        frontendConfig: mode,
        logger: opts.logger,
      });
    } else {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("404 page not found\n");
    }
  };
  const tls = frontendModeUsesTls(mode) ? { cert: opts.https.certificates, key: opts.https.key } : undefined;
  const listener = await startFrontendListener({
    listenAddress: opts.https.listenAddress,
    ...(tls ? { tls } : {}),
    proxyProtocol: opts.proxyProtocol,
    handler,
    logger: opts.logger,
    limits,
  });
  return {
    ...listener,
    drain: async () => {
      listener.stopAccepting();
      const streams = opts.dispatcher.connectedCount;
      const started = Date.now();
      await opts.dispatcher.drain(limits.closeGraceMs ?? DEFAULT_FRONTEND_LISTENER_LIMITS.closeGraceMs);
      opts.logger.info(
        { streams, left: opts.dispatcher.connectedCount, ms: Date.now() - started },
        "frontend drained: every stream was told done_sending",
      );
    },
  };
}
