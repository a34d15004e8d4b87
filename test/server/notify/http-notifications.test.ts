// The notification protocol between servers: the listener answers whether it holds the client's
// stream (x-fleetspeak-stream: held / absent), and the notifier passes that answer on; a server
// that sends no such header (Fleetspeak's Go frontends) answers "cannot say".
import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { bytesToHex } from "../../../src/common/ids.js";
import { createLogger } from "../../../src/common/log.js";
import { HttpNotificationListener } from "../../../src/server/notify/http-listener.js";
import { HttpNotifier, LocalNotifier } from "../../../src/server/notify/http-notifier.js";
import { LOCAL_NOTIFICATION_ADDRESS, STREAM_PRESENCE_HEADER } from "../../../src/server/notify/notifier.js";

const HELD = Buffer.from("0123456789abcdef", "hex");
const ABSENT = Buffer.from("fedcba9876543210", "hex");

function post(address: string, path: string): Promise<{ status: number; presence: string | string[] | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(`http://${address}${path}`, { method: "POST", headers: { "content-length": "0" } }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, presence: res.headers[STREAM_PRESENCE_HEADER] }));
    });
    req.on("error", reject);
    req.end();
  });
}

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

  before(async () => {
    listener = new HttpNotificationListener({ listenAddress: "127.0.0.1:0", logger: createLogger("notify-test") });
    await listener.start((id) => {
      woken.push(bytesToHex(id));
      return bytesToHex(id) === bytesToHex(HELD);
    });
  });
  after(async () => {
    notifier.close();
    await listener.stop();
  });

  it("the listener answers 200 with x-fleetspeak-stream: held or absent", async () => {
    assert.deepEqual(await post(listener.boundAddress, `/client/${bytesToHex(HELD)}`), { status: 200, presence: "held" });
    assert.deepEqual(await post(listener.boundAddress, `/client/${bytesToHex(ABSENT)}`), {
      status: 200,
      presence: "absent",
    });
  });

  it("the listener says nothing about streams when it refuses a notification", async () => {
    assert.deepEqual(await post(listener.boundAddress, "/client/xyz"), { status: 400, presence: undefined });
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
});
