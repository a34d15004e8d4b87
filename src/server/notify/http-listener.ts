// The notification listener of a frontend: other servers (admin servers, mostly) POST
// /client/<16 hex> to say that the client has new messages; if this process holds that client's
// stream, the stream fetches and delivers them at once. The answer says (STREAM_PRESENCE_HEADER)
// whether it did, so that a sender holding an outdated address for the client can look again.
import { createServer, type IncomingMessage, type Server } from "node:http";
import { fromBinary } from "@bufbuild/protobuf";
import { type IdError, parseClientIdHex } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import { type Message, MessageSchema } from "../../gen/fleetspeak/common_pb.js";
import { listen } from "../../common/listen.js";
import { formatHostPort } from "../../common/net-address.js";
import type { NotificationVerifier } from "../security/notification-auth.js";
import { NOTIFICATION_AUTH_SCHEME } from "../security/notification-auth.js";
import { LogThrottle } from "../security/log-throttle.js";
import {
  CARRIED_MESSAGE_CONTENT_TYPE,
  MAX_CARRIED_MESSAGE_BYTES,
  type NotificationListener,
  STREAM_PRESENCE_HEADER,
} from "./notifier.js";

export interface HttpListenerOptions {
  listenAddress: string;
  /** Advertised to other servers; defaults to the bound address. */
  publicAddress?: string;
  /** The config field named when the address cannot be bound. Default notification_listen_address. */
  field?: string;
  /** In a cluster worker: a port of its own, bound in this process (not shared through the primary). */
  exclusive?: boolean;
  logger: Logger;
  /** Counts notifications received, for metrics. */
  onReceived?: (known: boolean) => void;
  /** With notification_shared_secret: notifications must be signed with one of the secrets. */
  verifier?: NotificationVerifier;
}

export class HttpNotificationListener implements NotificationListener {
  private server: Server | undefined;
  private bound = "";
  private readonly refusals = new LogThrottle(10_000);

  constructor(private readonly opts: HttpListenerOptions) {}

  get publicAddress(): string {
    return this.opts.publicAddress || this.bound;
  }

  /** The address actually bound (useful with port 0). */
  get boundAddress(): string {
    return this.bound;
  }

  async start(onClient: (clientId: Uint8Array, message?: Message) => boolean | Promise<boolean>): Promise<void> {
    const server = createServer((req, res) => {
      const reply = (status: number, text: string, headers: Record<string, string> = {}) => {
        res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
        res.end(text ? `${text}\n` : "");
      };
      const verifier = this.opts.verifier;
      if (verifier) {
        const check = verifier.verify(req.method ?? "", req.url ?? "", req.headers.authorization);
        if (!check.ok) {
          const peer = req.socket.remoteAddress;
          this.refusals.run((suppressed) =>
            this.opts.logger.warn(
              { peer, suppressed },
              `notification from ${peer} refused: ${check.reason}`,
            ),
          );
          res.writeHead(401, { "content-type": "text/plain; charset=utf-8", "www-authenticate": NOTIFICATION_AUTH_SCHEME });
          res.end(`${check.reason}\n`);
          return;
        }
      }
      const path = (req.url ?? "").split("?")[0]!;
      const slash = path.lastIndexOf("/");
      if (path.slice(0, slash + 1) !== "/client/") return reply(404, "not found");
      const idText = path.slice(slash + 1);
      let id: Buffer;
      try {
        id = parseClientIdHex(idText);
      } catch (e) {
        return reply(400, `Failed to parse client id [${idText}]: ${(e as IdError).message}`);
      }
      if (id.length === 0) return reply(400, "Client id is required.");
      if (req.method !== "POST") return reply(400, `Unexpected method: ${req.method}`);
      const answer = (message?: Message) => {
        const done = (known: boolean) => {
          this.opts.onReceived?.(known);
          reply(200, "", { [STREAM_PRESENCE_HEADER]: known ? "held" : "absent" });
        };
        const known = onClient(id, message);
        if (typeof known === "boolean") done(known);
        else known.then(done, () => done(false));
      };
      const length = Number(req.headers["content-length"] ?? 0);
      if (req.headers["content-type"] !== CARRIED_MESSAGE_CONTENT_TYPE || !(length > 0)) {
        req.resume();
        return answer();
      }
      if (length > MAX_CARRIED_MESSAGE_BYTES) {
        return reply(413, `a carried message is at most ${MAX_CARRIED_MESSAGE_BYTES} bytes; send larger ones without a body`);
      }
      readBody(req, length).then(
        (body) => answer(this.carried(body, id, req.socket.remoteAddress)),
        () => res.destroy(),
      );
    });
    server.keepAliveTimeout = 30_000;
    const a = await listen(server, this.opts.listenAddress, this.opts.field ?? "notification_listen_address", this.opts.exclusive);
    this.bound = formatHostPort(a.address, a.port);
    this.server = server;
    this.opts.logger.info(
      { listen: this.bound, advertised: this.publicAddress, authenticated: this.opts.verifier !== undefined },
      "notification listener started",
    );
  }

  /**
   * The message a notification carried, or undefined (the notification still counts) when it is
   * not a message for that client. Whether it is what was stored is checked when it is leased.
   */
  private carried(body: Buffer, id: Buffer, peer: string | undefined): Message | undefined {
    let m: Message;
    try {
      m = fromBinary(MessageSchema, body);
    } catch (e) {
      this.refusals.run((suppressed) =>
        this.opts.logger.warn({ peer, suppressed, err: (e as Error).message }, "notification body is not a fleetspeak.Message; ignored"),
      );
      return undefined;
    }
    return m.destination && Buffer.from(m.destination.clientId).equals(id) ? m : undefined;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** Reads a request body of a known, bounded length. */
function readBody(req: IncomingMessage, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    req.on("data", (c: Buffer) => {
      got += c.length;
      if (got > length) req.destroy(new Error("body longer than its content-length"));
      else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks, got)));
    req.on("error", reject);
  });
}
