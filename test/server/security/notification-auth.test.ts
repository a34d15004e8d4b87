// Signed notifications (Config.notification_shared_secret): the listener refuses unsigned, badly
// signed and stale notifications with 401 and does not wake the stream; the real path (an admin
// server's InsertMessage notifying the frontend that holds the stream, both with the secret)
// still delivers at once.
import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createLogger } from "../../../src/common/log.js";
import { MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { HttpNotificationListener } from "../../../src/server/notify/http-listener.js";
import { HttpNotifier } from "../../../src/server/notify/http-notifier.js";
import {
  NOTIFICATION_MAX_SKEW_SECONDS,
  NotificationSigner,
  NotificationVerifier,
} from "../../../src/server/security/notification-auth.js";
import { checkSecurityConfig } from "../../../src/server/security/security-config.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../../src/gen/fleetspeak_components/config_pb.js";
import { randomMessageId } from "../../../src/common/ids.js";
import { createTestDatabase, type TestDatabase } from "../../support/mariadb.js";
import { RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { testServerPki } from "../../support/tls.js";

const SECRET = "7c1d0f6b0b3e4a8f9e2d5c4b3a291807";
const OTHER = "a-different-secret-of-32-bytes!!";
const logger = createLogger("notification-auth-test");

function post(address: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`http://${address}${path}`, { method: "POST", headers: { "content-length": "0", ...headers } }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("notification signatures", () => {
  const path = "/client/0123456789abcdef";

  it("accept what the signer signed, with any of the verifier's secrets", () => {
    const header = new NotificationSigner(SECRET).authorization("POST", path);
    assert.match(header, /^Fleetspeak-HMAC-SHA256 t=\d+, mac=[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(new NotificationVerifier([SECRET]).verify("POST", path, header), { ok: true });
    // During a rotation: the new secret first (it signs), the old one still accepted.
    assert.deepEqual(new NotificationVerifier([OTHER, SECRET]).verify("POST", path, header), { ok: true });
  });

  it("refuse another secret, another path or method, a missing or malformed header", () => {
    const v = new NotificationVerifier([SECRET]);
    const header = new NotificationSigner(SECRET).authorization("POST", path);
    const refused = (r: ReturnType<typeof v.verify>) => (r.ok ? "" : r.reason);
    assert.match(refused(v.verify("POST", path, new NotificationSigner(OTHER).authorization("POST", path))), /does not match/);
    assert.match(refused(v.verify("POST", "/client/fedcba9876543210", header)), /does not match/);
    assert.match(refused(v.verify("GET", path, header)), /does not match/);
    assert.match(refused(v.verify("POST", path, undefined)), /no Authorization header/);
    assert.match(refused(v.verify("POST", path, "Bearer abc")), /is not "Fleetspeak-HMAC-SHA256/);
    assert.match(refused(v.verify("POST", path, `${header}x`)), /is not "Fleetspeak-HMAC-SHA256/);
  });

  it("refuse signatures outside the clock-skew window, either way, naming the skew", () => {
    const v = new NotificationVerifier([SECRET]);
    const s = new NotificationSigner(SECRET);
    const now = Date.now();
    const window = NOTIFICATION_MAX_SKEW_SECONDS * 1000;
    assert.equal(v.verify("POST", path, s.authorization("POST", path, now - window + 2000), now).ok, true);
    const stale = v.verify("POST", path, s.authorization("POST", path, now - window - 2000), now);
    assert.ok(!stale.ok && /-30\d s from this server's clock/.test(stale.reason), JSON.stringify(stale));
    const early = v.verify("POST", path, s.authorization("POST", path, now + window + 2000), now);
    assert.ok(!early.ok && /30\d s from this server's clock/.test(early.reason), JSON.stringify(early));
  });

  it("config: short secrets are refused; an open listener on a routable address is warned about", () => {
    const short = create(ComponentsConfigSchema, { notificationSharedSecret: ["too-short"] });
    assert.throws(() => checkSecurityConfig(short), /notification_shared_secret #1 is shorter than 16 bytes.*openssl rand -hex 32/);
    const open = create(ComponentsConfigSchema, { notificationListenAddress: "0.0.0.0:8080" });
    assert.match(checkSecurityConfig(open).warnings.join("\n"), /notification_listen_address: anyone who can reach 0\.0\.0\.0:8080/);
    const signed = create(ComponentsConfigSchema, { notificationListenAddress: "0.0.0.0:8080", notificationSharedSecret: [SECRET] });
    assert.deepEqual(checkSecurityConfig(signed).warnings, []);
  });
});

describe("notification listener with a shared secret", () => {
  let listener: HttpNotificationListener;
  const woken: string[] = [];

  before(async () => {
    listener = new HttpNotificationListener({
      listenAddress: "127.0.0.1:0",
      logger,
      verifier: new NotificationVerifier([SECRET]),
    });
    await listener.start((id) => {
      woken.push(Buffer.from(id).toString("hex"));
      return true;
    });
  });
  after(() => listener.stop());

  it("answers 401 to an unsigned or wrongly signed POST and wakes nobody", async () => {
    const path = "/client/0123456789abcdef";
    const unsigned = await post(listener.boundAddress, path);
    assert.equal(unsigned.status, 401);
    assert.match(unsigned.body, /no Authorization header/);
    const forged = await post(listener.boundAddress, path, {
      authorization: new NotificationSigner(OTHER).authorization("POST", path),
    });
    assert.equal(forged.status, 401);
    // Every path is guarded, not just well-formed ones.
    assert.equal((await post(listener.boundAddress, "/other")).status, 401);
    assert.deepEqual(woken, []);
  });

  it("accepts what HttpNotifier sends with the same secret", async () => {
    const notifier = new HttpNotifier({ signer: new NotificationSigner(SECRET) });
    await notifier.newMessageForClient(listener.boundAddress, Buffer.from("0123456789abcdef", "hex"));
    notifier.close();
    assert.deepEqual(woken, ["0123456789abcdef"]);
  });

  it("reports a notifier without the secret as refused (HTTP 401)", async () => {
    const notifier = new HttpNotifier();
    await assert.rejects(
      notifier.newMessageForClient(listener.boundAddress, Buffer.from("0123456789abcdef", "hex")),
      /answered HTTP 401/,
    );
    notifier.close();
  });
});

describe("signed notifications between a frontend and an admin server (shared MariaDB)", () => {
  let db: TestDatabase;
  let frontend: TestServer;
  let adminServer: TestServer;

  before(async () => {
    db = await createTestDatabase();
    const pki = testServerPki();
    // Mid-rotation: the frontend already knows the new secret and still accepts the old one,
    // which the admin server still signs with.
    frontend = await startTestServer({
      components: {
        mysqlDataSourceName: db.dsn,
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        notificationListenAddress: "127.0.0.1:0",
        notificationSharedSecret: [OTHER, SECRET],
      },
      // No due-message sweep during the test: only notifications make the stream fetch.
      overrides: { sweepIntervalMs: 60_000 },
    });
    adminServer = await startTestServer({
      components: {
        mysqlDataSourceName: db.dsn,
        adminConfig: { listenAddress: "127.0.0.1:0" },
        notificationUseHttpNotifier: true,
        notificationSharedSecret: [SECRET],
      },
    });
  });
  after(async () => {
    await adminServer?.stop();
    await frontend?.stop();
    await db?.drop();
  });

  it("an unsigned POST /client/<id> gets 401 and does not wake the stream; InsertMessage on the admin server delivers at once", async () => {
    const client = new RawClient({ host: "127.0.0.1", port: frontend.port, ca: frontend.caPem });
    const stream = await client.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
    try {
      // A message stored without a notification: only a notification makes the stream fetch it.
      const stored = create(MessageSchema, {
        messageId: randomMessageId(),
        source: { serviceName: "TestService" },
        destination: { clientId: client.clientId, serviceName: "TestService" },
        messageType: "Stored",
        creationTime: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
      });
      await frontend.server.store.storeMessages([stored]);
      const refused = await post(frontend.server.notificationAddress!, `/client/${client.clientIdHex}`);
      assert.equal(refused.status, 401);
      await assert.rejects(stream.next(1500), /no frame within 1500 ms/);

      await adminServer.admin.insertMessage({
        messageId: randomMessageId(),
        source: { serviceName: "TestService" },
        destination: { clientId: client.clientId, serviceName: "TestService" },
        messageType: "Pushed",
      });
      // Both go out at once: Pushed as its notification carried it, then Stored, which the
      // notification also makes due for fetching (in the same frame or the next).
      const types: string[] = [];
      while (!types.includes("Pushed") || !types.includes("Stored")) {
        const frame = await stream.next(5000);
        assert.ok(frame, "stream ended");
        types.push(...frame.messages.map((m) => m.messageType));
      }
      assert.deepEqual(types.sort(), ["Pushed", "Stored"]);
    } finally {
      stream.close();
    }
  });
});
