// Prometheus metrics of one server process. Fleetspeak's metric names and labels where Fleetspeak
// has the metric (components/prometheus/prometheus.go), so that dashboards and alerts written for
// it keep working, plus ours for what it does not measure (connected clients, notifications,
// acknowledged deliveries, admin requests). Each Metrics owns its registry, so several servers in
// one process (tests) do not share counters.
//
// Wiring is one call per event: `metrics.messageIngested(...)`, `metrics.clientPoll(...)`, and
// wrappers for whole interfaces (`instrumentStore`, `instrumentNotifier`, `instrumentAdminService`).
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Label, Message } from "../../gen/fleetspeak/common_pb.js";
import {
  type KillNotification,
  KillNotification_Reason,
  type ResourceUsageData,
} from "../../gen/fleetspeak_monitoring/resource_pb.js";
import { Admin } from "../../gen/fleetspeak_server/admin_pb.js";
import type { Notifier } from "../notify/notifier.js";
import type { Store } from "../store/store.js";
import { Activity } from "./activity.js";

/** What the message metrics say about a message; `describeMessage` fills it from a Message. */
export interface MessageDescription {
  sourceService: string;
  destinationService: string;
  messageType: string;
  /** len(data.type_url) + len(data.value), as Fleetspeak counts payload bytes. */
  payloadBytes?: number;
  /** Labels of the client the message comes from or goes to (client_labels). */
  clientLabels?: readonly Label[];
}

/** The parts of a client's record that label resource-usage and kill-notification metrics. */
export interface ClientDescription {
  labels: readonly Label[];
  blacklisted: boolean;
}

/** poll_type values, as Fleetspeak's stats.PollType prints them. */
export type PollType = "POLL" | "STREAM_START" | "STREAM_FROM_CLIENT" | "STREAM_TO_CLIENT";

/** One client contact (Fleetspeak's stats.PollInfo). Times in seconds. */
export interface PollInfo {
  pollType: PollType;
  httpStatusCode: number;
  /** The client's data came from the cache, not the database. */
  cacheHit: boolean;
  /** From the start of the contact to its end. */
  durationSeconds: number;
  readSeconds?: number;
  writeSeconds?: number;
  readBytes?: number;
  writeBytes?: number;
}

/** How a notification to another server (or this one) went. */
/** ok: delivered (and, when the target says, it held the stream); absent: the target holds no stream of the client. */
export type NotificationResult = "ok" | "absent" | "failed";

export function describeMessage(m: Message, clientLabels?: readonly Label[]): MessageDescription {
  return {
    sourceService: m.source?.serviceName ?? "",
    destinationService: m.destination?.serviceName ?? "",
    messageType: m.messageType,
    payloadBytes: m.data ? m.data.typeUrl.length + m.data.value.length : 0,
    ...(clientLabels ? { clientLabels } : {}),
  };
}

/** Fleetspeak's client_labels value: sorted "service:label" pairs joined by ",". */
export function clientLabelsText(labels: readonly Label[] | undefined): string {
  if (!labels || labels.length === 0) return "";
  return labels
    .map((l) => `${l.serviceName}:${l.label}`)
    .sort()
    .join(",");
}

/** Fleetspeak's client_data_labels value: sorted label values only, joined by ",". */
function clientDataLabelsText(labels: readonly Label[]): string {
  return labels
    .map((l) => l.label)
    .sort()
    .join(",");
}

const bool = (b: boolean): string => (b ? "true" : "false");

const MESSAGE_LABELS = ["source_service", "destination_service", "message_type", "client_labels"] as const;
const INGEST_LABELS = ["backlogged", ...MESSAGE_LABELS] as const;
const SAVED_LABELS = ["service", "message_type", "for_client", "client_labels"] as const;
const POLL_LABELS = ["http_status_code", "poll_type", "cache_hit"] as const;
const RESOURCE_LABELS = ["client_data_labels", "blacklisted", "scope", "version"] as const;

