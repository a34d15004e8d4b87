// Broadcasts: messages for every client that carries some labels, up to a limit. Each server
// keeps the active broadcasts in memory, refreshed every broadcast_poll_time; a client is offered
// the ones it has not had when its record is read from the database (as Fleetspeak does, so that
// a busy client is not checked on every contact). The limit is enforced by the store with an
// atomic conditional count, instead of Fleetspeak's per-server allocations.
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { MessageSchema } from "../../gen/fleetspeak/common_pb.js";
import { bytesToHex, randomMessageId } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import type { ActiveBroadcast, ClientData, Store } from "../store/store.js";
import type { BroadcastSource } from "./comms.js";

export interface BroadcastManagerOptions {
  store: Store;
  logger: Logger;
  /** Fleetspeak's broadcast_poll_time; default 60 s. */
  pollMs?: number;
  /** Called when new broadcasts appear, so connected clients get them without waiting. */
  onNewBroadcasts?: () => void;
}

export class BroadcastManager implements BroadcastSource {
  private active: ActiveBroadcast[] = [];
  private timer: NodeJS.Timeout | undefined;
  private failing = false;

  constructor(private readonly opts: BroadcastManagerOptions) {}

  async start(): Promise<void> {
    await this.refresh();
    const poll = this.opts.pollMs ?? 60_000;
    const schedule = () => {
      // Spread refreshes of many servers: [poll, 2*poll).
      this.timer = setTimeout(async () => {
        await this.refresh();
        schedule();
      }, poll * (1 + Math.random()));
      this.timer.unref();
    };
    schedule();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  async refresh(): Promise<void> {
    try {
      const before = new Set(this.active.map((a) => bytesToHex(a.broadcast.broadcastId)));
      this.active = await this.opts.store.listActiveBroadcasts();
      this.failing = false;
      if (this.active.some((a) => !before.has(bytesToHex(a.broadcast.broadcastId)))) this.opts.onNewBroadcasts?.();
    } catch (e) {
      if (!this.failing) this.opts.logger.warn({ err: (e as Error).message }, "cannot refresh broadcasts; will retry");
      this.failing = true;
    }
  }

  async deliverTo(clientId: Uint8Array, data: ClientData): Promise<void> {
    if (this.active.length === 0) return;
    const now = Date.now();
    const eligible = this.active.filter((a) => {
      const exp = a.broadcast.expirationTime;
      if (exp && Number(exp.seconds) * 1000 + exp.nanos / 1e6 <= now) return false;
      return a.broadcast.requiredLabels.every((r) =>
        data.labels.some((l) => l.serviceName === r.serviceName && l.label === r.label),
      );
    });
    if (eligible.length === 0) return;
    const sent = new Set((await this.opts.store.listSentBroadcasts(clientId)).map(bytesToHex));
    for (const a of eligible) {
      const b = a.broadcast;
      if (sent.has(bytesToHex(b.broadcastId))) continue;
      const msg = create(MessageSchema, {
        messageId: randomMessageId(),
        source: b.source,
        destination: { clientId, serviceName: b.destination?.serviceName || b.source?.serviceName || "" },
        messageType: b.messageType,
        creationTime: timestampNow(),
        ...(b.data ? { data: b.data } : {}),
      });
      await this.opts.store.saveBroadcastMessage(msg, b.broadcastId, clientId);
    }
  }
}
