// The built-in "system" service: what clients tell the server about Fleetspeak itself —
// acknowledgements and errors for the messages they were sent, their labels, resource usage of
// their services, and services killed for misbehaving. As Fleetspeak's system_service.go.
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { type Any, anyUnpack, timestampNow } from "@bufbuild/protobuf/wkt";
import { bytesEqual, bytesToHex, CLIENT_ID_BYTES, MESSAGE_ID_BYTES } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import {
  type Label,
  type Message,
  MessageResultSchema,
} from "../../gen/fleetspeak/common_pb.js";
import { ClientInfoDataSchema, MessageAckDataSchema, MessageErrorDataSchema } from "../../gen/fleetspeak/system_pb.js";
import {
  type KillNotification,
  KillNotificationSchema,
  ResourceUsageDataSchema,
} from "../../gen/fleetspeak_monitoring/resource_pb.js";
import { StoreUnavailableError } from "../store/errors.js";
import type { MessageResultUpdate, Store } from "../store/store.js";
import { type Service, type ServiceContext, TemporaryError } from "./service.js";

export const SYSTEM_SERVICE_NAME = "system";
/** The service name of labels a client sets about itself. */
const CLIENT_LABEL_SERVICE = "client";
/** Kill notifications are spot-checked in the log at most this often. */
const KILL_LOG_INTERVAL_MS = 15 * 60 * 1000;

export interface SystemServiceHooks {
  /** A client reported that it killed one of its services (metrics). */
  onKillNotification?(clientId: Uint8Array, kn: KillNotification): void;
  /** A client acknowledged this many messages it had been sent (metrics). */
  onMessagesAcked?(count: number): void;
}

export class SystemService implements Service {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #invalidateClient: (id: Uint8Array) => void;
  readonly #hooks: SystemServiceHooks;
  #lastKillLogMs = Number.NEGATIVE_INFINITY;

  constructor(ctx: ServiceContext, hooks: SystemServiceHooks = {}) {
    this.#store = ctx.store;
    this.#log = ctx.logger;
    this.#invalidateClient = (id) => ctx.invalidateClient(id);
    this.#hooks = hooks;
  }

  async processMessage(msg: Message): Promise<void> {
    if (!msg.source) throw new Error("Source is nil");
    const cid = msg.source.clientId;
    if (cid.length !== CLIENT_ID_BYTES) {
      throw new Error(`invalid source client id[${bytesToHex(cid)}]: ClientID must be 8 bytes, got ${cid.length}`);
    }
    if (!msg.data) throw new Error("no Data present");
    try {
      switch (msg.messageType) {
        case "MessageAck":
          return await this.#messageAck(msg.messageId, cid, msg.data);
        case "MessageError":
          return await this.#messageError(cid, msg.data);
        case "ClientInfo":
          return await this.#clientInfo(cid, msg.data);
        case "ResourceUsage":
          return await this.#resourceUsage(cid, msg.data);
        case "KillNotification":
          return this.#killNotification(cid, msg.data);
        default:
          throw new Error(`unknown system message type: ${msg.messageType}`);
      }
    } catch (err) {
      // A database outage is never the client's fault: retry later instead of failing the message.
      if (err instanceof StoreUnavailableError) throw new TemporaryError(err.message, { cause: err });
      throw err;
    }
  }

  async stop(): Promise<void> {}

