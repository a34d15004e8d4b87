// The operator console's queries (ConsoleStore), written once for both backends: each is plain SQL
// that SQLite and MySQL/MariaDB read alike, with `?` parameters and the row mapping. Every one is
// bounded, so that a console refresh on a large fleet costs the hot path next to nothing:
//   - one client's rows through an index on client_id (contacts, pending messages, failed ones);
//   - a LIMIT on an index order (recent clients, ID prefix), or on the rows read (queues);
//   - one pass over the narrow last-contact index (client counts).
// The exceptions read a whole table, and the console caches their answers (docs/console.md):
// clients per label and label search (client_labels has no index by label) and stream holders
// (a range of the last-contact index plus each row).
import type { Client, ClientContact } from "../../gen/fleetspeak_server/admin_pb.js";
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import {
  buf,
  checkClientId,
  type ContactDbRow,
  contactFromRow,
  type DbInt,
  labelFromRow,
  type MessageDbRow,
  messageColumns,
  messageFromRow,
  msToNs,
  msToUs,
  nsToMs,
  num,
} from "./rows.js";
import { InvalidArgumentError } from "./errors.js";
import type {
  ClientCounts,
  ClientSearch,
  LabelCount,
  PendingByService,
  ServerHeartbeat,
  ServiceQueue,
  StreamHolderCount,
} from "./store.js";

/** A statement and its parameters. */
export interface Query {
  sql: string;
  params: Array<Buffer | number | bigint | string>;
}

/** Most rows any console query returns. */
export const MAX_CONSOLE_ROWS = 1000;

function limit(n: number, what: string): number {
  const v = Math.floor(n);
  if (!(v >= 1 && v <= MAX_CONSOLE_ROWS)) {
    throw new InvalidArgumentError(`${what} must be between 1 and ${MAX_CONSOLE_ROWS}, got ${n}`);
  }
  return v;
}

// ---- clients ----

/**
 * Client counts over `source` (the clients table, or one keyset page of it); `last` is the page's
 * last client ID.
 */
export function countClientsQuery(seenAfterMs: number[], source = "clients"): Query {
  const sums = seenAfterMs.map((_, i) => `, SUM(CASE WHEN last_contact_time > ? THEN 1 ELSE 0 END) AS s${i}`).join("");
  return { sql: `SELECT COUNT(*) AS total${sums}, MAX(client_id) AS last FROM ${source}`, params: seenAfterMs.map(msToNs) };
}

export function clientCountsFromRow(row: Record<string, DbInt | Uint8Array | null>, n: number): ClientCounts {
  const seenAfter: number[] = [];
  // SUM over no rows is NULL.
  for (let i = 0; i < n; i++) seenAfter.push(num((row[`s${i}`] as DbInt | null) ?? 0));
  return { total: num((row.total as DbInt | null) ?? 0), seenAfter };
}

export function labelCountsQuery(max: number): Query {
  return {
    sql: `SELECT service_name, label, COUNT(*) AS n FROM client_labels GROUP BY service_name, label
          ORDER BY n DESC, service_name, label LIMIT ${limit(max, "label count limit")}`,
    params: [],
  };
}

