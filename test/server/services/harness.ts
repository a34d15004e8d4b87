// What the service tests share: a real SQLite store in a temporary directory, clients in it, the
// messages those clients send, and a logger whose lines the test can read.
import { randomBytes } from "node:crypto";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { clientMessageId } from "../../../src/common/ids.js";
import type { Logger } from "../../../src/common/log.js";
import { type Label, type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import type { Store } from "../../../src/server/store/store.js";
import { openBackend, openTestStore, type TestStore } from "../../support/stores.js";

export { openBackend, openTestStore, type TestStore };

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A pino logger that keeps its lines for the test to inspect. */
export function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}


/** A store whose backend can be swapped, to take the database away and bring it back. */
export function switchableStore(initial: Store): { store: Store; set(s: Store): void } {
  let target = initial;
  const store = new Proxy({} as Store, {
    get(_, prop) {
      const v = (target as unknown as Record<string | symbol, unknown>)[prop];
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { store, set: (s) => (target = s) };
}

export interface TestClient {
  id: Uint8Array;
  contactId: string;
}

export async function addClient(
  store: Store,
  opts: { labels?: Label[]; blacklisted?: boolean } = {},
): Promise<TestClient> {
  const id = randomBytes(8);
  await store.addClient(id, { key: randomBytes(91), labels: opts.labels ?? [], blacklisted: false });
  if (opts.blacklisted) await store.blacklistClient(id);
  const contactId = await store.recordClientContact({
    clientId: id,
    sentNonce: 1n,
    receivedNonce: 2n,
    address: "192.0.2.1:1234",
  });
  return { id, contactId };
}

/** A message as the frontend hands it over: validated, its ID derived from the client's. */
export function fromClient<Desc extends DescMessage>(
  clientId: Uint8Array,
  service: string,
  messageType: string,
  schema: Desc,
  payload: MessageShape<Desc>,
): Message {
  const sourceMessageId = randomBytes(16);
  return create(MessageSchema, {
    messageId: clientMessageId(clientId, service, sourceMessageId),
    source: { clientId, serviceName: service },
    sourceMessageId,
    destination: { serviceName: service },
    messageType,
    data: anyPack(schema, payload),
    validationInfo: { tags: { os: "linux" } },
  });
}

/**
 * Polls `check` until it returns true. After `timeoutMs` it fails with `explain()`, so that a stuck
 * test says what it was waiting for instead of only timing out.
 */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  opts: { timeoutMs?: number; explain?: () => string } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met in time: ${opts.explain?.() ?? ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