  async #messageAck(ackId: Uint8Array, cid: Uint8Array, data: Any): Promise<void> {
    const ack = unpack(data, MessageAckDataSchema, "MessageAckData");
    ack.messageIds.forEach((id, i) => {
      if (id.length !== MESSAGE_ID_BYTES) {
        throw new Error(`MessageAckData contains invalid message id [${i}]: MessageID must be 32 bytes, got ${id.length}`);
      }
    });
    let msgs: Message[];
    try {
      msgs = await this.#store.getMessages(ack.messageIds, false);
    } catch (err) {
      throw new TemporaryError(`unable to retrieve messages to ack: ${(err as Error).message}`, { cause: err });
    }
    // Deliberate deviation: Fleetspeak's MySQL store fails the whole lookup when one acked ID is
    // unknown (pruned, or never sent), and the ack is retried forever. Ours returns the known ones:
    // those are acked, the rest only logged.
    if (msgs.length < ack.messageIds.length) {
      const found = new Set(msgs.map((m) => bytesToHex(m.messageId)));
      const missing = ack.messageIds.map(bytesToHex).filter((h) => !found.has(h));
      this.#log.warn({ ack: bytesToHex(ackId), client: bytesToHex(cid), missing }, "client acked unknown messages");
    }
    const processed = create(MessageResultSchema, { processedTime: timestampNow() });
    const updates: MessageResultUpdate[] = [];
    for (const m of msgs) {
      if (m.result) continue;
      const dest = m.destination?.clientId ?? new Uint8Array();
      if (!bytesEqual(dest, cid)) {
        if (m.source?.serviceName === SYSTEM_SERVICE_NAME && m.messageType === "RekeyRequest") {
          // A RekeyRequest is acked under the client's new ID; its old ID was the destination.
          this.#log.info(
            { client: bytesToHex(cid), previous: bytesToHex(dest) },
            "client acked RekeyRequest sent to its previous ID - rekey complete",
          );
        } else {
          this.#log.warn(
            { ack: bytesToHex(ackId), client: bytesToHex(cid), owner: bytesToHex(dest), message: bytesToHex(m.messageId) },
            "attempt by a client to ack a message meant for another client",
          );
          continue;
        }
      }
      updates.push({ destinationClientId: dest, id: m.messageId, result: processed });
    }
    if (updates.length === 0) return;
    // One transaction for the whole ack. If it fails the messages stay pending and are offered
    // again when their delivery lease ends, as after a lost ack.
    try {
      const done = await this.#store.setMessageResults(updates);
      this.#hooks.onMessagesAcked?.(done.filter(Boolean).length);
    } catch (err) {
      this.#log.error(
        { messages: updates.map((u) => bytesToHex(u.id)), err: (err as Error).message },
        "unable to mark acked messages processed",
      );
    }
  }

  async #messageError(cid: Uint8Array, data: Any): Promise<void> {
    const me = unpack(data, MessageErrorDataSchema, "MessageErrorData");
    if (me.messageId.length !== MESSAGE_ID_BYTES) {
      throw new Error(`MessageErr Data contains bad message id: MessageID must be 32 bytes, got ${me.messageId.length}`);
    }
    const id = bytesToHex(me.messageId);
    let msgs: Message[];
    try {
      msgs = await this.#store.getMessages([me.messageId], false);
    } catch (err) {
      throw new TemporaryError(`error from GetMessages([${id}]): ${(err as Error).message}`, { cause: err });
    }
    if (msgs.length !== 1) throw new Error(`expected one result from GetMessages, got ${msgs.length} (message ${id})`);
    const dest = msgs[0]!.destination?.clientId ?? new Uint8Array();
    if (!bytesEqual(dest, cid)) {
      throw new Error(`attempt by client [${bytesToHex(cid)}] to ack a message meant for client [${bytesToHex(dest)}]`);
    }
    const failed = create(MessageResultSchema, { processedTime: timestampNow(), failed: true, failedReason: me.error });
    try {
      await this.#store.setMessageResult(dest, me.messageId, failed);
    } catch (err) {
      throw new TemporaryError(`unable to mark message [${id}] as failed: ${(err as Error).message}`, { cause: err });
    }
  }

  async #clientInfo(cid: Uint8Array, data: Any): Promise<void> {
    const info = unpack(data, ClientInfoDataSchema, "ClientInfoData");
    let cd: Awaited<ReturnType<Store["getClientData"]>>;
    try {
      cd = await this.#store.getClientData(cid);
    } catch (err) {
      throw new TemporaryError(`GetClientData(${bytesToHex(cid)}) failed: ${(err as Error).message}`, { cause: err });
    }
    if (!cd) throw new Error(`ClientInfo from unknown client ${bytesToHex(cid)}`);

    const wanted = new Set<string>();
    for (const l of info.labels) {
      if (l.serviceName !== CLIENT_LABEL_SERVICE) {
        this.#log.warn({ client: bytesToHex(cid), label: `${l.serviceName}:${l.label}` }, "attempt to set non-client label");
        continue;
      }
      wanted.add(l.label);
    }
    const present = new Set<string>();
    const change = async (what: string, op: Promise<void>, l: Label) => {
      try {
        await op;
      } catch (err) {
        throw new TemporaryError(`unable to ${what} label[${l.label}]: ${(err as Error).message}`, { cause: err });
      }
    };
    for (const l of cd.labels) {
      if (l.serviceName !== CLIENT_LABEL_SERVICE) continue;
      if (wanted.has(l.label)) present.add(l.label);
      else await change("remove", this.#store.removeClientLabel(cid, l), l);
    }
    for (const l of info.labels) {
      if (l.serviceName !== CLIENT_LABEL_SERVICE || present.has(l.label)) continue;
      present.add(l.label);
      await change("add", this.#store.addClientLabel(cid, l), l);
    }
    this.#invalidateClient(cid);
  }

  async #resourceUsage(cid: Uint8Array, data: Any): Promise<void> {
    const rud = unpack(data, ResourceUsageDataSchema, "ResourceUsageData");
    try {
      await this.#store.recordResourceUsageData(cid, rud);
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw err;
      throw new Error(`failed to write resource-usage data: ${(err as Error).message}`, { cause: err });
    }
  }

  #killNotification(cid: Uint8Array, data: Any): void {
    const kn = unpack(data, KillNotificationSchema, "KillNotification");
    const now = Date.now();
    if (now - this.#lastKillLogMs >= KILL_LOG_INTERVAL_MS) {
      this.#lastKillLogMs = now;
      this.#log.warn(
        { client: bytesToHex(cid), service: kn.service, reason: kn.reason },
        "received kill notification (logged at most once per 15 min)",
      );
    }
    this.#hooks.onKillNotification?.(cid, kn);
  }
}

function unpack<Desc extends DescMessage>(data: Any, schema: Desc, name: string): MessageShape<Desc> {
  let out: MessageShape<Desc> | undefined;
  try {
    out = anyUnpack(data, schema);
  } catch (err) {
    throw new Error(`unable to unmarshal data as ${name}: ${(err as Error).message}`);
  }
  if (!out) throw new Error(`unable to unmarshal data as ${name}: payload has type ${JSON.stringify(data.typeUrl)}`);
  return out;
}
