// The administrative gRPC API, fleetspeak.server.Admin: how integrators such as GRR reach clients
// and inspect the server's state. Semantics follow Fleetspeak's admin.go; failures carry proper
// gRPC codes (Fleetspeak answers UNKNOWN for everything) with Fleetspeak's texts where it has one.
import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { Coalescer } from "../../common/coalescer.js";
import {
  BROADCAST_ID_BYTES,
  bytesToHex,
  CLIENT_ID_BYTES,
  MESSAGE_ID_BYTES,
  randomBroadcastId,
  randomMessageId,
} from "../../common/ids.js";
import { MAX_MESSAGE_BYTES } from "../../common/limits.js";
import type { Logger } from "../../common/log.js";
import { encodeMessage } from "../../common/message-codec.js";
import { type EmptyMessage, EmptyMessageSchema, type Message } from "../../gen/fleetspeak/common_pb.js";
import {
  type Admin,
  type BlacklistClientRequest,
  type Client,
  type CreateBroadcastRequest,
  type DeleteFileRequest,
  type DeletePendingMessagesRequest,
  type DisableBroadcastsRequest,
  type FetchClientResourceUsageRecordsRequest,
  type FetchClientResourceUsageRecordsResponse,
  FetchClientResourceUsageRecordsResponseSchema,
  type GetMessageStatusRequest,
  type GetMessageStatusResponse,
  GetMessageStatusResponseSchema,
  type GetPendingMessageCountRequest,
  type GetPendingMessageCountResponse,
  GetPendingMessageCountResponseSchema,
  type GetPendingMessagesRequest,
  type GetPendingMessagesResponse,
  GetPendingMessagesResponseSchema,
  type ListActiveBroadcastsRequest,
  type ListActiveBroadcastsResponse,
  ListActiveBroadcastsResponseSchema,
  type ListClientContactsRequest,
  type ListClientContactsResponse,
  ListClientContactsResponseSchema,
  type ListClientsRequest,
  type ListClientsResponse,
  ListClientsResponseSchema,
  type StoreFileRequest,
  type StreamClientContactsRequest,
  type StreamClientContactsResponse,
  StreamClientContactsResponseSchema,
  type StreamClientIdsRequest,
  type StreamClientIdsResponse,
  StreamClientIdsResponseSchema,
} from "../../gen/fleetspeak_server/admin_pb.js";
import type { NewMessage, NotificationAnswer, Notifier } from "../notify/notifier.js";
import { StoreUnavailableError } from "../store/errors.js";
import type { Store } from "../store/store.js";
import { retryWhileStoreUnavailable } from "../store/store-retry.js";
import { invalidArgument, toConnectError } from "./admin-errors.js";
import { type Destination, DestinationCache, notificationTarget } from "./destination-cache.js";
import { pushStream } from "./push-stream.js";

/** A notification that failed (refused, timed out): like "absent", the address may be out of date. */
const NOT_REACHED = Symbol("not reached");
/** The most a notifier may hold an InsertMessage call; after that it finishes in the background. */
const DEFAULT_NOTIFY_WAIT_MS = 1000;
/** How long InsertMessage keeps trying while the database cannot be reached. */
const DEFAULT_STORE_HOLD_MS = 10_000;
/** Go's Timestamp.CheckValid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
const MIN_TIMESTAMP_SECONDS = -62135596800n;
const MAX_TIMESTAMP_SECONDS = 253402300799n;

export interface AdminServiceOptions {
  store: Store;
  notifier: Notifier;
  logger: Logger;
  /** How long InsertMessage waits for a notification before answering anyway. */
  notifyWaitMs?: number;
  /**
   * How long InsertMessage keeps trying to store its message while the database cannot be
   * reached (a restart, a Galera fail-over), within the caller's deadline. Default 10 s.
   */
  storeHoldMs?: number;
  /**
   * Group commit of concurrent InsertMessage calls: at most this many messages per store call,
   * and this many store calls (and client lookups) at once. Default 100 and 4.
   */
  batching?: { maxBatch?: number; maxInFlight?: number };
}

type AdminImpl = ServiceImpl<typeof Admin>;

export class AdminService implements AdminImpl {
  readonly #store: Store;
  readonly #notifier: Notifier;
  readonly #log: Logger;
  readonly #notifyWaitMs: number;
  readonly #storeHoldMs: number;
  readonly #lookups: Coalescer<Uint8Array, Client | undefined>;
  readonly #destinations = new DestinationCache();
  readonly #writes: Coalescer<Message, void>;

