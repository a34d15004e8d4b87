// The datastore contract. Every piece of server state lives behind this interface: the frontend,
// the admin server, the services and the pruning tool reach the database only through it, and
// `main` alone decides which backend (SQLite or MySQL/MariaDB) runs. Every backend passes the same
// conformance suite (test/server/store/conformance.ts).
//
// Times are JavaScript milliseconds since the epoch unless a name says otherwise. IDs are raw
// bytes (ClientID 8, MessageID 32, BroadcastID 8). All operations are individually atomic and safe
// to call concurrently, also from several server processes sharing one MySQL database.
import type { Label, Message, MessageResult } from "../../gen/fleetspeak/common_pb.js";
import type { ResourceUsageData } from "../../gen/fleetspeak_monitoring/resource_pb.js";
import type { Client, ClientContact } from "../../gen/fleetspeak_server/admin_pb.js";
import type { Broadcast } from "../../gen/fleetspeak_server/broadcasts_pb.js";
import type { ClientResourceUsageRecord } from "../../gen/fleetspeak_server/resource_pb.js";

/** What the frontend needs to know about a client on each contact. */
export interface ClientData {
  /** DER SubjectPublicKeyInfo of the client's key. */
  key: Uint8Array;
  labels: Label[];
  blacklisted: boolean;
}

/** One contact (a poll, or the start of a stream). */
export interface ContactRecord {
  clientId: Uint8Array;
  sentNonce: bigint;
  receivedNonce: bigint;
  /** Observed client address, "ip:port" (from the PROXY header when there is one). */
  address: string;
  clientClock?: { seconds: bigint; nanos: number };
  /**
   * Notification address of the server holding this client's stream; undefined for a poll.
   * (Fleetspeak's clients.last_contact_streaming_to.)
   */
  streamingTo?: string;
}

export interface ClaimOptions {
  /** At most this many messages. */
  limit: number;
  /**
   * Per destination service, how many more messages the client accepts (its AllowedMessages).
   * Undefined: no per-service limit. A service missing from a defined map gets nothing.
   */
  serviceLimits?: ReadonlyMap<string, number>;
  /** How long the claim holds: an unacknowledged message is due again after this. */
  leaseMs: number;
  /**
   * Links every claimed message to this contact, in the same transaction (what
   * linkMessagesToContact would do; one commit per delivery instead of two).
   */
  contactId?: string;
}

export interface PendingQuery {
  clientIds: Uint8Array[];
  offset: number;
  /** 0 = no limit. */
  limit: number;
  wantData: boolean;
}

export interface MessageStatus {
  creationTime: { seconds: bigint; nanos: number };
  /** Absent while the message is still pending. */
  result?: MessageResult;
}

export interface ActiveBroadcast {
  broadcast: Broadcast;
  sent: bigint;
  limit: bigint;
}

export interface StoredFile {
  data: Uint8Array;
  modifiedMs: number;
}

export interface MessageResultUpdate {
  /** The message's destination client (empty for a server-bound message). */
  destinationClientId: Uint8Array;
  id: Uint8Array;
  result: MessageResult;
}

/** A client's acknowledgement (MessageAck) of messages it was sent. */
export interface ClientAck {
  clientId: Uint8Array;
  ids: Uint8Array[];
}

/** A message a frontend holds already (carried by a notification) and wants to send to its client. */
export interface CarriedMessage {
  message: Message;
  /** Links the message to this contact when it is leased. */
  contactId?: string;
}

export interface CarriedLease {
  leased: boolean;
  /** The client has other messages due now. */
  othersDue: boolean;
}

export interface MessageStore {
  /**
   * Stores messages with Fleetspeak's merge rules, keyed by message_id:
   * - a message with a successful result: recorded as processed (overwriting any earlier result),
   *   its pending entry and payload removed;
   * - otherwise, a new message is inserted: pending (due now for client-bound messages, due at
   *   `serverDueMs` for server-bound ones) unless it carries a failed result;
   * - an existing pending message that now carries a failed result becomes failed;
   * - anything else leaves the stored message as it is (re-storing never resets a schedule).
   * With a contactId, each message is linked to that contact.
   * Throws InvalidArgumentError for a payload over the size limit, before touching the database.
   */
  storeMessages(msgs: Message[], opts?: { contactId?: string; serverDueMs?: number }): Promise<void>;

