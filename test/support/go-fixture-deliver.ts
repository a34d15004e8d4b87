// Delivers what a Go fixture's database owes its clients: its machines' clients (Fleetspeak's own
// or ours, on the machines' unchanged config directories and state files) are started against a
// server and run until every due client-bound pending message is processed and has reached the
// machine's daemon, and every active broadcast the machine qualifies for (and has not had) has
// reached it too. Then it checks what must not have happened: a message not yet due delivered, a
// broadcast delivered twice, at its limit or expired, a message received twice, a client that
// came back under another ID. Returns the description updated with what was delivered.
import { adminClient } from "./go-fixture-server.js";
import { type ClientKind, machineState, pointMachineAt, receivedBy, startClient } from "./go-fixture-clients.js";
import { pollUntil } from "./go-fixture-poll.js";
import type { ExpectedBroadcast, ExpectedClient, ExpectedMessage, GoFixtureExpected } from "./go-fixture-types.js";
import { fleetspeakGo } from "./fleetspeak-go.js";
import type { ManagedProcess } from "./processes.js";

export interface DeliverOptions {
  /** The admin server of the server the clients are pointed at. */
  adminAddress: string;
  /** "host:port" written into the machines' client configs (the certificate names localhost). */
  frontend: string;
  /** Whose client runs on the machines; default Fleetspeak's own (Go). */
  client?: ClientKind;
  /** Machines to start (by name); default those owed a message or a broadcast. */
  machines?: string[];
  timeoutMs?: number;
  /**
   * Makes the given pending messages due now, in the database the server runs on. Fleetspeak's
   * client drops messages that arrive before its services have started ("destination service not
   * installed") without acknowledging them, so the server sends them again only when their retry
   * time comes, minutes later; the test brings that time forward and restarts the client.
   */
  makeDue?: (messageIds: string[]) => Promise<void>;
}

const DROPPED = /Unable to process message\[([0-9a-f]+)\] from server: destination service not installed/g;

export interface DeliverResult {
  /** The description with the delivered messages processed and the broadcasts' recipients grown. */
  expected: GoFixtureExpected;
  /** What each started machine's daemon received, in order. */
  received: Record<string, Array<{ messageId: string; messageType: string }>>;
}

interface Owed {
  client: ExpectedClient;
  due: ExpectedMessage[];
  notDue: ExpectedMessage[];
  broadcasts: ExpectedBroadcast[];
}

function owedTo(expected: GoFixtureExpected, c: ExpectedClient): Owed {
  const pending = expected.messages.filter((m) => m.destination.clientId === c.clientId && m.status.kind === "pending");
  return {
    client: c,
    due: pending.filter((m) => m.status.kind === "pending" && m.status.due),
    notDue: pending.filter((m) => m.status.kind === "pending" && !m.status.due),
    broadcasts: expected.broadcasts.filter(
      (b) => b.active && !b.recipients.includes(c.clientId) && b.labels.every((l) => c.labels.includes(l)),
    ),
  };
}

