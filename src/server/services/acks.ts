// The short way for MessageAcks. Every message a client receives comes back acknowledged, so a
// busy fleet sends as many MessageAcks as it receives messages. Processing each like any other
// client message (look the acked messages up, mark them in a transaction, then store the ack
// itself in another) cost about ten statements per delivered message. Here the acks of all
// streams that arrive together are applied in one transaction, and an ack that was applied in
// full is not kept as a message of its own: it carries nothing but IDs, and the acked messages'
// own rows record when they were processed.
//
// An ack the short way cannot apply in full (an unknown or already processed ID, a message
// addressed to another client, such as a RekeyRequest acked under the client's new ID) goes on
// to the system service like any message, which sorts out, logs and stores it as before.
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { CLIENT_ID_BYTES, MESSAGE_ID_BYTES } from "../../common/ids.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import { MessageAckDataSchema } from "../../gen/fleetspeak/system_pb.js";
import { Coalescer } from "../../common/coalescer.js";
import { StoreUnavailableError } from "../store/errors.js";
import type { ClientAck, Store } from "../store/store.js";
import { SYSTEM_SERVICE_NAME } from "./system-service.js";

export interface AckApplierOptions {
  store: Store;
  /** Told how many messages each applied batch marked processed (metrics). */
  onMessagesAcked?(count: number): void;
  /** Acks per transaction at most, and transactions at once. */
  maxBatch?: number;
  maxInFlight?: number;
  /** How long acks wait for others to share their transaction. Default 5 ms. */
  lingerMs?: number;
}

export class AckApplier {
  readonly #writes: Coalescer<ClientAck, number>;
  readonly #onAcked: (count: number) => void;

  constructor(opts: AckApplierOptions) {
    const store = opts.store;
    this.#onAcked = opts.onMessagesAcked ?? (() => {});
    this.#writes = new Coalescer((items) => store.ackClientMessages(items, Date.now()), {
      maxBatch: opts.maxBatch ?? 200,
      maxInFlight: opts.maxInFlight ?? 2,
      // Nobody waits closely on an ack (only the client, for its frame to be acknowledged), so
      // a few milliseconds buy one transaction for many streams' acks instead of one each.
      lingerMs: opts.lingerMs ?? 5,
      // A malformed ack must not fail the others of its batch; an outage fails them all.
      isolate: (err) => !(err instanceof StoreUnavailableError),
    });
  }

  /**
   * Applies the well-formed MessageAcks among a client's messages and returns the messages that
   * still need the usual processing: everything else, and acks not applied in full. Throws when
   * the database cannot be used; then nothing of it is recorded and the client sends it again.
   */
  async applyFrom(msgs: Message[]): Promise<Message[]> {
    const rest: Message[] = [];
    const applying: Promise<void>[] = [];
    for (const m of msgs) {
      const ack = ackOf(m);
      if (!ack) {
        rest.push(m);
        continue;
      }
      applying.push(
        this.#writes.submit(ack).then((marked) => {
          if (marked > 0) this.#onAcked(marked);
          if (marked < ack.ids.length) rest.push(m);
        }),
      );
    }
    await Promise.all(applying);
    return rest;
  }
}

/** The client and acked IDs of a well-formed MessageAck for the system service; else undefined. */
export function ackOf(m: Message): ClientAck | undefined {
  if (m.destination?.serviceName !== SYSTEM_SERVICE_NAME || m.messageType !== "MessageAck" || !m.data) return undefined;
  const clientId = m.source?.clientId;
  if (clientId?.length !== CLIENT_ID_BYTES) return undefined;
  let ids: Uint8Array[];
  try {
    const data = anyUnpack(m.data, MessageAckDataSchema);
    if (!data) return undefined;
    ids = data.messageIds;
  } catch {
    return undefined;
  }
  if (ids.length === 0 || ids.some((id) => id.length !== MESSAGE_ID_BYTES)) return undefined;
  return { clientId, ids };
}