/** The most common labels first (then by service and label), as labelCountsQuery orders them. */
export function topLabels(counts: LabelCount[], max: number): LabelCount[] {
  const key = (c: LabelCount) => `${c.label.serviceName}\u0000${c.label.label}`;
  return counts
    .sort((a, b) => b.clients - a.clients || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
    .slice(0, limit(max, "label count limit"));
}

export function labelCountFromRow(r: { service_name: string; label: string; n: DbInt }): LabelCount {
  return { label: labelFromRow(r), clients: num(r.n) };
}

export function streamHoldersQuery(seenAfterMs: number): Query {
  return {
    sql: `SELECT last_contact_streaming_to AS address, COUNT(*) AS n FROM clients
          WHERE last_contact_time > ? AND last_contact_streaming_to IS NOT NULL AND last_contact_streaming_to <> ''
          GROUP BY last_contact_streaming_to ORDER BY last_contact_streaming_to`,
    params: [msToNs(seenAfterMs)],
  };
}

export function streamHolderFromRow(r: { address: string; n: DbInt }): StreamHolderCount {
  return { address: r.address, clients: num(r.n) };
}

/** Hex digits → the first and last 8-byte client IDs that start with them. */
function idPrefixRange(prefix: string): [Buffer, Buffer] {
  if (!/^[0-9a-fA-F]{1,16}$/.test(prefix)) {
    throw new InvalidArgumentError(`client ID prefix ${JSON.stringify(prefix)}: give 1 to 16 hex digits`);
  }
  return [Buffer.from(prefix.padEnd(16, "0"), "hex"), Buffer.from(prefix.padEnd(16, "f"), "hex")];
}

/** The IDs a search finds, in the order the console shows them; the backend then reads those clients. */
export function searchClientsQuery(s: ClientSearch): Query {
  const n = limit(s.limit, "client search limit");
  switch (s.by) {
    case "recent":
      return { sql: `SELECT client_id FROM clients ORDER BY last_contact_time DESC LIMIT ${n}`, params: [] };
    case "idPrefix": {
      const [lo, hi] = idPrefixRange(s.prefix);
      return {
        sql: `SELECT client_id FROM clients WHERE client_id BETWEEN ? AND ? ORDER BY client_id LIMIT ${n}`,
        params: [lo, hi],
      };
    }
    case "label":
      return s.serviceName === undefined
        ? {
            sql: `SELECT DISTINCT client_id FROM client_labels WHERE label = ? ORDER BY client_id LIMIT ${n}`,
            params: [s.label],
          }
        : {
            sql: `SELECT client_id FROM client_labels WHERE service_name = ? AND label = ? ORDER BY client_id LIMIT ${n}`,
            params: [s.serviceName, s.label],
          };
  }
}

/** listClients' answer in the order of the IDs the search found. */
export function inSearchOrder(ids: Uint8Array[], clients: Client[]): Client[] {
  const byId = new Map(clients.map((c) => [buf(c.clientId).toString("hex"), c]));
  const out: Client[] = [];
  for (const id of ids) {
    const c = byId.get(buf(id).toString("hex"));
    if (c) out.push(c);
  }
  return out;
}

export function recentContactsQuery(clientId: Uint8Array, max: number): Query {
  return {
    sql: `SELECT time, sent_nonce, received_nonce, address FROM client_contacts WHERE client_id = ?
          ORDER BY client_contact_id DESC LIMIT ${limit(max, "contact limit")}`,
    params: [buf(clientId)],
  };
}

// ---- one client's messages ----

export function pendingByServiceQuery(clientId: Uint8Array): Query {
  return {
    sql: `SELECT p.destination_service_name AS service, COUNT(*) AS n, MIN(m.creation_time_seconds) AS oldest_s,
            MIN(p.scheduled_time) AS next_due_us
          FROM pending_messages p JOIN messages m ON m.message_id = p.message_id
          WHERE p.destination_client_id = ? GROUP BY p.destination_service_name ORDER BY p.destination_service_name`,
    params: [buf(clientId)],
  };
}

export function pendingByServiceFromRow(r: { service: string; n: DbInt; oldest_s: DbInt; next_due_us: DbInt }): PendingByService {
  return {
    service: r.service,
    count: num(r.n),
    oldestMs: num(r.oldest_s) * 1000,
    nextDueMs: Math.floor(num(r.next_due_us) / 1000),
  };
}

export function recentFailedMessagesQuery(clientId: Uint8Array, contacts: number, max: number): Query {
  return {
    sql: `SELECT ${messageColumns("m")}, NULL AS data_type_url, NULL AS data_value
          FROM (SELECT client_contact_id FROM client_contacts WHERE client_id = ?
                ORDER BY client_contact_id DESC LIMIT ${limit(contacts, "contact limit")}) c
          JOIN client_contact_messages l ON l.client_contact_id = c.client_contact_id
          JOIN messages m ON m.message_id = l.message_id
          WHERE m.failed = 1
          ORDER BY c.client_contact_id DESC, m.processed_time_seconds DESC, m.message_id
          LIMIT ${limit(max, "failed message limit")}`,
    params: [buf(clientId)],
  };
}

// ---- queues ----

/** The pending-message columns the queue counts read. */
export const QUEUE_COLUMNS = "message_id, destination_service_name, for_server, scheduled_time";

export function checkQueueRows(maxRows: number): number {
  const rows = Math.floor(maxRows);
  if (!(rows >= 1)) throw new InvalidArgumentError(`queue row limit must be positive, got ${maxRows}`);
  return rows;
}

/**
 * Pending messages per service and direction over `source`: the first maxRows pending messages,
 * or one keyset page of them; `last` is the greatest message ID counted in each group.
 */
export function serviceQueuesQuery(nowMs: number, source: Query): Query {
  return {
    sql: `SELECT destination_service_name AS service, for_server, COUNT(*) AS n,
            SUM(CASE WHEN scheduled_time > ? THEN 1 ELSE 0 END) AS later, MAX(message_id) AS last
          FROM ${source.sql} p
          GROUP BY destination_service_name, for_server ORDER BY destination_service_name`,
    params: [msToUs(nowMs), ...source.params],
  };
}

export function serviceQueuesFromRows(
  rows: Array<{ service: string; for_server: DbInt; n: DbInt; later: DbInt | null }>,
): ServiceQueue[] {
  const out = new Map<string, ServiceQueue>();
  for (const r of rows) {
    let q = out.get(r.service);
    if (!q) {
      q = { service: r.service, serverDueNow: 0, serverDueLater: 0, clientPending: 0 };
      out.set(r.service, q);
    }
    const n = num(r.n);
    if (num(r.for_server) !== 0) {
      const later = num(r.later ?? 0);
      q.serverDueLater += later;
      q.serverDueNow += n - later;
    } else {
      q.clientPending += n;
    }
  }
  return [...out.values()];
}

// ---- heartbeats ----

export function checkHeartbeat(h: ServerHeartbeat): void {
  if (h.serverId === "" || h.serverId.length > 255) {
    throw new InvalidArgumentError(`server ID must be 1 to 255 characters, got ${h.serverId.length}`);
  }
}

export function heartbeatValues(h: ServerHeartbeat): [string, bigint, string] {
  checkHeartbeat(h);
  return [h.serverId, msToNs(h.timeMs), h.report];
}

/** REPLACE: one statement both dialects read as an upsert on the primary key. */
export const UPSERT_HEARTBEAT_SQL = "REPLACE INTO server_heartbeats (server_id, last_seen_time, report) VALUES (?, ?, ?)";

export function listHeartbeatsQuery(afterMs: number): Query {
  return {
    sql: "SELECT server_id, last_seen_time, report FROM server_heartbeats WHERE last_seen_time > ? ORDER BY server_id",
    params: [msToNs(afterMs)],
  };
}

export function heartbeatFromRow(r: { server_id: string; last_seen_time: DbInt; report: string }): ServerHeartbeat {
  return { serverId: r.server_id, timeMs: nsToMs(r.last_seen_time), report: r.report };
}

export function pruneHeartbeatsQuery(beforeMs: number): Query {
  return { sql: "DELETE FROM server_heartbeats WHERE last_seen_time < ?", params: [msToNs(beforeMs)] };
}

/** A backend's way to run one read-only query. */
export type RunQuery = <T>(op: string, query: () => Query) => Promise<T[]>;

/**
 * The console reads that are the same on both backends (one indexed query each), given how a
 * backend runs a query and reads clients; each backend delegates to one of these.
 */
export class ConsoleReads {
  constructor(
    private readonly run: RunQuery,
    private readonly listClients: (ids: Uint8Array[]) => Promise<Client[]>,
  ) {}

  async countStreamHolders(seenAfterMs: number): Promise<StreamHolderCount[]> {
    const rows = await this.run<{ address: string; n: DbInt }>("countStreamHolders", () => streamHoldersQuery(seenAfterMs));
    return rows.map(streamHolderFromRow);
  }

  async searchClients(search: ClientSearch): Promise<Client[]> {
    const ids = (await this.run<{ client_id: Buffer }>("searchClients", () => searchClientsQuery(search))).map((r) => r.client_id);
    return ids.length === 0 ? [] : inSearchOrder(ids, await this.listClients(ids));
  }

  async listRecentClientContacts(id: Uint8Array, max: number): Promise<ClientContact[]> {
    checkClientId(id);
    return (await this.run<ContactDbRow>("listRecentClientContacts", () => recentContactsQuery(id, max))).map(contactFromRow);
  }

  async countPendingByService(clientId: Uint8Array): Promise<PendingByService[]> {
    checkClientId(clientId);
    const rows = await this.run<Parameters<typeof pendingByServiceFromRow>[0]>("countPendingByService", () =>
      pendingByServiceQuery(clientId),
    );
    return rows.map(pendingByServiceFromRow);
  }

  async listRecentFailedMessages(clientId: Uint8Array, contacts: number, max: number): Promise<Message[]> {
    checkClientId(clientId);
    const rows = await this.run<MessageDbRow>("listRecentFailedMessages", () =>
      recentFailedMessagesQuery(clientId, contacts, max),
    );
    return rows.map((r) => messageFromRow(r, false, true));
  }

  async listServerHeartbeats(afterMs: number): Promise<ServerHeartbeat[]> {
    const rows = await this.run<Parameters<typeof heartbeatFromRow>[0]>("listServerHeartbeats", () => listHeartbeatsQuery(afterMs));
    return rows.map(heartbeatFromRow);
  }
}