export async function deliverPending(expected: GoFixtureExpected, opts: DeliverOptions): Promise<DeliverResult> {
  const go = fleetspeakGo();
  const kind = opts.client ?? "go";
  const admin = adminClient(opts.adminAddress);
  const owed = expected.clients
    .map((c) => owedTo(expected, c))
    .filter((o) => (opts.machines ? opts.machines.includes(o.client.name) : o.due.length + o.broadcasts.length > 0));
  // What was sent is what went to clients (the sent column lags behind open allocations).
  for (const b of expected.broadcasts) {
    const takers = owed.filter((o) => o.broadcasts.includes(b)).length;
    const room = b.limit - BigInt(b.recipients.length);
    if (BigInt(takers) > room) {
      throw new Error(`broadcast ${b.name} has room for ${room} more, but ${takers} machines would be owed it: choose machines`);
    }
  }

  const seenBefore = new Map(owed.map((o) => [o.client.name, receivedBy(o.client.machine).length]));
  const newlyReceived = (o: Owed) => receivedBy(o.client.machine).slice(seenBefore.get(o.client.name));
  const procs: ManagedProcess[] = [];
  const problems: string[] = [];
  try {
    for (const o of owed) {
      pointMachineAt(o.client.machine, opts.frontend);
      procs.push(startClient(kind, o.client.machine, go));
    }
    // Messages the daemon received whose acknowledgement has not reached the server.
    const unprocessed = async (o: Owed): Promise<string[]> => {
      const open: string[] = [];
      for (const r of newlyReceived(o)) {
        if (!(await admin.getMessageStatus({ messageId: Buffer.from(r.messageId, "hex") })).result) open.push(r.messageId);
      }
      return [...new Set(open)];
    };
    // Received by a client that was restarted before acknowledging them: a second copy is expected.
    const mayRepeat = new Set<string>();
    // Fleetspeak's client drops what arrives before its services have started (its own race):
    // those messages are made due again and the client restarted, once per message seen dropped.
    const handled = new WeakMap<ManagedProcess, Set<string>>();
    const redeliverDropped = async () => {
      if (kind !== "go" || !opts.makeDue) return;
      for (const [i, p] of procs.entries()) {
        const seen = handled.get(p) ?? new Set<string>();
        handled.set(p, seen);
        const ids = [...p.output().matchAll(DROPPED)].map((m) => m[1]!).filter((id) => !seen.has(id));
        if (ids.length === 0) continue;
        for (const id of ids) seen.add(id);
        // What the daemon already received must be acknowledged before the client stops: the
        // server sends an unacknowledged message again only at its retry time, minutes later.
        // Whatever is still unacknowledged after a wait is made due too (and may come twice).
        const unacked = await pollUntil(
          `${p.name}'s acknowledgements before its restart`,
          async () => {
            const open = await unprocessed(owed[i]!);
            return open.length === 0 ? open : false;
          },
          { watch: [p], timeoutMs: 15_000 },
        ).catch(() => unprocessed(owed[i]!));
        for (const id of unacked) mayRepeat.add(id);
        console.log(
          `# ${p.name} dropped ${ids.join(", ")} before its services started (Fleetspeak's client does); made due again` +
            `${unacked.length > 0 ? ` with the unacknowledged ${unacked.join(", ")}` : ""}, client restarted`,
        );
        await p.stop("SIGTERM", 15_000);
        await opts.makeDue([...ids, ...unacked]);
        procs[i] = startClient(kind, owed[i]!.client.machine, go);
      }
    };
    // What is still missing, kept for the timeout's message.
    let missing: string[] = [];
    await pollUntil(
      `delivery to ${owed.map((o) => o.client.name).join(", ")} (${kind} clients)`,
      async () => {
        await redeliverDropped();
        missing = [];
        for (const o of owed) {
          const got = newlyReceived(o);
          for (const m of o.due) {
            if (!got.some((r) => r.messageId === m.messageId)) missing.push(`${o.client.name}: ${m.name} not received`);
            else if (!(await admin.getMessageStatus({ messageId: Buffer.from(m.messageId, "hex") })).result) {
              missing.push(`${o.client.name}: ${m.name} received but not processed`);
            }
          }
          for (const b of o.broadcasts) {
            const copy = got.find((r) => r.messageType === b.messageType);
            if (!copy) missing.push(`${o.client.name}: broadcast ${b.name} not received`);
            else if (!(await admin.getMessageStatus({ messageId: Buffer.from(copy.messageId, "hex") })).result) {
              missing.push(`${o.client.name}: broadcast ${b.name} received but not processed`);
            }
          }
        }
        return missing.length === 0;
      },
      { watch: procs, timeoutMs: opts.timeoutMs ?? 60_000 },
    ).catch((e: Error) => {
      throw new Error(`${e.message}; still missing: ${missing.join("; ")}`);
    });

    for (const o of owed) {
      const got = newlyReceived(o);
      const name = `machine ${o.client.name} (${o.client.clientId})`;
      const ids = got.map((r) => r.messageId);
      const twice = [...new Set(ids)].filter((id) => ids.filter((x) => x === id).length > (mayRepeat.has(id) ? 2 : 1));
      if (twice.length > 0) problems.push(`${name}: received ${twice.join(", ")} more than once`);
      for (const m of o.notDue) {
        if (ids.includes(m.messageId)) problems.push(`${name}: received ${m.messageId} (${m.name}) before it was due`);
        const r = await admin.getMessageStatus({ messageId: Buffer.from(m.messageId, "hex") });
        if (r.result) problems.push(`${name}: ${m.messageId} (${m.name}) has a result before it was due`);
      }
      for (const b of expected.broadcasts) {
        const copies = new Set(got.filter((r) => r.messageType === b.messageType).map((r) => r.messageId)).size;
        const want = o.broadcasts.includes(b) ? 1 : 0;
        if (copies !== want) problems.push(`${name}: received broadcast ${b.name} ${copies} times, want ${want}`);
      }
    }
  } finally {
    for (const p of procs) {
      const code = await p.stop("SIGTERM", 15_000);
      if (code !== 0) problems.push(`${p.name} did not stop cleanly (exit ${code}); its output:\n${p.output().slice(-3000)}`);
    }
  }
  // The identity and the revoked serials survive the client's run (and its writing the file).
  for (const o of owed) {
    const state = machineState(o.client.machine);
    const name = `machine ${o.client.name} (${o.client.clientId})`;
    if (state?.clientId !== o.client.clientId) problems.push(`${name}: its state file now holds client ID ${state?.clientId}`);
    const lost = o.client.state.revokedSerials.filter((x) => !state?.revokedSerials.includes(x));
    if (lost.length > 0) problems.push(`${name}: its state file lost the revoked serials ${lost.join(", ")}`);
  }
  if (problems.length > 0) throw new Error(`delivering the fixture's pending messages:\n- ${problems.join("\n- ")}`);

  const received: DeliverResult["received"] = {};
  for (const o of owed) received[o.client.name] = newlyReceived(o);
  return { expected: afterDelivery(expected, owed, received), received };
}