type ResourceField = "meanUserCpuRate" | "maxUserCpuRate" | "meanSystemCpuRate" | "maxSystemCpuRate";

export interface MetricsOptions {
  /** Node.js process metrics (process_*, nodejs_*), as Go's registry has go_* and process_*. Default true. */
  defaultMetrics?: boolean;
}

export class Metrics {
  readonly registry = new Registry();
  /** The same events as plain counters, for the heartbeat (operator console). */
  readonly activity = new Activity();

  readonly #ingested: Counter<(typeof INGEST_LABELS)[number]>;
  readonly #ingestedBytes: Counter<(typeof INGEST_LABELS)[number]>;
  readonly #sent: Counter<(typeof MESSAGE_LABELS)[number]>;
  readonly #sentBytes: Counter<(typeof MESSAGE_LABELS)[number]>;
  readonly #saved: Counter<(typeof SAVED_LABELS)[number]>;
  readonly #savedBytes: Counter<(typeof SAVED_LABELS)[number]>;
  readonly #processed: Histogram<"message_type" | "service" | "is_first_try" | "client_labels">;
  readonly #errored: Histogram<"message_type" | "is_temp" | "is_first_try" | "client_labels">;
  readonly #dropped: Counter<"service" | "message_type" | "is_first_try" | "client_labels">;
  readonly #polls: Counter<(typeof POLL_LABELS)[number]>;
  readonly #pollTime: Histogram<(typeof POLL_LABELS)[number]>;
  readonly #pollReadTime: Histogram<(typeof POLL_LABELS)[number]>;
  readonly #pollWriteTime: Histogram<(typeof POLL_LABELS)[number]>;
  readonly #pollReadMb: Histogram<(typeof POLL_LABELS)[number]>;
  readonly #pollWriteMb: Histogram<(typeof POLL_LABELS)[number]>;
  readonly #datastore: Histogram<"operation" | "errored">;
  readonly #resourceUsage: Counter<(typeof RESOURCE_LABELS)[number]>;
  readonly #resourceRates: Array<[ResourceField, Histogram<(typeof RESOURCE_LABELS)[number]>]>;
  readonly #meanMemory: Histogram<(typeof RESOURCE_LABELS)[number]>;
  readonly #maxMemory: Histogram<(typeof RESOURCE_LABELS)[number]>;
  readonly #kills: Counter<"client_data_labels" | "blacklisted" | "service" | "reason">;
  readonly #notificationsSent: Counter<"result">;
  readonly #notificationsReceived: Counter<"known">;
  readonly #carried: Counter<"result">;
  readonly #retries: Counter<"operation" | "reason">;
  readonly #delivered: Counter;
  readonly #adminRequests: Counter<"method" | "code">;
  #connectedClients: () => number = () => 0;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
      new Counter<L>({ name, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
      new Histogram<L>({ name, help, labelNames, registers });

    this.#ingested = counter(
      "fleetspeak_messages_ingested_total",
      "Messages received from clients (backlogged=false) or taken again from the backlog (true).",
      INGEST_LABELS,
    );
    this.#ingestedBytes = counter(
      "fleetspeak_messages_ingested_payload_bytes_size",
      "Payload bytes of ingested messages (type URL + value).",
      INGEST_LABELS,
    );
    this.#sent = counter("fleetspeak_messages_sent_total", "Messages written to clients.", MESSAGE_LABELS);
    this.#sentBytes = counter(
      "fleetspeak_messages_sent_payload_bytes_size",
      "Payload bytes of messages written to clients.",
      MESSAGE_LABELS,
    );
    this.#saved = counter("fleetspeak_messages_saved_total", "Messages stored by the server.", SAVED_LABELS);
    this.#savedBytes = counter(
      "fleetspeak_messages_saved_payload_bytes_size",
      "Payload bytes of messages stored by the server.",
      SAVED_LABELS,
    );
    this.#processed = histogram(
      "fleetspeak_server_messages_processed_latency",
      "Seconds a server service took to process a client message successfully.",
      ["message_type", "service", "is_first_try", "client_labels"],
    );
    this.#errored = histogram(
      "fleetspeak_server_messages_errored_latency",
      "Seconds a server service took to fail processing a client message.",
      ["message_type", "is_temp", "is_first_try", "client_labels"],
    );
    this.#dropped = counter(
      "fleetspeak_server_messages_dropped_total",
      "Client messages dropped (to be retried from the backlog) because their service was overloaded.",
      ["service", "message_type", "is_first_try", "client_labels"],
    );
    this.#polls = counter("fleetspeak_server_client_polls_total", "Client contacts (polls and streams).", POLL_LABELS);
    this.#pollTime = histogram(
      "fleetspeak_server_client_polls_operation_time_latency",
      "Seconds from the start to the end of a client contact.",
      POLL_LABELS,
    );
    this.#pollReadTime = histogram(
      "fleetspeak_server_client_polls_read_time_latency",
      "Seconds spent reading a client contact's request.",
      POLL_LABELS,
    );
    this.#pollWriteTime = histogram(
      "fleetspeak_server_client_polls_write_time_latency",
      "Seconds spent writing a client contact's response.",
      POLL_LABELS,
    );
    this.#pollReadMb = histogram(
      "fleetspeak_server_client_polls_read_megabytes_size_distribution",
      "Megabytes (10^6 bytes) read from a client contact.",
      POLL_LABELS,
    );
    this.#pollWriteMb = histogram(
      "fleetspeak_server_client_polls_write_megabytes_size_distribution",
      "Megabytes (10^6 bytes) written to a client contact.",
      POLL_LABELS,
    );
    this.#datastore = histogram(
      "fleetspeak_server_datastore_operations_completed_latency",
      "Seconds a datastore operation took, by operation and whether it failed.",
      ["operation", "errored"],
    );
    this.#resourceUsage = counter(
      "fleetspeak_server_resource_usage_data_received_total",
      "Resource-usage reports received from clients.",
      RESOURCE_LABELS,
    );
    // Fleetspeak's names, including the one without "_distribution".
    this.#resourceRates = [
      ["meanUserCpuRate", "fleetspeak_server_resource_usage_data_received_mean_user_cpu_rate_distribution"],
      ["maxUserCpuRate", "fleetspeak_server_resource_usage_data_received_max_user_cpu_rate_distribution"],
      ["meanSystemCpuRate", "fleetspeak_server_resource_usage_data_received_mean_system_cpu_rate_distribution"],
      ["maxSystemCpuRate", "fleetspeak_server_resource_usage_data_received_max_system_cpu_rate"],
    ].map(([field, name]) => [
      field as ResourceField,
      histogram(name!, `Reported ${field} of client processes (percent of one CPU).`, RESOURCE_LABELS),
    ]);
    this.#meanMemory = histogram(
      "fleetspeak_server_resource_usage_data_received_mean_resident_memory_bytes_distribution",
      "Reported mean resident memory of client processes, bytes.",
      RESOURCE_LABELS,
    );
    this.#maxMemory = histogram(
      "fleetspeak_server_resource_usage_data_received_max_resident_memory_bytes_distribution",
      "Reported max resident memory of client processes, bytes.",
      RESOURCE_LABELS,
    );
    this.#kills = counter(
      "fleetspeak_server_kill_notifications_received_total",
      "Kill notifications from clients (a daemon service was killed), by reason.",
      ["client_data_labels", "blacklisted", "service", "reason"],
    );

    const self = this;
    new Gauge({
      name: "fleetspeak_frontend_connected_clients",
      help: "Clients with an open streaming connection to this frontend.",
      registers,
      collect() {
        this.set(self.#connectedClients());
      },
    });
    this.#notificationsSent = counter(
      "fleetspeak_notifications_sent_total",
      "New-message notifications sent to the server holding a client's stream, by result (ok; absent: it holds no stream of that client; failed).",
      ["result"],
    );
    this.#notificationsReceived = counter(
      "fleetspeak_notifications_received_total",
      "New-message notifications received; known=false when this server holds no stream of that client.",
      ["known"],
    );
    this.#carried = counter(
      "fleetspeak_notifications_carried_messages_total",
      "Messages carried by notifications: result=sent when leased and sent as carried, fetched when left to a" +
        " regular fetch (no allowance, blacklisted client, or claimed meanwhile).",
      ["result"],
    );
    this.#retries = counter(
      "fleetspeak_datastore_transaction_retries_total",
      "Transactions run again after a conflict with another one, by operation and reason (deadlock, including" +
        " Galera certification failures; lock_wait_timeout; too_many_transactions; commit_failed).",
      ["operation", "reason"],
    );
    this.#delivered = new Counter({
      name: "fleetspeak_messages_delivered_total",
      help: "Messages to clients that the client acknowledged (MessageAck).",
      registers,
    });
    this.#adminRequests = counter(
      "fleetspeak_admin_requests_total",
      "Admin API calls, by RPC and gRPC status code.",
      ["method", "code"],
    );
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A message received from a client, or taken from the backlog again (backlogged). */
  messageIngested(m: MessageDescription & { backlogged: boolean }): void {
    const labels = {
      backlogged: bool(m.backlogged),
      source_service: m.sourceService,
      destination_service: m.destinationService,
      message_type: m.messageType,
      client_labels: clientLabelsText(m.clientLabels),
    };
    this.#ingested.inc(labels);
    this.#ingestedBytes.inc(labels, m.payloadBytes ?? 0);
    if (!m.backlogged) {
      this.activity.received++;
      this.activity.service(m.destinationService).received++;
    }
  }

  /** A message written to a client (poll answer or stream). */
  messageSent(m: MessageDescription): void {
    const labels = {
      source_service: m.sourceService,
      destination_service: m.destinationService,
      message_type: m.messageType,
      client_labels: clientLabelsText(m.clientLabels),
    };
    this.#sent.inc(labels);
    this.#sentBytes.inc(labels, m.payloadBytes ?? 0);
    this.activity.sent++;
    this.activity.service(m.sourceService).sent++;
  }

  /** A message stored: forClient=false for a client's message saved after first processing. */
  messageSaved(m: MessageDescription & { forClient: boolean }): void {
    const labels = {
      service: m.destinationService,
      message_type: m.messageType,
      for_client: bool(m.forClient),
      client_labels: clientLabelsText(m.clientLabels),
    };
    this.#saved.inc(labels);
    this.#savedBytes.inc(labels, m.payloadBytes ?? 0);
  }

  /** A server service processed a client message successfully in `seconds`. */
  messageProcessed(m: MessageDescription & { isFirstTry: boolean; seconds: number }): void {
    this.#processed.observe(
      {
        message_type: m.messageType,
        service: m.destinationService,
        is_first_try: bool(m.isFirstTry),
        client_labels: clientLabelsText(m.clientLabels),
      },
      m.seconds,
    );
  }

  /** A server service failed a client message; isTemp = it will be retried. */
  messageErrored(m: MessageDescription & { isTemp: boolean; isFirstTry: boolean; seconds: number }): void {
    this.#errored.observe(
      {
        message_type: m.messageType,
        is_temp: bool(m.isTemp),
        is_first_try: bool(m.isFirstTry),
        client_labels: clientLabelsText(m.clientLabels),
      },
      m.seconds,
    );
    this.activity.service(m.destinationService).errors++;
  }

  /** A client message dropped because its service had too many in flight (retried later). */
  messageDropped(m: MessageDescription & { isFirstTry: boolean }): void {
    this.#dropped.inc({
      service: m.destinationService,
      message_type: m.messageType,
      is_first_try: bool(m.isFirstTry),
      client_labels: clientLabelsText(m.clientLabels),
    });
  }

  /** A client acknowledged `count` messages sent to it. */
  messagesDelivered(count = 1): void {
    if (count > 0) this.#delivered.inc(count);
  }

  /** One client contact: a poll, the start of a stream, or one exchange on a stream. */
  clientPoll(p: PollInfo): void {
    const labels = {
      http_status_code: String(p.httpStatusCode),
      poll_type: p.pollType,
      cache_hit: bool(p.cacheHit),
    };
    this.#polls.inc(labels);
    this.#pollTime.observe(labels, p.durationSeconds);
    this.#pollReadTime.observe(labels, p.readSeconds ?? 0);
    this.#pollWriteTime.observe(labels, p.writeSeconds ?? 0);
    this.#pollReadMb.observe(labels, (p.readBytes ?? 0) / 1e6);
    this.#pollWriteMb.observe(labels, (p.writeBytes ?? 0) / 1e6);
  }

  /** One datastore call; `operation` is the Store method in Fleetspeak's spelling (StoreMessages). */
  datastoreOperation(operation: string, errored: boolean, seconds: number): void {
    this.#datastore.observe({ operation, errored: bool(errored) }, seconds);
  }

  /** A resource-usage report from a client's system service. */
  resourceUsageReceived(client: ClientDescription, data: ResourceUsageData): void {
    const labels = {
      client_data_labels: clientDataLabelsText(client.labels),
      blacklisted: bool(client.blacklisted),
      scope: data.scope,
      version: data.version,
    };
    this.#resourceUsage.inc(labels);
    const usage = data.resourceUsage;
    for (const [field, h] of this.#resourceRates) h.observe(labels, usage?.[field] ?? 0);
    this.#meanMemory.observe(labels, usage?.meanResidentMemory ?? 0);
    this.#maxMemory.observe(labels, Number(usage?.maxResidentMemory ?? 0n));
  }

  /** A client reports that it killed one of its daemon services. */
  killNotificationReceived(client: ClientDescription, kill: KillNotification): void {
    this.#kills.inc({
      client_data_labels: clientDataLabelsText(client.labels),
      blacklisted: bool(client.blacklisted),
      service: kill.service,
      reason: KillNotification_Reason[kill.reason] ?? String(kill.reason),
    });
  }

  /** Where the connected-clients gauge reads its value at each scrape. */
  trackConnectedClients(count: () => number): void {
    this.#connectedClients = count;
  }

  notificationSent(result: NotificationResult): void {
    this.#notificationsSent.inc({ result });
    if (result === "failed") this.activity.notificationsFailed++;
    else this.activity.notificationsOk++;
  }

  /** known=false: this server holds no stream of the client named in the notification. */
  notificationReceived(known: boolean): void {
    this.#notificationsReceived.inc({ known: bool(known) });
  }

  /** A message carried by a notification was sent as carried, or left to a regular fetch. */
  carriedMessage(sent: boolean): void {
    this.#carried.inc({ result: sent ? "sent" : "fetched" });
  }

  /** A datastore transaction run again after a conflict. */
  transactionRetried(operation: string, reason: string): void {
    this.#retries.inc({ operation: operationName(operation), reason });
  }

  /** One admin RPC; `code` is the gRPC status name ("OK", "InvalidArgument", …). */
  adminRequest(method: string, code: string): void {
    this.#adminRequests.inc({ method, code });
  }

  /** The Prometheus text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * In a worker process: answer the supervisor's metric requests with this registry (prom-client's
   * cluster protocol over the IPC channel).
   */
  shareWithSupervisor(): void {
    new AggregatorRegistry();
    AggregatorRegistry.setRegistries([this.registry]);
  }
}

