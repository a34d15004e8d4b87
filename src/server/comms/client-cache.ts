// A short-lived per-process cache of client records, so that a contact does not read the
// client's key, labels and blacklist flag from the database every time. Entries live 45 s like
// Fleetspeak's; label changes and blacklisting on other servers become visible within that time,
// and local changes invalidate at once.
import { bytesToHex } from "../../common/ids.js";
import type { ClientData, Store } from "../store/store.js";

const DEFAULT_TTL_MS = 45_000;

interface Entry {
  data: ClientData;
  expiresAt: number;
}

export class ClientCache {
  private readonly entries = new Map<string, Entry>();
  private readonly ttlMs: number;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    opts: { ttlMs?: number } = {},
  ) {
    this.ttlMs = opts.ttlMs ?? DEFAULT_TTL_MS;
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(this.ttlMs, 60_000));
    this.sweepTimer.unref();
  }

  /** The client's record and whether it came from the cache; undefined for an unknown client. */
  async getOrRead(id: Uint8Array): Promise<{ data: ClientData; cacheHit: boolean } | undefined> {
    const key = bytesToHex(id);
    const e = this.entries.get(key);
    const now = Date.now();
    if (e && e.expiresAt > now) return { data: e.data, cacheHit: true };
    const data = await this.store.getClientData(id);
    if (!data) {
      this.entries.delete(key);
      return undefined;
    }
    this.entries.set(key, { data, expiresAt: now + this.ttlMs });
    return { data, cacheHit: false };
  }

  put(id: Uint8Array, data: ClientData): void {
    this.entries.set(bytesToHex(id), { data, expiresAt: Date.now() + this.ttlMs });
  }

  invalidate(id: Uint8Array): void {
    this.entries.delete(bytesToHex(id));
  }

  clear(): void {
    this.entries.clear();
  }

  close(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(k);
  }
}
