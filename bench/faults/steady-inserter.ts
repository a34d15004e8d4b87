// The integrator of a fault run: InsertMessage at a steady rate through the admin balancer,
// round-robin over the clients, whatever happens to the servers behind it (open loop, each call
// bounded by a deadline). Each message gets its ID here, so that the ledger can follow it.
import { create, toBinary } from "@bufbuild/protobuf";
import { bytesToHex, randomMessageId } from "../../src/common/ids.js";
import { MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { GrpcUnaryClient } from "../../src/server/services/grpc-unary-client.js";
import { nowMs, PROBE_TYPE_URL, probePayload } from "../loadgen/wire.js";
import type { DeliveryLedger } from "./ledger.js";

const CALL_DEADLINE_MS = 10_000;

/** HTTP/2 connections to the admin balancer, so that its round robin spreads the calls. */
const CONNECTIONS = 4;

export class SteadyInserter {
  private readonly grpc: GrpcUnaryClient[];
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private readonly calls = new Set<Promise<void>>();
  /** Failed calls by error, all run long. */
  readonly errors: Record<string, number> = {};
  /** Calls answered OK, all run long. */
  ok = 0;

  constructor(
    adminAddress: string,
    private readonly clientIds: Uint8Array[],
    private readonly ledger: DeliveryLedger,
    private readonly service = "TestService",
  ) {
    this.grpc = Array.from({ length: CONNECTIONS }, () => new GrpcUnaryClient({ baseUrl: `http://${adminAddress}` }));
  }

  /** Starts inserting `perSecond` messages a second until stop(). */
  start(perSecond: number): void {
    const started = nowMs();
    let issued = 0;
    this.timer = setInterval(() => {
      const due = Math.floor(((nowMs() - started) / 1000) * perSecond);
      while (issued < due) {
        issued++;
        const call = this.insertOne().finally(() => this.calls.delete(call));
        this.calls.add(call);
      }
    }, 5);
  }

  private async insertOne(): Promise<void> {
    const seq = this.seq++;
    const clientId = this.clientIds[seq % this.clientIds.length]!;
    const messageId = randomMessageId();
    const id = bytesToHex(messageId);
    const at = nowMs();
    const m = create(MessageSchema, {
      messageId,
      source: { serviceName: this.service },
      destination: { clientId, serviceName: this.service },
      messageType: "FaultProbe",
      data: { typeUrl: PROBE_TYPE_URL, value: probePayload(at, seq) },
    });
    this.ledger.inserting(id, at);
    try {
      await this.grpc[seq % CONNECTIONS]!.call(
        "/fleetspeak.server.Admin/InsertMessage",
        toBinary(MessageSchema, m),
        AbortSignal.timeout(CALL_DEADLINE_MS),
      );
      this.ledger.insertOk(id);
      this.ok++;
    } catch (e) {
      const key = (e as Error).message.slice(0, 100);
      this.errors[key] = (this.errors[key] ?? 0) + 1;
    }
  }

  /** Stops issuing calls and waits for those under way. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.calls]);
  }

  close(): void {
    for (const g of this.grpc) g.close();
  }
}
