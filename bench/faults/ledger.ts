// The books of a fault run: every message inserted through the admin API, whether InsertMessage
// acknowledged it, when its client received it (each time), and when the server acknowledged the
// frame carrying the client's MessageAck for it. From these: messages acknowledged to the inserter
// but never delivered (lost), delivered again after their ack was stored (duplicates that the
// ack should have prevented), and the delivery delays around a fault.

interface Entry {
  /** Wall-clock ms when InsertMessage was called. */
  insertedAt: number;
  /** InsertMessage answered OK. */
  ok: boolean;
  receipts: number[];
  /** When the server acknowledged the client's frame with its MessageAck. */
  ackStoredAt?: number;
}

export interface FaultFigures {
  /** InsertMessage calls acknowledged (OK) in the window. */
  inserted: number;
  /** InsertMessage calls that failed (client-visible errors of the inserter). */
  insertFailed: number;
  /** Acknowledged to the inserter, never received by the client. */
  lost: number;
  /** Received more than once. */
  duplicates: number;
  /** Received again after the server had stored the client's ack for it. */
  deliveredAfterAck: number;
  /** The longest insert → receipt delay of the window, ms (lost messages not included). */
  worstDelayMs: number;
  /** From the fault to the insert after which every message arrived within 1 s, ms. */
  recoveryMs: number;
  /** IDs of lost messages (a few), for a closer look, with their insert time relative to the fault. */
  lostIds: string[];
}

export class DeliveryLedger {
  private readonly entries = new Map<string, Entry>();

  inserting(id: string, at: number): void {
    this.entries.set(id, { insertedAt: at, ok: false, receipts: [] });
  }

  insertOk(id: string): void {
    const e = this.entries.get(id);
    if (e) e.ok = true;
  }

  received(id: string, at: number): void {
    this.entries.get(id)?.receipts.push(at);
  }

  ackStored(id: string, at: number): void {
    const e = this.entries.get(id);
    if (e && e.ackStoredAt === undefined) e.ackStoredAt = at;
  }

  /** Acknowledged inserts not received yet. */
  get outstanding(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.ok && e.receipts.length === 0) n++;
    return n;
  }

  /** Insert → first receipt delays (ms) of the messages inserted in [from, to) and received. */
  delays(from: number, to: number): number[] {
    const out: number[] = [];
    for (const e of this.entries.values()) {
      if (e.ok && e.receipts.length > 0 && e.insertedAt >= from && e.insertedAt < to) out.push(Math.min(...e.receipts) - e.insertedAt);
    }
    return out;
  }

  /** Figures over the messages inserted in [from, to), the fault at `faultAt` (all wall-clock ms). */
  figures(from: number, to: number, faultAt: number): FaultFigures {
    const out: FaultFigures = {
      inserted: 0,
      insertFailed: 0,
      lost: 0,
      duplicates: 0,
      deliveredAfterAck: 0,
      worstDelayMs: 0,
      recoveryMs: 0,
      lostIds: [],
    };
    const window = [...this.entries].filter(([, e]) => e.insertedAt >= from && e.insertedAt < to);
    window.sort((a, b) => a[1].insertedAt - b[1].insertedAt);
    let lastSlow = Number.NEGATIVE_INFINITY;
    for (const [id, e] of window) {
      if (!e.ok) {
        out.insertFailed++;
        continue;
      }
      out.inserted++;
      if (e.receipts.length === 0) {
        out.lost++;
        if (out.lostIds.length < 5) out.lostIds.push(`${id}@${Math.round(e.insertedAt - faultAt)}ms`);
        lastSlow = e.insertedAt;
        continue;
      }
      if (e.receipts.length > 1) out.duplicates++;
      if (e.ackStoredAt !== undefined && e.receipts.some((r) => r > e.ackStoredAt!)) out.deliveredAfterAck++;
      const delay = Math.min(...e.receipts) - e.insertedAt;
      out.worstDelayMs = Math.max(out.worstDelayMs, delay);
      if (delay >= 1000) lastSlow = e.insertedAt;
    }
    out.worstDelayMs = Math.round(out.worstDelayMs);
    out.recoveryMs = lastSlow < faultAt ? 0 : Math.round(lastSlow - faultAt);
    return out;
  }
}