  /** The messages with these IDs that exist (missing IDs are left out), payload if wantData. */
  getMessages(ids: Uint8Array[], wantData: boolean): Promise<Message[]>;

  /** Creation time and result; undefined for an unknown ID. */
  getMessageStatus(id: Uint8Array): Promise<MessageStatus | undefined>;

  /**
   * Records a result and drops the pending entry (and payload). destinationClientId is the
   * message's destination client (empty for a server-bound message); a message addressed to
   * another client is left untouched and false is returned.
   */
  setMessageResult(destinationClientId: Uint8Array, id: Uint8Array, result: MessageResult): Promise<boolean>;

  /**
   * setMessageResult for several messages in one transaction (a client's MessageAck lists many);
   * returns, per item, whether its result was recorded.
   */
  setMessageResults(items: MessageResultUpdate[]): Promise<boolean[]>;

  /**
   * Applies MessageAcks of one or more clients in one transaction: each acked message that is
   * addressed to that client and has no result yet is marked processed at `processedMs`, and its
   * pending entry (and payload) goes. Returns, per item, how many messages were marked; fewer than
   * its IDs means some need a closer look (unknown, already done, or addressed to another client,
   * as a RekeyRequest acked under the client's new ID is).
   */
  ackClientMessages(items: ClientAck[], processedMs: number): Promise<number[]>;

  /**
   * Atomically claims the client-bound messages now due for one client: each claimed message's
   * retry count goes up by one and it is not due again until the lease ends. Two claimers never
   * get the same message while its lease holds.
   */
  claimClientMessages(clientId: Uint8Array, opts: ClaimOptions): Promise<Message[]>;

  /**
   * Leases messages the caller already holds, as claimClientMessages would have: each one only if
   * it is stored exactly as carried (every column and the payload), still pending and due for its
   * destination client. No payload is read back. Says, per item, whether it was leased (one that
   * was not must not be sent: it was claimed or processed meanwhile, or what was carried is not
   * what is stored) and whether other messages of that client are due now (then the caller
   * claims them as usual).
   */
  leaseCarriedMessages(items: CarriedMessage[], leaseMs: number): Promise<CarriedLease[]>;

  /**
   * A client opened a new stream: those of its messages leased less than `recentMs` ago, to an
   * earlier contact whose stream may have died with its frontend before they were written, fall
   * due again at `dueAtMs` instead of when their lease ends. A message the client did receive is
   * acknowledged before then (clients acknowledge within a second or so), so it is not sent
   * again. `leaseMs` is the lease those claims took. Returns how many fell due.
   */
  releaseRecentLeases(clientId: Uint8Array, opts: { leaseMs: number; recentMs: number; dueAtMs: number }): Promise<number>;

  /** Of these clients, the ones that have client-bound messages due now. One query, for sweeps. */
  clientsWithDueMessages(clientIds: Uint8Array[]): Promise<Uint8Array[]>;

  /**
   * Atomically claims due server-bound messages (for the service backlog): each claimed message's
   * retry count goes up and it is due again at `retryAtMs(newRetryCount)` unless a result is
   * stored first.
   */
  claimServerMessages(limit: number, retryAtMs: (retryCount: number) => number): Promise<Message[]>;

  /** Marks every pending message of these clients failed ("Removed by admin action."). */
  deletePendingMessages(clientIds: Uint8Array[]): Promise<void>;
  getPendingMessageCount(clientIds: Uint8Array[]): Promise<bigint>;
  /**
   * Pending client-bound messages, ordered by message_id, without results. An offset without a
   * limit is an InvalidArgumentError.
   */
  getPendingMessages(q: PendingQuery): Promise<Message[]>;

  /**
   * Deletes processed or failed messages created before `beforeMs`, at most `batchSize` per
   * transaction, until none are left; returns how many were deleted.
   */
  pruneMessages(beforeMs: number, batchSize: number): Promise<number>;
}