  constructor(opts: AdminServiceOptions) {
    const store = opts.store;
    this.#store = store;
    this.#notifier = opts.notifier;
    this.#log = opts.logger;
    this.#notifyWaitMs = opts.notifyWaitMs ?? DEFAULT_NOTIFY_WAIT_MS;
    this.#storeHoldMs = opts.storeHoldMs ?? DEFAULT_STORE_HOLD_MS;
    const batching = {
      maxBatch: opts.batching?.maxBatch ?? 100,
      maxInFlight: opts.batching?.maxInFlight ?? 4,
      // One caller's bad message must not fail the others; an outage fails them all.
      isolate: (err: unknown) => !(err instanceof StoreUnavailableError),
    };
    this.#lookups = new Coalescer(async (ids) => {
      const unique = new Map(ids.map((id) => [bytesToHex(id), id]));
      const found = await store.listClients([...unique.values()]);
      const byId = new Map(found.map((c) => [bytesToHex(c.clientId), c]));
      return ids.map((id) => byId.get(bytesToHex(id)));
    }, batching);
    this.#writes = new Coalescer(async (msgs) => {
      await store.storeMessages(msgs);
      return msgs.map(() => undefined);
    }, batching);
  }

  createBroadcast(req: CreateBroadcastRequest): Promise<EmptyMessage> {
    return this.#unary("CreateBroadcast", async () => {
      const b = req.broadcast;
      if (!b) {
        throw invalidArgument("CreateBroadcastRequest.broadcast is required: there is nothing to broadcast");
      }
      if (b.groupName !== "") {
        throw new ConnectError(
          `broadcast replacement feature is not supported by the ${this.#store.backend} datastore: feature not supported` +
            " (leave group_name empty and disable the old broadcast with DisableBroadcasts)",
          Code.Unimplemented,
        );
      }
      if (b.broadcastId.length === 0) b.broadcastId = randomBroadcastId();
      else if (b.broadcastId.length !== BROADCAST_ID_BYTES) {
        throw invalidArgument(`broadcast.broadcast_id: BroadcastID must be 8 bytes, got ${b.broadcastId.length}`);
      }
      if (!b.source) throw invalidArgument("Broadcast must have Source (broadcast.source.service_name)");
      await this.#store.createBroadcast(b, req.limit);
      return create(EmptyMessageSchema);
    });
  }

  listActiveBroadcasts(req: ListActiveBroadcastsRequest): Promise<ListActiveBroadcastsResponse> {
    return this.#unary("ListActiveBroadcasts", async () => {
      const active = await this.#store.listActiveBroadcasts();
      const broadcasts = active
        .map((a) => a.broadcast)
        .filter((b) => req.serviceName === "" || b.source?.serviceName === req.serviceName);
      return create(ListActiveBroadcastsResponseSchema, { broadcasts });
    });
  }

  disableBroadcasts(req: DisableBroadcastsRequest): Promise<EmptyMessage> {
    return this.#unary("DisableBroadcasts", async () => {
      req.broadcastIds.forEach((id, i) => {
        if (id.length !== BROADCAST_ID_BYTES) {
          throw invalidArgument(`unable to parse broadcast_ids[${i}]: BroadcastID must be 8 bytes, got ${id.length}`);
        }
      });
      if (req.broadcastIds.length > 0) await this.#store.disableBroadcasts(req.broadcastIds);
      return create(EmptyMessageSchema);
    });
  }

  listClients(req: ListClientsRequest): Promise<ListClientsResponse> {
    return this.#unary("ListClients", async () => {
      checkClientIds(req.clientIds, (i) => `unable to parse id [${i}]`);
      const clients = await this.#store.listClients(req.clientIds);
      return create(ListClientsResponseSchema, { clients });
    });
  }

  streamClientIds(req: StreamClientIdsRequest, ctx: HandlerContext): AsyncIterable<StreamClientIdsResponse> {
    const store = this.#store;
    return this.#stream(
      "StreamClientIds",
      (async function* () {
        const after = req.lastContactAfter ? validTimestampMs(req.lastContactAfter, "last_contact_after") : 0;
        yield* pushStream<StreamClientIdsResponse>((push) =>
          store.streamClientIds(req.includeBlacklisted, after, (clientId) => {
            if (ctx.signal.aborted) throw ctx.signal.reason;
            return push(create(StreamClientIdsResponseSchema, { clientId }));
          }),
        );
      })(),
    );
  }

  listClientContacts(req: ListClientContactsRequest): Promise<ListClientContactsResponse> {
    return this.#unary("ListClientContacts", async () => {
      checkClientIdAt(req.clientId, "client_id");
      const contacts = await this.#store.listClientContacts(req.clientId);
      return create(ListClientContactsResponseSchema, { contacts });
    });
  }

  streamClientContacts(req: StreamClientContactsRequest): AsyncIterable<StreamClientContactsResponse> {
    const store = this.#store;
    return this.#stream(
      "StreamClientContacts",
      (async function* () {
        checkClientIdAt(req.clientId, "client_id");
        for (const contact of await store.listClientContacts(req.clientId)) {
          yield create(StreamClientContactsResponseSchema, { contact });
        }
      })(),
    );
  }

  getMessageStatus(req: GetMessageStatusRequest): Promise<GetMessageStatusResponse> {
    return this.#unary("GetMessageStatus", async () => {
      const id = req.messageId;
      if (id.length === 0) return create(GetMessageStatusResponseSchema);
      if (id.length !== MESSAGE_ID_BYTES) {
        throw invalidArgument(`message_id: MessageID must be 32 bytes, got ${id.length}`);
      }
      const status = await this.#store.getMessageStatus(id);
      if (!status) return create(GetMessageStatusResponseSchema);
      return create(GetMessageStatusResponseSchema, {
        creationTime: { seconds: status.creationTime.seconds, nanos: status.creationTime.nanos },
        result: status.result,
      });
    });
  }

  insertMessage(m: Message, ctx: HandlerContext): Promise<EmptyMessage> {
    return this.#unary("InsertMessage", async () => {
      if (!m.destination || m.destination.serviceName === "") {
        throw invalidArgument("message must have Destination (destination.service_name is empty)");
      }
      if (!m.source || m.source.serviceName === "") {
        throw invalidArgument("message must have Source (source.service_name is empty)");
      }
      if (m.messageId.length === 0) m.messageId = randomMessageId();
      else if (m.messageId.length !== MESSAGE_ID_BYTES) {
        throw invalidArgument(
          `message_id: MessageID must be 32 bytes, got ${m.messageId.length} (leave it empty to have one assigned)`,
        );
      }
      m.creationTime ??= timestampFromMs(Date.now());

      // A database that is briefly away (restarting, failing over) costs the caller a wait, not
      // an error: reading the client and storing the same message again are harmless.
      const started = performance.now();
      const hold = { keepTrying: () => !ctx.signal.aborted && performance.now() - started < this.#storeHoldMs };
      const clientId = m.destination.clientId;
      let destination: Destination | undefined;
      let encoded: Uint8Array | undefined;
      if (clientId.length > 0) {
        if (clientId.length !== CLIENT_ID_BYTES) {
          throw invalidArgument(
            `error parsing destination.client_id (${bytesToHex(clientId)}): ClientID must be 8 bytes, got ${clientId.length}`,
          );
        }
        destination = await retryWhileStoreUnavailable(() => this.#destinationOf(clientId), hold);
        if (!destination) {
          throw new ConnectError(
            `expected 1 destination client result, got 0: client ${bytesToHex(clientId)} is not known` +
              " to this server (it has never enrolled); check destination.client_id",
            Code.NotFound,
          );
        }
        encoded = encodeMessage(m);
        const size = encoded.length;
        if (size > MAX_MESSAGE_BYTES) {
          throw new ConnectError(
            `message intended for client ${bytesToHex(clientId)} is of size ${size}, which exceeds the ${MAX_MESSAGE_BYTES}-byte limit`,
            Code.ResourceExhausted,
          );
        }
      }

      await retryWhileStoreUnavailable(() => this.#writes.submit(m), hold);

      const target = destination && notificationTarget(destination, Date.now());
      if (target && !ctx.signal.aborted) await this.#notify(target, clientId, { message: m, encoded });
      return create(EmptyMessageSchema);
    });
  }

  deletePendingMessages(req: DeletePendingMessagesRequest): Promise<EmptyMessage> {
    return this.#unary("DeletePendingMessages", async () => {
      checkClientIds(req.clientIds, (i) => `Can't delete pending messages: client_ids[${i}]`);
      if (req.clientIds.length > 0) await this.#store.deletePendingMessages(req.clientIds);
      return create(EmptyMessageSchema);
    });
  }

  getPendingMessages(req: GetPendingMessagesRequest): Promise<GetPendingMessagesResponse> {
    return this.#unary("GetPendingMessages", async () => {
      checkClientIds(req.clientIds, (i) => `Can't read pending messages: client_ids[${i}]`);
      if (req.offset !== 0n && req.limit === 0n) {
        throw invalidArgument("Can't read pending messages: if offset is provided, a limit must be provided as well");
      }
      if (req.clientIds.length === 0) return create(GetPendingMessagesResponseSchema);
      const messages = await this.#store.getPendingMessages({
        clientIds: req.clientIds,
        offset: clampToSafe(req.offset),
        limit: clampToSafe(req.limit),
        wantData: req.wantData,
      });
      return create(GetPendingMessagesResponseSchema, { messages });
    });
  }

  getPendingMessageCount(req: GetPendingMessageCountRequest): Promise<GetPendingMessageCountResponse> {
    return this.#unary("GetPendingMessageCount", async () => {
      checkClientIds(req.clientIds, (i) => `Can't read pending message count: client_ids[${i}]`);
      if (req.clientIds.length === 0) return create(GetPendingMessageCountResponseSchema);
      const count = await this.#store.getPendingMessageCount(req.clientIds);
      return create(GetPendingMessageCountResponseSchema, { count });
    });
  }

  storeFile(req: StoreFileRequest): Promise<EmptyMessage> {
    return this.#unary("StoreFile", async () => {
      checkFileName(req);
      await this.#store.storeFile(req.serviceName, req.fileName, req.data);
      return create(EmptyMessageSchema);
    });
  }

  deleteFile(req: DeleteFileRequest): Promise<EmptyMessage> {
    return this.#unary("DeleteFile", async () => {
      checkFileName(req);
      await this.#store.deleteFile(req.serviceName, req.fileName);
      return create(EmptyMessageSchema);
    });
  }

  keepAlive(): EmptyMessage {
    return create(EmptyMessageSchema);
  }

  blacklistClient(req: BlacklistClientRequest): Promise<EmptyMessage> {
    return this.#unary("BlacklistClient", async () => {
      checkClientIdAt(req.clientId, "client_id");
      await this.#store.blacklistClient(req.clientId);
      // The client is told to re-key at its next contact and stops streaming under this ID; read
      // its record afresh rather than keep notifying its old frontend for another minute.
      this.#destinations.delete(bytesToHex(req.clientId));
      return create(EmptyMessageSchema);
    });
  }

  fetchClientResourceUsageRecords(
    req: FetchClientResourceUsageRecordsRequest,
  ): Promise<FetchClientResourceUsageRecordsResponse> {
    return this.#unary("FetchClientResourceUsageRecords", async () => {
      checkClientIdAt(req.clientId, "client_id");
      const start = validTimestampMs(req.startTimestamp, "start_timestamp");
      const end = validTimestampMs(req.endTimestamp, "end_timestamp");
      if (start > end) {
        throw invalidArgument("timerange is invalid: start timestamp is after end timestamp");
      }
      const records = await this.#store.fetchResourceUsageRecords(req.clientId, start, end);
      return create(FetchClientResourceUsageRecordsResponseSchema, { records });
    });
  }

  /** The client's destination, remembered or read; undefined when the client is not known. */
  async #destinationOf(clientId: Uint8Array): Promise<Destination | undefined> {
    const key = bytesToHex(clientId);
    return this.#destinations.get(key) ?? (await this.#readDestination(clientId, key));
  }

  /** Reads the client's record from the store, bypassing what is remembered, and remembers it. */
  async #readDestination(clientId: Uint8Array, key: string): Promise<Destination | undefined> {
    const client = await this.#lookups.submit(clientId);
    // An unknown client is not remembered: it may enroll at any moment.
    if (!client) return undefined;
    const destination: Destination = {
      streamingTo: client.lastContactStreamingTo,
      lastContactMs: client.lastContactTime ? timestampMs(client.lastContactTime) : 0,
    };
    this.#destinations.set(key, destination);
    return destination;
  }

  /**
   * Tells the server holding the client's stream to deliver now. Best effort, as in Fleetspeak:
   * failures are logged and never fail the RPC; the message is stored either way and goes out at
   * the client's next contact. A slow notifier holds the caller for at most notifyWaitMs, the
   * second notification of a client that moved included.
   */
  async #notify(target: string, clientId: Uint8Array, message: NewMessage): Promise<void> {
    const delivered = this.#notifyFollowingMove(target, clientId, message).then(() => true);
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      delivered,
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), this.#notifyWaitMs);
      }),
    ]);
    clearTimeout(timer);
    if (!done) {
      this.#log.warn(
        { target, client: bytesToHex(clientId), waitedMs: this.#notifyWaitMs },
        "notification still in progress; answering InsertMessage without waiting for it",
      );
    }
  }

  /**
   * Notifies `target`. When it answers that it holds no stream of the client, or cannot be reached
   * (a frontend that died: its clients reconnect elsewhere), the address was out of date: forget
   * it, read the client's record again, and notify the address recorded now, once, if it is
   * another one. Never rejects, since it may finish after InsertMessage has answered.
   */
  async #notifyFollowingMove(target: string, clientId: Uint8Array, message: NewMessage): Promise<void> {
    const answer = await this.#sendNotification(target, clientId, message);
    if (answer !== "absent" && answer !== NOT_REACHED) return;
    const key = bytesToHex(clientId);
    this.#destinations.delete(key);
    let current: Destination | undefined;
    try {
      current = await this.#readDestination(clientId, key);
    } catch (err) {
      this.#log.warn(
        { target, client: key, err: err instanceof Error ? err.message : String(err) },
        "the notified server does not hold the client's stream, and reading where the client streams now failed;" +
          " the message goes out with the client's next fetch",
      );
      return;
    }
    const movedTo = current && notificationTarget(current, Date.now());
    if (!movedTo || movedTo === target) return;
    this.#log.debug({ client: key, from: target, to: movedTo }, "client streams elsewhere now; notifying there");
    await this.#sendNotification(movedTo, clientId, message);
  }

  /** One notification, carrying the new message; a failure is logged and answers NOT_REACHED. */
  async #sendNotification(
    target: string,
    clientId: Uint8Array,
    message: NewMessage,
  ): Promise<NotificationAnswer | typeof NOT_REACHED> {
    try {
      return await this.#notifier.newMessageForClient(target, clientId, message);
    } catch (err) {
      this.#log.warn(
        { target, client: bytesToHex(clientId), err: err instanceof Error ? err.message : String(err) },
        "notifying the server holding the client's stream failed; looking up where the client streams now",
      );
      return NOT_REACHED;
    }
  }

  async #unary<T>(rpc: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      throw this.#fail(rpc, err);
    }
  }

  async *#stream<T>(rpc: string, source: AsyncIterable<T>): AsyncIterable<T> {
    try {
      yield* source;
    } catch (err) {
      throw this.#fail(rpc, err);
    }
  }

  #fail(rpc: string, err: unknown): ConnectError {
    const ce = toConnectError(err, rpc);
    if (ce.code === Code.Internal || ce.code === Code.Unavailable) {
      this.#log.error({ rpc, err: ce.cause instanceof Error ? ce.cause.message : ce.message }, `${rpc} failed`);
    } else {
      this.#log.debug({ rpc, code: Code[ce.code], err: ce.rawMessage }, `${rpc} refused`);
    }
    return ce;
  }
}

