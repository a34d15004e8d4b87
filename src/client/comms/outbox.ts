// Messages waiting to go to the server. Three FIFOs (HIGH, MEDIUM, LOW); the communicator always
// takes the oldest HIGH first, then MEDIUM, then LOW. Each priority admits a message only while
// its pending set (admitted, not yet acknowledged by a server) stays under 100 messages and
// 20 MiB; otherwise the sender waits — that is how a chatty daemon is slowed down. A message the
// communicator could not deliver (nack) goes to the back of its FIFO and is sent again later with
// the same source_message_id. Nothing is persisted.
import { type Message, Message_Priority } from "../../gen/fleetspeak/common_pb.js";

export const MAX_PENDING_MESSAGES = 100;
export const MAX_PENDING_BYTES = 20 * 1024 * 1024;

export class OutboxClosedError extends Error {
  constructor() {
    super("the client is shutting down; message not sent");
  }
}

export interface OutboxItem {
  message: Message;
  /** Serialized size, for the byte caps. */
  size: number;
  /** Index into the priority lanes: 0 = HIGH, 1 = MEDIUM, 2 = LOW. */
  lane: number;
  /** Called once the server has accepted the message (socket services ack their peers then). */
  onAck?: () => void;
}

interface Waiter {
  item: OutboxItem;
  resolve: () => void;
  reject: (e: Error) => void;
}

class Lane {
  readonly ready: OutboxItem[] = [];
  readyHead = 0;
  pendingCount = 0;
  pendingBytes = 0;
  readonly waiting: Waiter[] = [];

  get readyLength(): number {
    return this.ready.length - this.readyHead;
  }

  shift(): OutboxItem | undefined {
    if (this.readyHead >= this.ready.length) return undefined;
    const item = this.ready[this.readyHead]!;
    this.readyHead++;
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready.splice(0, this.readyHead);
      this.readyHead = 0;
    }
    return item;
  }

  peek(): OutboxItem | undefined {
    return this.ready[this.readyHead];
  }
}

export function laneOf(priority: Message_Priority): number {
  if (priority === Message_Priority.HIGH) return 0;
  if (priority === Message_Priority.LOW) return 2;
  return 1; // MEDIUM, and unknown values as Fleetspeak does
}

export class Outbox {
  private readonly lanes = [new Lane(), new Lane(), new Lane()];
  private readyWaiters: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly maxPendingMessages = MAX_PENDING_MESSAGES,
    private readonly maxPendingBytes = MAX_PENDING_BYTES,
  ) {}

  /**
   * Queues a message; resolves once it is admitted (its priority's pending set had room). If
   * `signal` aborts first, the message is not queued and the promise rejects with its reason.
   */
  send(message: Message, size: number, onAck?: () => void, signal?: AbortSignal): Promise<void> {
    if (this.closed) return Promise.reject(new OutboxClosedError());
    const item: OutboxItem = { message, size, lane: laneOf(message.priority), onAck };
    const lane = this.lanes[item.lane]!;
    if (lane.waiting.length === 0 && this.hasRoom(lane, size)) {
      this.admit(lane, item);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { item, resolve, reject };
      if (signal) {
        const onAbort = () => {
          const i = lane.waiting.indexOf(waiter);
          if (i >= 0) {
            lane.waiting.splice(i, 1);
            reject(signal.reason instanceof Error ? signal.reason : new Error("send aborted"));
          }
        };
        signal.addEventListener("abort", onAbort, { once: true });
        waiter.resolve = () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
      }
      lane.waiting.push(waiter);
    });
  }

  private hasRoom(lane: Lane, size: number): boolean {
    // An oversize message is admitted into an empty lane, or it could never leave.
    if (lane.pendingCount === 0) return true;
    return lane.pendingCount < this.maxPendingMessages && lane.pendingBytes + size <= this.maxPendingBytes;
  }

  private admit(lane: Lane, item: OutboxItem): void {
    lane.pendingCount++;
    lane.pendingBytes += item.size;
    lane.ready.push(item);
    this.wakeReaders();
  }

  private wakeReaders(): void {
    if (this.readyWaiters.length === 0) return;
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w();
  }

  /** Number of messages waiting to be taken by the communicator. */
  get readyCount(): number {
    return this.lanes[0]!.readyLength + this.lanes[1]!.readyLength + this.lanes[2]!.readyLength;
  }

  /** Messages admitted and not yet acknowledged, all priorities. */
  get pendingCount(): number {
    return this.lanes[0]!.pendingCount + this.lanes[1]!.pendingCount + this.lanes[2]!.pendingCount;
  }

  /** Resolves when a message is ready to be taken (at once if one is), or the outbox closes. */
  whenReady(): Promise<void> {
    if (this.readyCount > 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /**
   * Takes up to `maxCount` messages in priority order, stopping before the one that would push
   * the total past `maxBytes` (but always at least one).
   */
  take(maxCount: number, maxBytes: number): OutboxItem[] {
    const out: OutboxItem[] = [];
    let bytes = 0;
    for (const lane of this.lanes) {
      for (;;) {
        if (out.length >= maxCount) return out;
        const next = lane.peek();
        if (!next) break;
        if (out.length > 0 && bytes + next.size > maxBytes) return out;
        lane.shift();
        out.push(next);
        bytes += next.size;
      }
    }
    return out;
  }

  /** The server has the messages: release their room and tell their senders. */
  ack(items: readonly OutboxItem[]): void {
    for (const item of items) {
      const lane = this.lanes[item.lane]!;
      lane.pendingCount--;
      lane.pendingBytes -= item.size;
      if (item.onAck) {
        try {
          item.onAck();
        } catch {
          // An ack hook's failure concerns its service only.
        }
      }
      this.admitWaiting(lane);
    }
  }

  /** Delivery failed: back to the end of their queues, to be sent again. */
  nack(items: readonly OutboxItem[]): void {
    if (items.length === 0) return;
    for (const item of items) this.lanes[item.lane]!.ready.push(item);
    this.wakeReaders();
  }

  private admitWaiting(lane: Lane): void {
    while (lane.waiting.length > 0 && this.hasRoom(lane, lane.waiting[0]!.item.size)) {
      const w = lane.waiting.shift()!;
      this.admit(lane, w.item);
      w.resolve();
    }
  }

  /** Refuses new messages, fails waiting senders and drops what was queued. */
  close(): void {
    this.closed = true;
    for (const lane of this.lanes) {
      for (const w of lane.waiting.splice(0)) w.reject(new OutboxClosedError());
    }
    this.wakeReaders();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