export interface ClientStore {
  getClientData(id: Uint8Array): Promise<ClientData | undefined>;
  /** Creates a client (last_contact_time = now). Adding an existing client is an InvalidArgumentError. */
  addClient(id: Uint8Array, data: ClientData): Promise<void>;
  /** Empty ids = every client. Unknown IDs are left out. Labels are always filled in. */
  listClients(ids: Uint8Array[]): Promise<Client[]>;
  /** IDs of clients last seen after `lastContactAfterMs`, blacklisted ones only if asked. */
  streamClientIds(
    includeBlacklisted: boolean,
    lastContactAfterMs: number,
    onId: (id: Uint8Array) => void | Promise<void>,
  ): Promise<void>;
  /** Adding a label the client has is a no-op; an unknown client is a NotFoundError. */
  addClientLabel(id: Uint8Array, label: Label): Promise<void>;
  removeClientLabel(id: Uint8Array, label: Label): Promise<void>;
  /** Sets the blacklisted flag; an unknown client is not an error. */
  blacklistClient(id: Uint8Array): Promise<void>;
  /**
   * Records a contact and updates the client's last-contact fields; returns the contact ID.
   * An unknown client is a NotFoundError.
   */
  recordClientContact(c: ContactRecord): Promise<string>;
  listClientContacts(id: Uint8Array): Promise<ClientContact[]>;
  /** Duplicate links are ignored; an unknown contact or message is a NotFoundError. */
  linkMessagesToContact(contactId: string, messageIds: Uint8Array[]): Promise<void>;
  /**
   * Stores one report (memory in MiB truncated, as Fleetspeak). Missing process_start_time or
   * data_timestamp is an InvalidArgumentError, an unknown client a NotFoundError.
   */
  recordResourceUsageData(id: Uint8Array, data: ResourceUsageData): Promise<void>;
  /** Records with startMs <= server time < endMs. */
  fetchResourceUsageRecords(id: Uint8Array, startMs: number, endMs: number): Promise<ClientResourceUsageRecord[]>;
}

export interface BroadcastStore {
  /** limit: 0 = disabled, 2^63-1 = unlimited, otherwise the most clients that may receive it. */
  createBroadcast(b: Broadcast, limit: bigint): Promise<void>;
  /** Sets the limit of each broadcast to 0; unknown IDs are skipped. */
  disableBroadcasts(ids: Uint8Array[]): Promise<void>;
  /** Broadcasts with sent < limit and not expired. */
  listActiveBroadcasts(): Promise<ActiveBroadcast[]>;
  /** IDs of the broadcasts this client has already received. */
  listSentBroadcasts(clientId: Uint8Array): Promise<Uint8Array[]>;
  /**
   * Atomically: if the broadcast is still active and under its limit and the client has not had
   * it, stores the message (client-bound, pending, due at once: the contact's next claim picks it
   * up), records it as sent to the client and counts it. Returns false (storing nothing) otherwise,
   * also for an unknown broadcast or client. The message must be addressed to `clientId`.
   */
  saveBroadcastMessage(msg: Message, broadcastId: Uint8Array, clientId: Uint8Array): Promise<boolean>;
}

export interface FileStore {
  storeFile(service: string, name: string, data: Uint8Array): Promise<void>;
  deleteFile(service: string, name: string): Promise<void>;
  /** Modification time, or undefined when there is no such file. */
  statFile(service: string, name: string): Promise<number | undefined>;
  readFile(service: string, name: string): Promise<StoredFile | undefined>;
}

/** How many clients there are, and how many were seen recently. */
export interface ClientCounts {
  total: number;
  /** For each time asked about, in the same order: clients whose last contact was after it. */
  seenAfter: number[];
}

export interface LabelCount {
  label: Label;
  clients: number;
}

/** Clients whose last contact was a stream held by the server at this notification address. */
export interface StreamHolderCount {
  /** Notification address (clients.last_contact_streaming_to), e.g. "10.0.0.5:8081" or "local". */
  address: string;
  clients: number;
}

