// Claim loops shared by the in-process and child-process claimers of mysql-concurrency.test.ts.
import type { Store } from "../../../src/server/store/store.js";

const LEASE_MS = 3_600_000;

/** Claims in small batches, client after client, until a whole pass gets nothing. */
export async function claimAllClientMessages(store: Store, clients: Uint8Array[]): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    let any = false;
    for (const c of clients) {
      const ms = await store.claimClientMessages(c, { limit: 7, leaseMs: LEASE_MS });
      for (const m of ms) got.push(Buffer.from(m.messageId).toString("hex"));
      if (ms.length > 0) any = true;
    }
    if (!any) return got;
  }
}

/**
 * Claims batches of 10 until two claims in a row get nothing. `pauseMs` between claims leaves the
 * other claimers room: on Galera one that lost a few conflicts backs off for up to a second, and a
 * winner claiming without pause could take everything meanwhile.
 */
export async function claimAllServerMessages(store: Store, pauseMs = 0): Promise<string[]> {
  const got: string[] = [];
  for (let empty = 0; empty < 2; ) {
    const ms = await store.claimServerMessages(10, () => Date.now() + LEASE_MS);
    for (const m of ms) got.push(Buffer.from(m.messageId).toString("hex"));
    empty = ms.length === 0 ? empty + 1 : 0;
    if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
  }
  return got;
}
