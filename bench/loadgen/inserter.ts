// The integrator's side of the push benchmark: InsertMessage calls at a fixed rate (open loop, as
// GRR sends work regardless of how the last call went), each message carrying the time its call
// started, addressed round-robin to the connected clients.
import { setMaxListeners } from "node:events";
import { create, toBinary } from "@bufbuild/protobuf";
import { type Message as FleetspeakMessage, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { GrpcUnaryClient } from "../../src/server/services/grpc-unary-client.js";
import { nowMs, PROBE_TYPE_URL, probePayload } from "./wire.js";

/** What the inserter needs of an Admin API client. */
export interface MessageInserter {
  insertMessage(m: FleetspeakMessage): Promise<unknown>;
}

/**
 * An InsertMessage caller on one plaintext HTTP/2 connection with the project's lean gRPC client
 * (the one the GRPC service forwards with): connect-node's client cost the benchmark process
 * ~0.5 ms of CPU per call, on the same 2 cores as the servers it measures.
 */
export type LeanAdmin = MessageInserter & { close(): void };

export function leanAdmin(address: string): LeanAdmin {
  const grpc = new GrpcUnaryClient({ baseUrl: `http://${address}` });
  const never = new AbortController().signal;
  setMaxListeners(0, never);
  return {
    insertMessage: (m) => grpc.call("/fleetspeak.server.Admin/InsertMessage", toBinary(MessageSchema, m), never),
    close: () => grpc.close(),
  };
}

export interface InsertPlan {
  /** Calls go round-robin over these (several admin servers, or connections). */
  admins: MessageInserter[];
  clientIds: Uint8Array[];
  /** Destination service on the client. */
  service: string;
  /** Calls per second. */
  rate: number;
  /** Total calls. */
  count: number;
  /** Calls in flight at most; beyond that the schedule slips (reported as `slipped`). */
  maxInFlight?: number;
  payloadBytes?: number;
}

export interface InsertOutcome {
  issued: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  /** How long each successful InsertMessage call took, ms. */
  callMs: number[];
  /** Calls started later than their slot because maxInFlight were running. */
  slipped: number;
  seconds: number;
}

export async function insertAtRate(plan: InsertPlan): Promise<InsertOutcome> {
  const out: InsertOutcome = { issued: 0, ok: 0, failed: 0, errors: {}, callMs: [], slipped: 0, seconds: 0 };
  const maxInFlight = plan.maxInFlight ?? 1000;
  let inFlight = 0;
  const started = nowMs();
  const calls: Promise<void>[] = [];
  const one = async (seq: number): Promise<void> => {
    const admin = plan.admins[seq % plan.admins.length]!;
    const clientId = plan.clientIds[seq % plan.clientIds.length]!;
    const t0 = nowMs();
    const msg = create(MessageSchema, {
      source: { serviceName: plan.service },
      destination: { clientId, serviceName: plan.service },
      messageType: "BenchProbe",
      data: { typeUrl: PROBE_TYPE_URL, value: probePayload(t0, seq, plan.payloadBytes) },
    });
    inFlight++;
    try {
      await admin.insertMessage(msg);
      out.ok++;
      out.callMs.push(nowMs() - t0);
    } catch (e) {
      out.failed++;
      const key = (e as Error).message.slice(0, 120);
      out.errors[key] = (out.errors[key] ?? 0) + 1;
    } finally {
      inFlight--;
    }
  };
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const due = Math.min(plan.count, Math.floor(((nowMs() - started) / 1000) * plan.rate));
      while (out.issued < due) {
        if (inFlight >= maxInFlight) {
          out.slipped++;
          break;
        }
        calls.push(one(out.issued++));
      }
      if (out.issued >= plan.count) {
        clearInterval(tick);
        resolve();
      }
    }, 2);
  });
  await Promise.all(calls);
  out.seconds = (nowMs() - started) / 1000;
  return out;
}