/** Which clients the console lists: the most recently seen, or a search. */
export type ClientSearch =
  | { by: "recent"; limit: number }
  /** IDs starting with these hex digits (1 to 16), in ID order. */
  | { by: "idPrefix"; prefix: string; limit: number }
  /** Clients carrying this label (of any service unless serviceName is given), in ID order. */
  | { by: "label"; label: string; serviceName?: string; limit: number };

/** One client's pending messages to one of its services. */
export interface PendingByService {
  service: string;
  count: number;
  /** Creation time of the oldest, ms. */
  oldestMs: number;
  /** When the next one is due (now or in the past: it goes out on the next contact), ms. */
  nextDueMs: number;
}

/** What waits in the queues of one service name. */
export interface ServiceQueue {
  service: string;
  /** Messages from clients for this server service, due for processing now. */
  serverDueNow: number;
  /** Messages from clients for this server service waiting for a retry (the backlog). */
  serverDueLater: number;
  /** Messages for clients' services of this name that the clients have not acknowledged yet. */
  clientPending: number;
}

/** The latest heartbeat of one server process. */
export interface ServerHeartbeat {
  serverId: string;
  /** When it was written, ms (the writing server's clock). */
  timeMs: number;
  /** The process's report, JSON text (src/server/console/heartbeat.ts); stored as given. */
  report: string;
}

/**
 * What the operator console reads, and the heartbeat each server writes for it. Each query is
 * bounded (a limit, one client's rows, or one index pass); docs/console.md says what each costs.
 */
export interface ConsoleStore {
  /** Clients in total and seen after each of these times; one pass over the last-contact index. */
  countClients(seenAfterMs: number[]): Promise<ClientCounts>;
  /** Clients per label, most common first, at most `limit` labels. Reads every label row. */
  countClientsByLabel(limit: number): Promise<LabelCount[]>;
  /** Clients seen after `seenAfterMs` whose last contact was a stream, per notification address. */
  countStreamHolders(seenAfterMs: number): Promise<StreamHolderCount[]>;
  /** Clients (with labels), as listClients returns them; at most search.limit. */
  searchClients(search: ClientSearch): Promise<Client[]>;
  /** The client's latest contacts, newest first. */
  listRecentClientContacts(id: Uint8Array, limit: number): Promise<ClientContact[]>;
  /** The client's pending messages per destination service. */
  countPendingByService(clientId: Uint8Array): Promise<PendingByService[]>;
  /**
   * Failed messages exchanged in the client's latest `contacts` contacts (messages it sent that a
   * server service refused, messages to it that it reported failed), newest contact first, at
   * most `limit`, without payloads.
   */
  listRecentFailedMessages(clientId: Uint8Array, contacts: number, limit: number): Promise<Message[]>;
  /**
   * Pending messages per service name, counting at most `maxRows` pending messages (the sums
   * then add up to maxRows: a lower bound).
   */
  listServiceQueues(maxRows: number): Promise<ServiceQueue[]>;
  /** Writes this server's heartbeat (replacing its previous one). */
  recordServerHeartbeat(heartbeat: ServerHeartbeat): Promise<void>;
  /** Heartbeats written after `afterMs`, by server ID. */
  listServerHeartbeats(afterMs: number): Promise<ServerHeartbeat[]>;
  /** Deletes heartbeats written before `beforeMs`; returns how many. */
  pruneServerHeartbeats(beforeMs: number): Promise<number>;
}

export interface Store extends MessageStore, ClientStore, BroadcastStore, FileStore, ConsoleStore {
  /** "sqlite" or "mysql", for logs and metrics. */
  readonly backend: string;
  /** Cheap liveness check (health endpoint, readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
  /**
   * Tells `observer` about every transaction run again after a conflict with another one (a
   * deadlock, a lock-wait timeout, a Galera certification failure), for metrics. Backends that
   * never retry leave it out.
   */
  observeRetries?(observer: (operation: string, reason: string) => void): void;
}

/** Largest payload (Any value) accepted for storage: fits a MEDIUMBLOB and MySQL's default 16 MiB packet. */
export const MAX_STORED_PAYLOAD_BYTES = 15 * 1024 * 1024;
/** BroadcastUnlimited: 2^63-1. */
export const BROADCAST_UNLIMITED = 9223372036854775807n;