/**
 * In the supervisor of worker processes: every worker's metrics, summed by prom-client's
 * AggregatorRegistry (counters and histograms added, gauges such as the connected clients added;
 * process metrics by prom-client's own rule for each).
 */
export class ClusterMetrics {
  readonly #registry = new AggregatorRegistry();

  scrape(): Promise<string> {
    return this.#registry.clusterMetrics();
  }

  get contentType(): string {
    return this.#registry.contentType;
  }
}

/**
 * Fleetspeak's operation label for our Store methods: the Go method name where Fleetspeak has the
 * same operation under another name, otherwise our name capitalised (storeMessages → StoreMessages).
 */
const FLEETSPEAK_OPERATION_NAMES: Record<string, string> = {
  claimClientMessages: "ClientMessagesForProcessing",
  recordResourceUsageData: "RecordResourceUsageData",
  fetchResourceUsageRecords: "FetchResourceUsageRecords",
};

function operationName(method: string): string {
  return FLEETSPEAK_OPERATION_NAMES[method] ?? method.charAt(0).toUpperCase() + method.slice(1);
}

/** Store members that are not datastore operations. */
const UNTIMED_STORE_MEMBERS = new Set(["close", "backend", "constructor", "observeRetries"]);

/**
 * The same Store, with every operation timed into
 * fleetspeak_server_datastore_operations_completed_latency{operation, errored}. Wrap once where the
 * store is opened; every user of the store is then counted (Fleetspeak misses the admin server's).
 */
