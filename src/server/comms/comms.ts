// What a client contact does, independent of how it arrived (poll or stream): identify the
// client, record the contact, validate and hand over the client's messages, and pick the
// messages to send back. The frontend's HTTP handlers are thin shells around this.
import { X509Certificate } from "node:crypto";
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import {
  type ContactData,
  ContactDataSchema,
  type Message,
  MessageResultSchema,
  MessageSchema,
  type WrappedContactData,
  WrappedContactDataSchema,
} from "../../gen/fleetspeak/common_pb.js";
import { bytesToHex, clientIdFromSpki, clientMessageId, randomMessageId } from "../../common/ids.js";
import { MAX_MESSAGES_PER_CONTACT } from "../../common/limits.js";
import type { Logger } from "../../common/log.js";
import { Coalescer } from "../../common/coalescer.js";
import { StoreUnavailableError } from "../store/errors.js";
import type { CarriedLease, CarriedMessage, ClientData, Store } from "../store/store.js";
import type { ClientCache } from "./client-cache.js";
import type { StoreRetry } from "../store/store-retry.js";

/** Fleetspeak's delivery lease: an unacknowledged message is offered again after this. */
export const CLIENT_LEASE_MS = 15 * 60 * 1000;
/**
 * A new stream takes back what the client's earlier streams leased this recently (a frontend
 * killed between leasing a message and writing it leaves it leased to a dead stream), once the
 * client has had RELEASE_GRACE_MS to acknowledge what it did receive. Fleetspeak leaves such
 * messages for the whole lease.
 */
const RELEASE_RECENT_MS = 60_000;
const RELEASE_GRACE_MS = 5_000;

/** A contact that cannot go on; `status` is the HTTP status the frontend answers with. */
export class ContactError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Where messages from clients go: the service manager. */
export interface IncomingMessageHandler {
  /** With `retry`, a database step that fails because the database is unavailable is tried again as it says. */
  handleClientMessages(msgs: Message[], contactId?: string, retry?: StoreRetry): Promise<void>;
}

/** Stores, as pending messages for the client, the broadcasts it is newly eligible for. */
export interface BroadcastSource {
  deliverTo(clientId: Uint8Array, data: ClientData): Promise<void>;
}

export interface CommsOptions {
  store: Store;
  cache: ClientCache;
  handler: IncomingMessageHandler;
  logger: Logger;
  broadcasts?: BroadcastSource;
  /** Only clients presenting this label may connect (components config required_label). */
  requiredLabel?: string;
  /** Recorded as the client's last_contact_streaming_to when it streams to this server. */
  streamingAddress: string;
  leaseMs?: number;
  /** Called with every batch of valid messages received from a client (metrics). */
  onIngested?: (msgs: Message[], contact: Contact) => void;
}

/** One client contact: a poll, or one streaming connection. */
export interface Contact {
  readonly clientId: Buffer;
  readonly clientIdHex: string;
  readonly address: string;
  readonly contactId: string;
  /** Nonce sent to the client in this contact's first response. */
  readonly nonce: bigint;
  data: ClientData;
  /** Remaining messages the client accepts per service; undefined = no per-service limit. */
  tokens: Map<string, number> | undefined;
  /** Broadcasts are only considered when the client record was read from the database. */
  broadcastsPending: boolean;
  /** A blacklisted client gets one RekeyRequest per contact. */
  rekeySent: boolean;
  /** When messages that earlier streams leased moments ago fall due again (a new stream). */
  releasedDueAtMs?: number;
}

const SYSTEM = "system";

export class Comms {
  private readonly leaseMs: number;

  /** Leases of carried messages, several streams' in one transaction when they come together. */
  private readonly leases: Coalescer<CarriedMessage, CarriedLease>;

  constructor(private readonly opts: CommsOptions) {
    this.leaseMs = opts.leaseMs ?? CLIENT_LEASE_MS;
    this.leases = new Coalescer((items) => opts.store.leaseCarriedMessages(items, this.leaseMs), {
      maxBatch: 100,
      maxInFlight: 2,
      isolate: (err) => !(err instanceof StoreUnavailableError),
    });
  }

  get logger(): Logger {
    return this.opts.logger;
  }

  /** Parses a WrappedContactData and the ContactData inside it. */
  parseWrapped(bytes: Uint8Array, where: string): { wcd: WrappedContactData; cd: ContactData } {
    let wcd: WrappedContactData;
    try {
      wcd = fromBinary(WrappedContactDataSchema, bytes);
    } catch (e) {
      throw new ContactError(400, `${where}: body is not a WrappedContactData: ${(e as Error).message}`);
    }
    for (const sig of wcd.signatures) {
      for (const cert of sig.certificate) {
        try {
          new X509Certificate(cert);
        } catch {
          throw new ContactError(400, `${where}: a signature certificate cannot be parsed as X.509`);
        }
      }
    }
    let cd: ContactData;
    try {
      cd = fromBinary(ContactDataSchema, wcd.contactData);
    } catch (e) {
      throw new ContactError(400, `${where}: contact_data is not a ContactData: ${(e as Error).message}`);
    }
    if (cd.messages.length > MAX_MESSAGES_PER_CONTACT) {
      throw new ContactError(
        400,
        `${where}: ${cd.messages.length} messages in one contact, the limit is ${MAX_MESSAGES_PER_CONTACT}`,
      );
    }
    return { wcd, cd };
  }

