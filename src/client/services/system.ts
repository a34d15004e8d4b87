// The built-in `system` service. To the server it sends acknowledgements of processed messages
// (batched for 1 s), errors of failed ones, ClientInfo (labels and services) at start and after a
// rekey, and the client's own resource usage. From the server it handles RekeyRequest, Die and
// RestartService. It also fetches the list of revoked server certificates hourly.
import { create, fromBinary } from "@bufbuild/protobuf";
import { type Any, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import type { Logger } from "../../common/log.js";
import { type Label, type Message, Message_Priority } from "../../gen/fleetspeak/common_pb.js";
import {
  type ClientInfoData_ServiceID,
  ClientInfoDataSchema,
  DieRequestSchema,
  MessageAckDataSchema,
  MessageErrorDataSchema,
  RestartServiceRequestSchema,
  RevokedCertificateListSchema,
} from "../../gen/fleetspeak/system_pb.js";
import type { ClientStateStore } from "../state.js";
import { ResourceMonitor, sendToSystem } from "./resource-monitor.js";
import type { ClientService, ServiceContext } from "./service.js";

const ACK_BATCH_MS = 1000;
const ACK_SEND_TIMEOUT_MS = 5000;
const CLIENT_INFO_SEND_TIMEOUT_MS = 5 * 60_000;
const REVOKED_POLL_MS = 60 * 60_000;
export const REVOKED_FETCH_TIMEOUT_MS = 30_000;

export interface SystemServiceDeps {
  state: ClientStateStore;
  labels: Label[];
  serviceIds: () => ClientInfoData_ServiceID[];
  restartService: (name: string) => Promise<void>;
  /** GET /files/system/RevokedCertificates from the servers. */
  fetchRevokedCertificates: () => Promise<Buffer>;
  /** New revoked serials arrived: connections verified before must be verified again. */
  revokedChanged: () => void;
  /** The server asked the client to exit (code 7); `force` = at once, without a graceful stop. */
  die: (force: boolean) => void;
  /** Resource-report settings for the client itself (Fleetspeak: 30 s × 20). */
  selfMonitor: { samplePeriodMs: number; sampleSize: number } | undefined;
  log: Logger;
}

export class SystemService implements ClientService {
  private ctx!: ServiceContext;
  private pendingAcks: Uint8Array[] = [];
  private ackTimer: NodeJS.Timeout | undefined;
  private revokedTimer: NodeJS.Timeout | undefined;
  private monitor: ResourceMonitor | undefined;

  constructor(private readonly deps: SystemServiceDeps) {}

  async start(ctx: ServiceContext): Promise<void> {
    this.ctx = ctx;
    this.revokedTimer = setInterval(() => void this.refreshRevokedCertificates(), REVOKED_POLL_MS);
    this.revokedTimer.unref();
    const m = this.deps.selfMonitor;
    if (m) {
      this.monitor = new ResourceMonitor({
        scope: "system",
        pid: process.pid,
        version: "",
        processStartTime: new Date(Date.now() - process.uptime() * 1000),
        samplePeriodMs: m.samplePeriodMs,
        sampleSize: m.sampleSize,
        memoryLimit: 0,
        ctx,
        log: this.deps.log,
      });
      this.monitor.start();
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.ackTimer);
    clearInterval(this.revokedTimer);
    this.monitor?.stop();
  }

  async processMessage(m: Message): Promise<void> {
    switch (m.messageType) {
      case "RekeyRequest":
        this.deps.state.rekey();
        void this.sendClientInfo();
        return;
      case "Die": {
        const req = m.data ? anyUnpack(m.data, DieRequestSchema) : undefined;
        this.deps.log.warn({ force: req?.force ?? false }, "server asked the client to exit");
        this.deps.die(req?.force ?? false);
        return;
      }
      case "RestartService": {
        const req = m.data ? anyUnpack(m.data, RestartServiceRequestSchema) : undefined;
        if (!req) throw new Error("RestartService without a fleetspeak.RestartServiceRequest");
        this.deps.log.info({ service: req.name }, "server asked to restart a service");
        await this.deps.restartService(req.name);
        return;
      }
      default:
        throw new Error(`unable to process message of type: ${m.messageType}`);
    }
  }

  /** A server message was processed: acknowledged within the next second, with others. */
  ack(messageId: Uint8Array): void {
    this.pendingAcks.push(messageId);
    this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_BATCH_MS);
  }

  private flushAcks(): void {
    this.ackTimer = undefined;
    const ids = this.pendingAcks;
    this.pendingAcks = [];
    if (ids.length === 0) return;
    void this.sendSystem(
      "MessageAck",
      anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds: ids })),
      ACK_SEND_TIMEOUT_MS,
    );
  }

  /** A server message failed: one MessageError for it. */
  error(messageId: Uint8Array, error: string): void {
    void this.sendSystem(
      "MessageError",
      anyPack(MessageErrorDataSchema, create(MessageErrorDataSchema, { messageId, error })),
      ACK_SEND_TIMEOUT_MS,
    );
  }

  /** Our labels and installed services; sent at start and after a rekey. */
  sendClientInfo(): Promise<void> {
    const info = create(ClientInfoDataSchema, { labels: this.deps.labels, services: this.deps.serviceIds() });
    return this.sendSystem("ClientInfo", anyPack(ClientInfoDataSchema, info), CLIENT_INFO_SEND_TIMEOUT_MS);
  }

  private sendSystem(messageType: string, data: Any, timeoutMs: number): Promise<void> {
    return sendToSystem(this.ctx, messageType, data, this.deps.log, { priority: Message_Priority.HIGH, timeoutMs });
  }


  /** Adds the server's revoked certificate serials to the state; failures are logged only. */
  async refreshRevokedCertificates(): Promise<void> {
    let body: Buffer;
    try {
      body = await this.deps.fetchRevokedCertificates();
    } catch (e) {
      this.deps.log.debug({ err: (e as Error).message }, "no revoked-certificate list");
      return;
    }
    if (body.length === 0) return;
    try {
      const list = fromBinary(RevokedCertificateListSchema, body);
      if (this.deps.state.addRevokedSerials(list.serials)) {
        this.deps.log.info({ count: list.serials.length }, "revoked server certificate serials updated");
        this.deps.revokedChanged();
      }
    } catch (e) {
      this.deps.log.warn({ err: (e as Error).message }, "RevokedCertificates is not a fleetspeak.RevokedCertificateList");
    }
  }
}