function checkClientIds(ids: Uint8Array[], where: (index: number) => string): void {
  ids.forEach((id, i) => {
    checkClientIdAt(id, where(i));
  });
}

/** Client IDs in requests must be exactly 8 bytes (Fleetspeak would read an empty one as "nil"). */
function checkClientIdAt(id: Uint8Array, where: string): void {
  if (id.length !== CLIENT_ID_BYTES) {
    throw invalidArgument(`${where}: ClientID must be 8 bytes, got ${id.length}`);
  }
}

function checkFileName(req: { serviceName: string; fileName: string }): void {
  if (req.serviceName === "" || req.fileName === "") {
    throw invalidArgument("file must have service_name and file_name");
  }
}

/** Go's timestamppb CheckValid, as Fleetspeak applies it, then milliseconds since the epoch. */
function validTimestampMs(ts: Timestamp | undefined, field: string): number {
  if (!ts) throw invalidArgument(`invalid nil Timestamp: ${field} is required`);
  if (ts.seconds < MIN_TIMESTAMP_SECONDS || ts.seconds > MAX_TIMESTAMP_SECONDS) {
    throw invalidArgument(`${field}: timestamp (${ts.seconds}s) is outside the range [0001-01-01, 10000-01-01)`);
  }
  if (ts.nanos < 0 || ts.nanos >= 1e9) {
    throw invalidArgument(`${field}: timestamp has out-of-range nanos (${ts.nanos})`);
  }
  return timestampMs(ts);
}

function clampToSafe(n: bigint): number {
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}
