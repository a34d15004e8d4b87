// The notifier of an admin server: POST http://<frontend>/client/<hex id>, as Fleetspeak does,
// but with a short timeout (Fleetspeak's has none and can hold an InsertMessage for as long as the
// caller's deadline) and pooled keep-alive connections (one notification per inserted message).
// Our listeners also say whether they held the client's stream; that answer is passed on.
import { Agent, request } from "node:http";
import { clientIdToHex } from "../../common/ids.js";
import { encodeMessage } from "../../common/message-codec.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { NotificationSigner } from "../security/notification-auth.js";
import {
  CARRIED_MESSAGE_CONTENT_TYPE,
  LOCAL_NOTIFICATION_ADDRESS,
  MAX_CARRIED_MESSAGE_BYTES,
  type NewMessage,
  type NotificationAnswer,
  type Notifier,
  parseStreamPresence,
  STREAM_PRESENCE_HEADER,
  type StreamPresence,
} from "./notifier.js";

export interface HttpNotifierOptions {
  timeoutMs?: number;
  /** Used for the literal address "local" (a stream held by this very process). */
  local?: Notifier;
  /** With notification_shared_secret: signs every notification. */
  signer?: NotificationSigner;
  /** notification_without_messages: send only the client ID, never the new message. */
  withoutMessages?: boolean;
}

export class HttpNotifier implements Notifier {
  // Every connection opened is kept: with fewer kept than may be open, a burst of notifications
  // (a busy admin server) closes and reopens connections for each one. Past 32 at once to one
  // frontend, notifications wait for a connection rather than open more.
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 32 });
  private readonly timeoutMs: number;

  constructor(private readonly opts: HttpNotifierOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 2_000;
  }

  newMessageForClient(target: string, clientId: Uint8Array, carried?: NewMessage): Promise<NotificationAnswer> {
    if (target === LOCAL_NOTIFICATION_ADDRESS) {
      return this.opts.local ? this.opts.local.newMessageForClient(target, clientId, carried) : Promise.resolve();
    }
    const path = `/client/${clientIdToHex(clientId)}`;
    const body =
      carried && !this.opts.withoutMessages ? (carried.encoded ?? encodeMessage(carried.message)) : undefined;
    const bytes = body !== undefined && body.length <= MAX_CARRIED_MESSAGE_BYTES ? body : undefined;
    const headers: Record<string, string | number> = { "content-length": bytes?.length ?? 0 };
    if (bytes) headers["content-type"] = CARRIED_MESSAGE_CONTENT_TYPE;
    if (this.opts.signer) headers.authorization = this.opts.signer.authorization("POST", path);
    return new Promise((resolve, reject) => {
      const req = request(
        `http://${target}${path}`,
        { method: "POST", agent: this.agent, timeout: this.timeoutMs, headers },
        (res) => {
          res.resume();
          res.on("end", () => {
            if (res.statusCode === 200) resolve(parseStreamPresence(res.headers[STREAM_PRESENCE_HEADER]));
            else reject(new Error(`notification to ${target} answered HTTP ${res.statusCode}`));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`notification to ${target} timed out after ${this.timeoutMs} ms`)));
      req.on("error", (e) => reject(new Error(`notification to ${target} failed: ${e.message}`)));
      req.end(bytes);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Notifications inside one process: straight to the dispatcher, which says if it held the stream. */
export class LocalNotifier implements Notifier {
  constructor(private readonly dispatch: (clientId: Uint8Array, message?: Message) => boolean) {}

  async newMessageForClient(_target: string, clientId: Uint8Array, carried?: NewMessage): Promise<StreamPresence> {
    return this.dispatch(clientId, carried?.message) ? "held" : "absent";
  }
}