export function instrumentStore(store: Store, metrics: Metrics): Store {
  store.observeRetries?.((operation, reason) => metrics.transactionRetried(operation, reason));
  const wrappers = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== "function" || typeof prop !== "string" || UNTIMED_STORE_MEMBERS.has(prop)) {
        return typeof value === "function" ? value.bind(target) : value;
      }
      let wrapper = wrappers.get(prop);
      if (!wrapper) {
        const operation = operationName(prop);
        const fn = value as (...args: unknown[]) => Promise<unknown>;
        wrapper = async (...args: unknown[]) => {
          const start = performance.now();
          try {
            const result = await fn.apply(target, args);
            metrics.datastoreOperation(operation, false, (performance.now() - start) / 1000);
            return result;
          } catch (e) {
            metrics.datastoreOperation(operation, true, (performance.now() - start) / 1000);
            throw e;
          }
        };
        wrappers.set(prop, wrapper);
      }
      return wrapper;
    },
  });
}

/**
 * The same Notifier, counting each notification in fleetspeak_notifications_sent_total{result};
 * its answer (whether the target held the stream) passes through unchanged.
 */
export function instrumentNotifier(notifier: Notifier, metrics: Metrics): Notifier {
  return {
    async newMessageForClient(target, clientId, carried) {
      try {
        const answer = await notifier.newMessageForClient(target, clientId, carried);
        metrics.notificationSent(answer === "absent" ? "absent" : "ok");
        return answer;
      } catch (e) {
        metrics.notificationSent("failed");
        throw e;
      }
    },
  };
}

