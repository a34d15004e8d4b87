// Notifications: a message was stored for a client, so the server holding that client's stream
// should fetch and deliver it now. Between processes this is Fleetspeak's HTTP protocol
// (POST http://<address>/client/<hex id>); inside one process it is a direct call.
//
// Our notifier may carry the stored message in the body (a serialized fleetspeak.Message): the
// frontend then leases it with one cheap statement that also checks it is stored exactly so, and
// sends it without reading it back from the database. Fleetspeak's listener ignores the body, and
// a notification without one works as always.
import type { Message } from "../../gen/fleetspeak/common_pb.js";

/**
 * What the notified server said about the client's stream: "held" (it woke the stream) or
 * "absent" (it holds no stream of that client, so the address the notifier used is out of date).
 */
export type StreamPresence = "held" | "absent";

/**
 * A notifier's answer: the StreamPresence, or nothing when the target cannot say whether it holds
 * the stream (Fleetspeak's own servers never say), which callers take as held. Void rather than
 * undefined so that a notifier that only delivers, and returns nothing, stays a valid Notifier.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: void is exactly "this notifier cannot tell".
export type NotificationAnswer = StreamPresence | void;

/** The new message, for a notification to carry; `encoded` is its serialized form when known. */
export interface NewMessage {
  message: Message;
  encoded?: Uint8Array;
}

export interface Notifier {
  /**
   * Tells the server at `target` (a client's recorded last_contact_streaming_to) that the client
   * has new messages. Best effort: failures are reported to the caller, who logs them; delivery
   * does not depend on a notification arriving. Answers whether the target holds the stream.
   */
  newMessageForClient(target: string, clientId: Uint8Array, carried?: NewMessage): Promise<NotificationAnswer>;
}

export interface NotificationListener {
  /** The address other servers should use to reach this listener (recorded per client). */
  readonly publicAddress: string;
  /**
   * onClient says whether this server holds that client's stream (at once, or once a worker
   * process answered); the sender is told. `message` is the new message when the notification
   * carried it.
   */
  start(onClient: (clientId: Uint8Array, message?: Message) => boolean | Promise<boolean>): Promise<void>;
  stop(): Promise<void>;
}

/** The address recorded for streams when notifications stay inside one process. */
export const LOCAL_NOTIFICATION_ADDRESS = "local";

/**
 * Our listener's answer header: whether the notified server holds the client's stream. An
 * extension of Fleetspeak's protocol: Go servers neither send nor read it, so it is optional both
 * ways (a 200 without it means "assume held").
 */
export const STREAM_PRESENCE_HEADER = "x-fleetspeak-stream";

/** Reads STREAM_PRESENCE_HEADER; anything but our two values is "cannot say". */
export function parseStreamPresence(value: string | string[] | undefined): StreamPresence | undefined {
  return value === "held" || value === "absent" ? value : undefined;
}

/** Content type of a notification body carrying the new message. */
export const CARRIED_MESSAGE_CONTENT_TYPE = "application/x-protobuf; messageType=fleetspeak.Message";
/** Larger messages are not carried: the frontend reads them from the database as usual. */
export const MAX_CARRIED_MESSAGE_BYTES = 64 * 1024;