  /**
   * Starts a contact: identifies the client by its key, creates it on first contact, records the
   * contact and processes the messages it brought. `streaming` records this server as the one
   * holding the client's stream.
   */
  async openContact(spki: Uint8Array, address: string, body: Uint8Array, streaming: boolean): Promise<Contact> {
    const clientId = clientIdFromSpki(spki);
    const clientIdHex = bytesToHex(clientId);
    const where = `client ${clientIdHex} at ${address}`;
    const { wcd, cd } = this.parseWrapped(body, where);
    const required = this.opts.requiredLabel;
    if (required && !wcd.clientLabels.includes(required)) {
      throw new ContactError(503, "not authorized");
    }

    let found = await this.opts.cache.getOrRead(clientId);
    if (!found) {
      const data: ClientData = {
        key: spki,
        blacklisted: false,
        labels: wcd.clientLabels
          .filter((l) => l.trim() !== "")
          .map((label) => ({ $typeName: "fleetspeak.Label", serviceName: "client", label })),
      };
      try {
        await this.opts.store.addClient(clientId, data);
        this.opts.logger.info({ clientId: clientIdHex, address }, "new client");
      } catch (e) {
        // Two first contacts racing (e.g. on two frontends): the other one created it.
        if (!(await this.opts.store.getClientData(clientId))) throw e;
      }
      this.opts.cache.put(clientId, data);
      found = { data, cacheHit: false };
    }

    const nonce = randomNonce();
    const contactId = await this.opts.store.recordClientContact({
      clientId,
      sentNonce: nonce,
      receivedNonce: cd.sequencingNonce,
      address,
      ...(cd.clientClock ? { clientClock: { seconds: cd.clientClock.seconds, nanos: cd.clientClock.nanos } } : {}),
      ...(streaming ? { streamingTo: this.opts.streamingAddress } : {}),
    });

    const contact: Contact = {
      clientId,
      clientIdHex,
      address,
      contactId,
      nonce,
      data: found.data,
      tokens: undefined,
      broadcastsPending: !found.cacheHit && this.opts.broadcasts !== undefined,
      rekeySent: false,
    };
    const allowed = Object.entries(cd.AllowedMessages);
    if (allowed.length > 0) contact.tokens = new Map(allowed.map(([k, v]) => [k, clampCount(v)]));
    await this.acceptMessages(contact, cd.messages);
    if (streaming) {
      const dueAtMs = Date.now() + RELEASE_GRACE_MS;
      const released = await this.opts.store.releaseRecentLeases(clientId, { leaseMs: this.leaseMs, recentMs: RELEASE_RECENT_MS, dueAtMs });
      if (released > 0) {
        contact.releasedDueAtMs = dueAtMs;
        this.opts.logger.debug({ clientId: clientIdHex, released }, "new stream: messages leased moments ago to an earlier one go out again unless acknowledged");
      }
    }
    return contact;
  }

  /**
   * Validates a client's messages and hands the valid ones to the service manager. Invalid ones
   * are dropped with a log line, as Fleetspeak does (the contact still succeeds). With `retry`,
   * storing them while the database is unavailable is tried again as it says.
   */
  async acceptMessages(contact: Contact, messages: Message[], retry?: StoreRetry): Promise<void> {
    if (messages.length === 0) return;
    const valid: Message[] = [];
    const now = timestampNow();
    for (const m of messages) {
      const problem = invalidClientMessage(m);
      if (problem) {
        this.opts.logger.warn({ clientId: contact.clientIdHex, problem }, "dropping invalid message from client");
        continue;
      }
      m.source!.clientId = contact.clientId;
      m.messageId = clientMessageId(contact.clientId, m.source!.serviceName, m.sourceMessageId);
      m.creationTime = now;
      m.isBlocklistedSource = contact.data.blacklisted;
      m.result = undefined;
      valid.push(m);
    }
    if (valid.length === 0) return;
    this.opts.onIngested?.(valid, contact);
    await this.opts.handler.handleClientMessages(valid, contact.contactId, retry);
  }

  /** Adds a streaming frame's AllowedMessages deltas; returns true if a service went from 0 to >0. */
  addTokens(contact: Contact, deltas: Record<string, bigint>): boolean {
    const entries = Object.entries(deltas);
    // Fleetspeak turns an empty delta on an unlimited table into an empty table, which then
    // blocks every service; a client that never sent limits stays unlimited here.
    if (entries.length === 0) return false;
    let woke = false;
    if (!contact.tokens) contact.tokens = new Map();
    for (const [service, delta] of entries) {
      const before = contact.tokens.get(service) ?? 0;
      const after = before + clampCount(delta);
      contact.tokens.set(service, after);
      if (before === 0 && after > 0) woke = true;
    }
    return woke;
  }

