// What each console page shows, read through the Store. Answers that cost a pass over a whole
// table (client counts, labels, stream holders, queues) are kept for a few seconds and shared by
// every viewer of this admin server, and a query already running is joined rather than run
// again: however many operators keep the console open, each such query runs at most once per
// period per admin server. docs/console.md lists what each page costs.
import type { Message } from "../../gen/fleetspeak/common_pb.js";
import type { Client, ClientContact } from "../../gen/fleetspeak_server/admin_pb.js";
import type { ClientResourceUsageRecord } from "../../gen/fleetspeak_server/resource_pb.js";
import { type HeartbeatReport, parseHeartbeatReport, streamingAddressesOf } from "../observe/heartbeat.js";
import type {
  ActiveBroadcast,
  ClientCounts,
  ClientSearch,
  LabelCount,
  PendingByService,
  ServiceQueue,
  Store,
  StreamHolderCount,
} from "../store/store.js";

/** The fleet page's "seen in the last …" columns. */
export const SEEN_WINDOWS = [
  { label: "5 min", ms: 5 * 60_000 },
  { label: "hour", ms: 3600_000 },
  { label: "day", ms: 86_400_000 },
] as const;
/** A stream is at most ten minutes old before the client opens a new one (stream lifespan). */
export const STREAM_WINDOW_MS = 15 * 60_000;
/** Servers whose last heartbeat is older than this are not listed. */
const SERVERS_WINDOW_MS = 86_400_000;
/** Pending messages counted for the queues page; past this the counts are lower bounds. */
export const QUEUE_ROWS_COUNTED = 100_000;
/** Clients listed on the fleet page, recent or found. */
export const LIST_LIMIT = 50;
const LABELS_SHOWN = 50;
const CONTACTS_SHOWN = 20;
const FAILED_CONTACTS_SCANNED = 50;
const FAILED_SHOWN = 20;
const PENDING_SHOWN = 20;
const USAGE_WINDOW_MS = 86_400_000;

/** Seconds each shared answer is kept. */
const TTL = { counts: 10_000, labels: 60_000, holders: 30_000, heartbeats: 5_000, queues: 30_000 };

/** A server process, from its heartbeat row and/or the clients that stream to it. */
export interface ServerView {
  /** Server ID of its heartbeat; the notification address for a server seen only through clients. */
  id: string;
  report?: HeartbeatReport;
  lastSeenMs?: number;
  state: "up" | "silent" | "stopped" | "no heartbeat";
  /** Clients whose last contact in STREAM_WINDOW_MS was a stream to this server. */
  recentStreamingClients: number;
}

export interface FleetView {
  counts: ClientCounts;
  /** Streams open now, summed over the servers that are up. */
  streamingNow: number;
  labels: LabelCount[];
  clients: Client[];
  listLimit: number;
}

export interface ClientView {
  client: Client;
  holder?: ServerView;
  contacts: ClientContact[];
  pendingByService: PendingByService[];
  pending: Message[];
  failed: Message[];
  usage: ClientResourceUsageRecord[];
}

export interface ServiceRow {
  service: string;
  queue: ServiceQueue;
  inPerS: number;
  outPerS: number;
  errorsPerS: number;
  errors: number;
}

export interface ServicesView {
  services: ServiceRow[];
  queueRowsCounted: number;
  broadcasts: ActiveBroadcast[];
}

class SharedAnswers {
  readonly #entries = new Map<string, { until: number; value: Promise<unknown> }>();

  get<T>(key: string, ttlMs: number, load: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const e = this.#entries.get(key);
    if (e && e.until > now) return e.value as Promise<T>;
    const value = load();
    this.#entries.set(key, { until: now + ttlMs, value });
    // A failure is not kept: the next request tries again.
    value.catch(() => this.#entries.delete(key));
    return value;
  }
}

export class ConsoleData {
  readonly #store: Store;
  readonly #shared = new SharedAnswers();

  constructor(store: Store) {
    this.#store = store;
  }

  async fleet(search: ClientSearch | undefined): Promise<FleetView> {
    const now = Date.now();
    const [counts, labels, servers, clients] = await Promise.all([
      this.#shared.get("counts", TTL.counts, () => this.#store.countClients(SEEN_WINDOWS.map((w) => now - w.ms))),
      this.#shared.get("labels", TTL.labels, () => this.#store.countClientsByLabel(LABELS_SHOWN)),
      this.servers(),
      this.#store.searchClients(search ?? { by: "recent", limit: LIST_LIMIT }),
    ]);
    const streamingNow = servers
      .filter((s) => s.state === "up")
      .reduce((n, s) => n + (s.report?.samples.at(-1)?.streams ?? 0), 0);
    return { counts, labels, clients, streamingNow, listLimit: LIST_LIMIT };
  }

