// Notifications: a message was stored for a client, so the server holding that client's stream
// should fetch and deliver it now. Between processes this is Fleetspeak's HTTP protocol
// (POST http://<address>/client/<hex id>); inside one process it is a direct call.

export interface Notifier {
  /**
   * Tells the server at `target` (a client's recorded last_contact_streaming_to) that the client
   * has new messages. Best effort: failures are reported to the caller, who logs them; delivery
   * does not depend on a notification arriving.
   */
  newMessageForClient(target: string, clientId: Uint8Array): Promise<void>;
}

export interface NotificationListener {
  /** The address other servers should use to reach this listener (recorded per client). */
  readonly publicAddress: string;
  /** onClient says whether this process holds that client's stream (for metrics). */
  start(onClient: (clientId: Uint8Array) => boolean): Promise<void>;
  stop(): Promise<void>;
}

/** The address recorded for streams when notifications stay inside one process. */
export const LOCAL_NOTIFICATION_ADDRESS = "local";