  /**
   * Leases a message that a notification carried, for sending on this contact. `leased` false:
   * it must not be sent this way, because the client is blacklisted, has broadcasts to check or
   * no allowance left for the service, the message is for the system service, or the store
   * refused the lease (claimed meanwhile, or not what was stored); fetchOutgoing sorts that out,
   * and also any other messages due (`othersDue`).
   */
  async leaseCarried(contact: Contact, m: Message): Promise<CarriedLease> {
    const refused = { leased: false, othersDue: true };
    const service = m.destination?.serviceName ?? "";
    if (service === SYSTEM || !Buffer.from(m.destination?.clientId ?? []).equals(contact.clientId)) return refused;
    const fresh = await this.opts.cache.getOrRead(contact.clientId);
    if (fresh) {
      contact.data = fresh.data;
      if (!fresh.cacheHit && this.opts.broadcasts) contact.broadcastsPending = true;
    }
    if (contact.data.blacklisted || contact.broadcastsPending) return refused;
    const tokens = contact.tokens;
    if (tokens) {
      const left = tokens.get(service) ?? 0;
      if (left <= 0) return refused;
      tokens.set(service, left - 1);
    }
    let outcome = refused;
    try {
      outcome = await this.leases.submit({ message: m, contactId: contact.contactId });
    } finally {
      if (!outcome.leased && tokens) tokens.set(service, (tokens.get(service) ?? 0) + 1);
    }
    return outcome;
  }

  /**
   * Picks the messages to send now: due messages within the client's allowance (claimed with a
   * lease, so that another server does not send them too), or a RekeyRequest for a blacklisted
   * client. `maybeMore` says a full batch came back and another fetch may find more.
   */
  async fetchOutgoing(contact: Contact): Promise<{ messages: Message[]; maybeMore: boolean }> {
    const { store } = this.opts;
    const fresh = await this.opts.cache.getOrRead(contact.clientId);
    if (fresh) {
      contact.data = fresh.data;
      if (!fresh.cacheHit && this.opts.broadcasts) contact.broadcastsPending = true;
    }
    if (contact.data.blacklisted) {
      if (contact.rekeySent) return { messages: [], maybeMore: false };
      contact.rekeySent = true;
      this.opts.logger.info({ clientId: contact.clientIdHex }, "contact from blacklisted client; sending RekeyRequest");
      const rekey = create(MessageSchema, {
        messageId: randomMessageId(),
        source: { serviceName: SYSTEM },
        destination: { clientId: contact.clientId, serviceName: SYSTEM },
        messageType: "RekeyRequest",
        creationTime: timestampNow(),
      });
      await store.storeMessages([rekey]);
      await store.linkMessagesToContact(contact.contactId, [rekey.messageId]);
      return { messages: [rekey], maybeMore: false };
    }
    if (contact.broadcastsPending && this.opts.broadcasts) {
      contact.broadcastsPending = false;
      try {
        await this.opts.broadcasts.deliverTo(contact.clientId, contact.data);
      } catch (e) {
        this.opts.logger.warn({ clientId: contact.clientIdHex, err: (e as Error).message }, "broadcast delivery failed");
      }
    }
    if (contact.tokens && ![...contact.tokens.values()].some((n) => n > 0)) {
      return { messages: [], maybeMore: false };
    }
    const messages = await store.claimClientMessages(contact.clientId, {
      limit: MAX_MESSAGES_PER_CONTACT,
      ...(contact.tokens ? { serviceLimits: contact.tokens } : {}),
      leaseMs: this.leaseMs,
      contactId: contact.contactId,
    });
    if (messages.length === 0) return { messages, maybeMore: false };
    const dies: Message[] = [];
    for (const m of messages) {
      const service = m.destination?.serviceName ?? "";
      if (service === SYSTEM && m.messageType === "Die") {
        dies.push(m);
        continue;
      }
      if (contact.tokens) contact.tokens.set(service, Math.max(0, (contact.tokens.get(service) ?? 0) - 1));
    }
    // The client cannot acknowledge a Die (it exits), so it counts as processed once sent.
    for (const d of dies) {
      await store.setMessageResult(
        contact.clientId,
        d.messageId,
        create(MessageResultSchema, { processedTime: timestampNow() }),
      );
    }
    return { messages, maybeMore: messages.length === MAX_MESSAGES_PER_CONTACT };
  }
}

function invalidClientMessage(m: Message): string | undefined {
  if (!m.destination) return "no destination";
  if (m.destination.clientId.length > 0) return "destination has a client_id (client-to-client is not allowed)";
  if (m.destination.serviceName === "") return "destination has no service_name";
  if (!m.source || m.source.serviceName === "") return "source has no service_name";
  if (m.sourceMessageId.length === 0) return "empty source_message_id";
  return undefined;
}

function clampCount(v: bigint): number {
  return v > 1_000_000n ? 1_000_000 : Number(v);
}

function randomNonce(): bigint {
  const b = Buffer.allocUnsafe(8);
  crypto.getRandomValues(b);
  return b.readBigUInt64LE(0);
}