  /** The client's page, or undefined for an unknown client. */
  async client(id: Uint8Array): Promise<ClientView | undefined> {
    const [client] = await this.#store.listClients([id]);
    if (!client) return undefined;
    const now = Date.now();
    const [contacts, pendingByService, pending, failed, usage, servers] = await Promise.all([
      this.#store.listRecentClientContacts(id, CONTACTS_SHOWN),
      this.#store.countPendingByService(id),
      this.#store.getPendingMessages({ clientIds: [id], offset: 0, limit: PENDING_SHOWN, wantData: false }),
      this.#store.listRecentFailedMessages(id, FAILED_CONTACTS_SCANNED, FAILED_SHOWN),
      this.#store.fetchResourceUsageRecords(id, now - USAGE_WINDOW_MS, now + 1),
      client.lastContactStreamingTo ? this.servers() : Promise.resolve([]),
    ]);
    const holder = servers.find(
      (s) => s.id === client.lastContactStreamingTo || streamingAddressesOf(s.report).includes(client.lastContactStreamingTo),
    );
    return { client, contacts, pendingByService, pending, failed, usage, ...(holder ? { holder } : {}) };
  }

  /** Every server seen in the last day: heartbeats first, then addresses known only from clients. */
  async servers(): Promise<ServerView[]> {
    const now = Date.now();
    const [{ beats, readMs }, holders] = await Promise.all([
      // A server is silent when its heartbeat is old at the time the rows were read.
      this.#shared.get("heartbeats", TTL.heartbeats, async () => ({
        beats: await this.#store.listServerHeartbeats(now - SERVERS_WINDOW_MS),
        readMs: Date.now(),
      })),
      this.#shared.get("holders", TTL.holders, () => this.#store.countStreamHolders(now - STREAM_WINDOW_MS)),
    ]);
    const byAddress = new Map<string, StreamHolderCount>(holders.map((h) => [h.address, h]));
    const out: ServerView[] = [];
    for (const b of beats) {
      const report = parseHeartbeatReport(b.report);
      let held = 0;
      for (const address of streamingAddressesOf(report)) {
        held += byAddress.get(address)?.clients ?? 0;
        byAddress.delete(address);
      }
      const silentAfter = 3 * (report?.intervalMs ?? 10_000);
      const state = report?.stoppedMs !== undefined ? "stopped" : readMs - b.timeMs > silentAfter ? "silent" : "up";
      out.push({
        id: b.serverId,
        ...(report ? { report } : {}),
        lastSeenMs: b.timeMs,
        state,
        recentStreamingClients: held,
      });
    }
    for (const h of byAddress.values()) out.push({ id: h.address, state: "no heartbeat", recentStreamingClients: h.clients });
    return out;
  }

  async services(): Promise<ServicesView> {
    const [queues, servers, broadcasts] = await Promise.all([
      this.#shared.get("queues", TTL.queues, () => this.#store.listServiceQueues(QUEUE_ROWS_COUNTED)),
      this.servers(),
      this.#shared.get("broadcasts", TTL.queues, () => this.#store.listActiveBroadcasts()),
    ]);
    const rows = new Map<string, ServiceRow>();
    const row = (service: string): ServiceRow => {
      let r = rows.get(service);
      if (!r) {
        r = {
          service,
          queue: { service, serverDueNow: 0, serverDueLater: 0, clientPending: 0 },
          inPerS: 0,
          outPerS: 0,
          errorsPerS: 0,
          errors: 0,
        };
        rows.set(service, r);
      }
      return r;
    };
    for (const q of queues) row(q.service).queue = q;
    for (const s of servers) {
      if (s.state !== "up" || !s.report) continue;
      for (const r of s.report.services) {
        const x = row(r.name);
        x.inPerS += r.inPerS;
        x.outPerS += r.outPerS;
        x.errorsPerS += r.errorsPerS;
        x.errors += r.errors;
      }
    }
    const services = [...rows.values()].sort((a, b) => a.service.localeCompare(b.service));
    return { services, queueRowsCounted: QUEUE_ROWS_COUNTED, broadcasts };
  }
}
