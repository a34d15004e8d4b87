// The installed services: their inboxes (one sequential processing loop each), the accounting
// behind AllowedMessages, routing of messages from the server, and the send path that stamps
// messages with our identity before they enter the outbox.
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { bytesEqual, clientIdToHex, MESSAGE_ID_BYTES } from "../../common/ids.js";
import { MAX_CONTACT_BYTES } from "../../common/limits.js";
import type { Logger } from "../../common/log.js";
import { encodeMessage } from "../../common/message-codec.js";
import { AddressSchema, type Label, type Message } from "../../gen/fleetspeak/common_pb.js";
import { type ClientInfoData_ServiceID, ClientInfoData_ServiceIDSchema, type ClientServiceConfig } from "../../gen/fleetspeak/system_pb.js";
import type { ServiceCounts } from "../comms/communicator.js";
import type { Outbox } from "../comms/outbox.js";
import type { ClientService, FactoryOptions, SendOptions, ServiceContext, ServiceFactory } from "./service.js";

/** A service's dequeued-message count reaching a multiple of this fires the processing beacon. */
const BEACON_EVERY = 32;

interface Entry {
  name: string;
  config: ClientServiceConfig | undefined;
  signature: Uint8Array;
  service: ClientService;
  inbox: Message[];
  inboxHead: number;
  accepted: number;
  processed: number;
  running: Promise<void> | undefined;
  closed: boolean;
}

export interface ManagerOptions {
  outbox: Outbox;
  clientId: () => Buffer;
  labels: () => Label[];
  factories: ReadonlyMap<string, ServiceFactory>;
  factoryOptions: FactoryOptions;
  /** A server message was processed (ack) or failed (error); not called for system/Die. */
  onProcessed: (messageId: Uint8Array, error: string | undefined) => void;
  log: Logger;
}

export class ServiceManager {
  private readonly entries = new Map<string, Entry>();
  private readonly beaconListeners = new Set<() => void>();

  constructor(private readonly opts: ManagerOptions) {}

  onBeacon(listener: () => void): () => void {
    this.beaconListeners.add(listener);
    return () => this.beaconListeners.delete(listener);
  }

  counts(): Map<string, ServiceCounts> {
    const out = new Map<string, ServiceCounts>();
    for (const e of this.entries.values()) out.set(e.name, { accepted: e.accepted, processed: e.processed });
    return out;
  }