function statusName(e: unknown): string {
  const code = ConnectError.from(e).code;
  return Code[code] ?? String(code);
}

type AdminImpl = ServiceImpl<typeof Admin>;

/**
 * The same admin service implementation, counting each call in
 * fleetspeak_admin_requests_total{method, code} (method = the RPC name, e.g. InsertMessage).
 */
export function instrumentAdminService(service: Partial<AdminImpl>, metrics: Metrics): Partial<AdminImpl> {
  const out: Record<string, unknown> = {};
  for (const method of Admin.methods as readonly DescMethod[]) {
    const impl = (service as Record<string, unknown>)[method.localName];
    if (typeof impl !== "function") continue;
    const call = impl as (req: unknown, ctx: HandlerContext) => unknown;
    if (method.methodKind === "server_streaming") {
      out[method.localName] = async function* (req: unknown, ctx: HandlerContext) {
        try {
          yield* call.call(service, req, ctx) as AsyncIterable<unknown>;
          metrics.adminRequest(method.name, "OK");
        } catch (e) {
          metrics.adminRequest(method.name, statusName(e));
          throw e;
        }
      };
    } else {
      out[method.localName] = async (req: unknown, ctx: HandlerContext) => {
        try {
          const res = await call.call(service, req, ctx);
          metrics.adminRequest(method.name, "OK");
          return res;
        } catch (e) {
          metrics.adminRequest(method.name, statusName(e));
          throw e;
        }
      };
    }
  }
  return out as Partial<AdminImpl>;
}