function afterDelivery(expected: GoFixtureExpected, owed: Owed[], received: DeliverResult["received"]): GoFixtureExpected {
  const delivered = new Set(owed.flatMap((o) => o.due.map((m) => m.messageId)));
  const started = new Set(owed.map((o) => o.client.clientId));
  const copies: ExpectedMessage[] = [];
  const broadcasts = expected.broadcasts.map((b) => {
    const takers = owed.filter((o) => o.broadcasts.includes(b));
    for (const o of takers) {
      const ids = new Set(received[o.client.name]!.filter((x) => x.messageType === b.messageType).map((x) => x.messageId));
      for (const messageId of ids) {
        copies.push({
          name: `broadcast "${b.name}" to ${o.client.name}, after the switch`,
          messageId,
          source: { clientId: "", serviceName: b.sourceService },
          destination: { clientId: o.client.clientId, serviceName: b.destinationService || b.sourceService },
          messageType: b.messageType,
          status: { kind: "processed" },
        });
      }
    }
    const recipients = [...b.recipients, ...takers.map((o) => o.client.clientId)];
    return { ...b, recipients, active: b.active && BigInt(recipients.length) < b.limit };
  });
  return {
    ...expected,
    clients: expected.clients.map((c) => (started.has(c.clientId) ? { ...c, hasContacts: true } : c)),
    messages: [
      ...expected.messages.map((m): ExpectedMessage => (delivered.has(m.messageId) ? { ...m, status: { kind: "processed" } } : m)),
      ...copies,
    ],
    broadcasts,
  };
}