  /** Installed services other than `system`, with the signature of their config file. */
  serviceIds(): ClientInfoData_ServiceID[] {
    return [...this.entries.values()]
      .filter((e) => e.name !== "system")
      .map((e) => create(ClientInfoData_ServiceIDSchema, { name: e.name, signature: e.signature }));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The send path of one service. */
  context(name: string): ServiceContext {
    return {
      name,
      clientId: this.opts.clientId,
      send: (m, o) => this.send(name, m, o),
      log: this.opts.log.child({ service: name }),
    };
  }

  private async send(serviceName: string, message: Message, opts: SendOptions | undefined): Promise<void> {
    if (!message.destination?.serviceName) {
      throw new Error(`service ${serviceName}: message of type "${message.messageType}" has no destination.service_name`);
    }
    const clientId = this.opts.clientId();
    message.source = create(AddressSchema, { clientId, serviceName });
    if (message.sourceMessageId.length === 0) message.sourceMessageId = randomBytes(16);
    const dest = message.destination.clientId;
    if (dest.length > 0) {
      if (bytesEqual(dest, clientId)) {
        this.deliverOne(message, true);
        opts?.onAck?.();
        return;
      }
      throw new Error(
        `service ${serviceName}: message addressed to client ${clientIdToHex(dest)}; clients can only send to the server or to themselves`,
      );
    }
    const size = encodeMessage(message).length;
    if (size > MAX_CONTACT_BYTES - 64 * 1024) {
      throw new Error(`service ${serviceName}: message of ${size} bytes can never fit in a contact (limit 20 MiB)`);
    }
    await this.opts.outbox.send(message, size, opts?.onAck, opts?.signal);
  }

  /** Installs and starts a service from its config; false (with a log line) if it cannot run. */
  async install(config: ClientServiceConfig, signature: Uint8Array, source: string): Promise<boolean> {
    const log = this.opts.log.child({ service: config.name, source });
    const reject = (why: string) => {
      log.warn(`service not installed: ${why}`);
      return false;
    };
    if (config.name === "" || config.name === "system" || config.name === "client") {
      return reject(`name ${JSON.stringify(config.name)} is reserved or empty; choose another name`);
    }
    const labelTexts = new Set(this.opts.labels().map((l) => l.label));
    for (const l of config.requiredLabels) {
      if (l.serviceName === "client" && !labelTexts.has(l.label)) {
        return reject(`requires client label "${l.label}", and this client has ${[...labelTexts].join(", ")}`);
      }
    }
    const factory = this.opts.factories.get(config.factory);
    if (!factory) {
      return reject(
        `unknown factory ${JSON.stringify(config.factory)}; known: ${[...this.opts.factories.keys()].join(", ")}`,
      );
    }
    let service: ClientService;
    try {
      service = factory(config, this.opts.factoryOptions);
      await service.start(this.context(config.name));
    } catch (e) {
      return reject((e as Error).message);
    }
    const old = this.entries.get(config.name);
    this.entries.set(config.name, newEntry(config.name, config, signature, service));
    if (old) {
      log.info("replaced an installed service of the same name");
      await this.retire(old);
    } else {
      log.info({ factory: config.factory }, "service started");
    }
    return true;
  }

  /** Installs the built-in system service (already started by the caller). */
  installSystem(service: ClientService): void {
    this.entries.set("system", newEntry("system", undefined, new Uint8Array(0), service));
  }

  /** Stops a service and starts it again from the config it was installed with. */
  async restart(name: string): Promise<void> {
    if (name === "" || name === "system" || name === "client") throw new Error(`cannot restart service "${name}"`);
    const entry = this.entries.get(name);
    if (!entry?.config) throw new Error(`service "${name}" is not installed`);
    this.entries.delete(name);
    await this.retire(entry);
    if (!(await this.install(entry.config, new Uint8Array(0), "RestartService"))) {
      throw new Error(`service "${name}" could not be started again; see the client log`);
    }
  }

  /** Messages from the server. */
  deliver(messages: Message[]): void {
    for (const m of messages) this.deliverOne(m, false);
  }

  private deliverOne(m: Message, local: boolean): void {
    const log = this.opts.log;
    const dest = m.destination;
    if (!dest) {
      log.warn({ messageType: m.messageType }, "dropping a server message without destination");
      return;
    }
    if (!local && dest.clientId.length === 0) {
      log.warn({ service: dest.serviceName, messageType: m.messageType }, "dropping a server message without destination.client_id");
      return;
    }
    if (!local && !bytesEqual(dest.clientId, this.opts.clientId())) {
      log.warn(
        { to: clientIdToHex(dest.clientId), messageType: m.messageType },
        "dropping a message addressed to another client",
      );
      return;
    }
    const entry = this.entries.get(dest.serviceName);
    if (!entry || entry.closed) {
      // Not acked: the server offers it again later, by which time the service may be installed.
      log.warn({ service: dest.serviceName, messageType: m.messageType }, "message for a service that is not installed");
      return;
    }
    entry.inbox.push(m);
    entry.accepted++;
    if (!entry.running) entry.running = this.runLoop(entry);
  }

  private async runLoop(e: Entry): Promise<void> {
    while (!e.closed && e.inboxHead < e.inbox.length) {
      const m = e.inbox[e.inboxHead]!;
      e.inboxHead++;
      if (e.inboxHead === e.inbox.length) {
        e.inbox = [];
        e.inboxHead = 0;
      }
      e.processed++;
      if (e.processed % BEACON_EVERY === 0) for (const l of this.beaconListeners) l();
      if (m.messageId.length !== 0 && m.messageId.length !== MESSAGE_ID_BYTES) {
        this.opts.log.warn({ service: e.name, length: m.messageId.length }, "ignoring a message whose message_id is not 32 bytes");
        continue;
      }
      let error: string | undefined;
      try {
        await e.service.processMessage(m);
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
        this.opts.log.warn({ service: e.name, messageType: m.messageType, error }, "service failed to process a message");
      }
      // Die is acknowledged by the server when it sends it; locally delivered messages have no ID.
      if (e.name === "system" && m.messageType === "Die") continue;
      if (m.messageId.length === 0) continue;
      this.opts.onProcessed(m.messageId, error);
    }
    e.running = undefined;
  }

  /**
   * Closes a service's inbox and stops it. Messages still in the inbox are dropped unacknowledged
   * (the server offers them again); the one being processed is allowed to finish.
   */
  private async retire(e: Entry): Promise<void> {
    e.closed = true;
    e.inbox = [];
    e.inboxHead = 0;
    try {
      const stopped = e.service.stop();
      await e.running;
      await stopped;
    } catch (err) {
      this.opts.log.error({ service: e.name, err: (err as Error).message }, "service did not stop cleanly");
    }
  }

  /** Stops every service; `system` last. */
  async stopAll(): Promise<void> {
    const others = [...this.entries.values()].filter((e) => e.name !== "system");
    const system = this.entries.get("system");
    this.entries.clear();
    await Promise.all(others.map((e) => this.retire(e)));
    if (system) await this.retire(system);
  }
}

function newEntry(name: string, config: ClientServiceConfig | undefined, signature: Uint8Array, service: ClientService): Entry {
  return {
    name,
    config,
    signature,
    service,
    inbox: [],
    inboxHead: 0,
    accepted: 0,
    processed: 0,
    running: undefined,
    closed: false,
  };
}
