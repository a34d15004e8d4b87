// The notification protocol between servers: the listener answers whether it holds the client's
// stream (x-fleetspeak-stream: held / absent), and the notifier passes that answer on; a server
// that sends no such header (Fleetspeak's Go frontends) answers "cannot say".
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { bytesToHex } from "../../../src/common/ids.js";
import { type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { createLogger } from "../../../src/common/log.js";
import { HttpNotificationListener } from "../../../src/server/notify/http-listener.js";
import { HttpNotifier, LocalNotifier } from "../../../src/server/notify/http-notifier.js";
import { LOCAL_NOTIFICATION_ADDRESS, MAX_CARRIED_MESSAGE_BYTES } from "../../../src/server/notify/notifier.js";
import { clientBoundMessage, postNotification } from "../../support/notify.js";

const HELD = Buffer.from("0123456789abcdef", "hex");
const ABSENT = Buffer.from("fedcba9876543210", "hex");

/** A frontend as Fleetspeak's Go servers are: 200 to every notification, and no presence header. */
async function startGoLikeListener(): Promise<{ server: Server; address: string; received: string[] }> {
  const received: string[] = [];
  const server = createServer((req, res) => {
    received.push(req.url ?? "");
    res.writeHead(200);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

describe("HTTP notifications: whether the stream is held here", () => {
  let listener: HttpNotificationListener;
  const woken: string[] = [];
  const notifier = new HttpNotifier({ timeoutMs: 5_000 });

  const carried: (Message | undefined)[] = [];

  before(async () => {
    listener = new HttpNotificationListener({ listenAddress: "127.0.0.1:0", logger: createLogger("notify-test") });
    await listener.start((id, message) => {
      woken.push(bytesToHex(id));
      carried.push(message);
      return bytesToHex(id) === bytesToHex(HELD);
    });
  });
  after(async () => {
    notifier.close();
    await listener.stop();
  });

  it("the listener answers 200 with x-fleetspeak-stream: held or absent", async () => {
    assert.deepEqual(await postNotification(listener.boundAddress, `/client/${bytesToHex(HELD)}`), { status: 200, presence: "held" });
    assert.deepEqual(await postNotification(listener.boundAddress, `/client/${bytesToHex(ABSENT)}`), {
      status: 200,
      presence: "absent",
    });
  });

  it("the listener says nothing about streams when it refuses a notification", async () => {
    assert.deepEqual(await postNotification(listener.boundAddress, "/client/xyz"), { status: 400, presence: undefined });
  });

  it("the HTTP notifier passes the listener's answer on", async () => {
    assert.equal(await notifier.newMessageForClient(listener.boundAddress, HELD), "held");
    assert.equal(await notifier.newMessageForClient(listener.boundAddress, ABSENT), "absent");
  });

  it("the HTTP notifier answers nothing (cannot say) for a 200 without the header, as from a Go frontend", async () => {
    const go = await startGoLikeListener();
    try {
      assert.equal(await notifier.newMessageForClient(go.address, HELD), undefined);
      assert.deepEqual(go.received, [`/client/${bytesToHex(HELD)}`]);
    } finally {
      await new Promise((resolve) => go.server.close(resolve));
    }
  });

  it("the local notifier answers from the dispatcher, also through the HTTP notifier's 'local' address", async () => {
    const local = new LocalNotifier((id) => bytesToHex(id) === bytesToHex(HELD));
    assert.equal(await local.newMessageForClient(LOCAL_NOTIFICATION_ADDRESS, HELD), "held");
    assert.equal(await local.newMessageForClient(LOCAL_NOTIFICATION_ADDRESS, ABSENT), "absent");
    const http = new HttpNotifier({ local });
    try {
      assert.equal(await http.newMessageForClient(LOCAL_NOTIFICATION_ADDRESS, ABSENT), "absent");
    } finally {
      http.close();
    }
  });

  it("the HTTP notifier carries the new message, and the listener hands it over with the notification", async () => {
    carried.length = 0;
    const m = probe(HELD, 100);
    assert.equal(await notifier.newMessageForClient(listener.boundAddress, HELD, { message: m }), "held");
    assert.equal(carried.length, 1);
    assert.ok(carried[0], "the message came with the notification");
    assert.deepEqual(toBinary(MessageSchema, carried[0]), toBinary(MessageSchema, m));
  });

  it("messages too large to carry go as plain notifications, which still wake the stream", async () => {
    carried.length = 0;
    const big = probe(HELD, MAX_CARRIED_MESSAGE_BYTES + 1);
    assert.equal(await notifier.newMessageForClient(listener.boundAddress, HELD, { message: big }), "held");
    assert.deepEqual(carried, [undefined]);
  });

  it("with notification_without_messages, the notifier sends the client ID only", async () => {
    carried.length = 0;
    const idOnly = new HttpNotifier({ withoutMessages: true });
    try {
      assert.equal(await idOnly.newMessageForClient(listener.boundAddress, HELD, { message: probe(HELD, 10) }), "held");
    } finally {
      idOnly.close();
    }
    assert.deepEqual(carried, [undefined]);
  });

  it("the listener ignores a body that is not a message for that client, and still takes the notification", async () => {
    carried.length = 0;
    const path = `/client/${bytesToHex(HELD)}`;
    assert.equal((await postNotification(listener.boundAddress, path, Buffer.from([0xff, 0xff, 0xff]))).status, 200);
    const forAnother = Buffer.from(toBinary(MessageSchema, probe(ABSENT, 10)));
    assert.deepEqual(await postNotification(listener.boundAddress, path, forAnother), { status: 200, presence: "held" });
    assert.deepEqual(carried, [undefined, undefined]);
    const tooBig = Buffer.alloc(MAX_CARRIED_MESSAGE_BYTES + 1);
    assert.equal((await postNotification(listener.boundAddress, path, tooBig)).status, 413);
  });
});

const probe = (to: Uint8Array, payloadBytes: number) => clientBoundMessage(to, Buffer.alloc(payloadBytes, 7), "GRR");
