// The client's network side against a spec-conformant test frontend (real TLS, real sockets):
// streaming and polling, acks, tokens, failover, server restarts, compression, header mode,
// certificate checks, and the system service's Die / Rekey / RestartService.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { type RunningClient, startClient } from "../../src/client/main.js";
import { createCa } from "../../src/common/certs.js";
import {
  ClientInfoDataSchema,
  DieRequestSchema,
  MessageErrorDataSchema,
  RestartServiceRequestSchema,
  RevokedCertificateListSchema,
} from "../../src/gen/fleetspeak/system_pb.js";
import { ClientStateSchema } from "../../src/gen/fleetspeak_client/client_pb.js";
import { InputMessageSchema, OutputMessageSchema } from "../../src/gen/fleetspeak_stdinservice/messages_pb.js";
import { keyToSec1Der, generateP256Key } from "../../src/common/certs.js";
import { FakeFrontend } from "./support/fake-frontend.js";
import { type ClientConfigOptions, captureLogger, until, writeClientConfig } from "./support/client-env.js";

const ca = createCa("test");
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const CAT_SERVICE = `name: "Cat"
factory: "Stdin"
config: { [type.googleapis.com/fleetspeak.stdinservice.Config]: { cmd: "/bin/cat" } }
`;
const NOOP_SERVICE = `name: "Sink" factory: "NOOP"`;

async function frontend(opts: Partial<Parameters<typeof FakeFrontend.start>[0]> = {}): Promise<FakeFrontend> {
  const ff = await FakeFrontend.start({ ca, ...opts });
  cleanups.push(() => ff.stop());
  return ff;
}

async function client(
  opts: Partial<ClientConfigOptions> & { servers: string[] },
): Promise<{ client: RunningClient; logs: ReturnType<typeof captureLogger>; configFile: string }> {
  const files = writeClientConfig({
    ca,
    textServices: { "cat.service": CAT_SERVICE, "sink.service": NOOP_SERVICE },
    ...opts,
  });
  const logs = captureLogger();
  const c = await startClient({ configFile: files.configFile, log: logs.log });
  cleanups.push(() => c.stop());
  return { client: c, logs, configFile: files.configFile };
}

function catInput(ff: FakeFrontend, clientId: string, text: string) {
  return ff.send(
    clientId,
    "Cat",
    "StdinServiceInputMessage",
    anyPack(InputMessageSchema, create(InputMessageSchema, { input: Buffer.from(text) })),
  );
}

async function catOutput(ff: FakeFrontend, text: string): Promise<void> {
  await ff.waitFor((r) => {
    if (r.message.messageType !== "StdinServiceOutputMessage" || !r.message.data) return false;
    return Buffer.from(anyUnpack(r.message.data, OutputMessageSchema)!.stdout).toString() === text;
  }, 20_000, `Cat output "${text}"`);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

for (const streaming of [true, false]) {
  describe(streaming ? "streaming client" : "polling client", () => {
    it("announces labels, tokens for every service incl. system, and ClientInfo", async () => {
      const ff = await frontend();
      const { client: c } = await client({ servers: [ff.address], streaming, labels: ["grr-test", " "] });
      const info = await ff.waitFor((r) => r.message.messageType === "ClientInfo");
      assert.equal(info.clientId, c.clientId);
      assert.equal(info.message.source?.serviceName, "system");
      assert.equal(info.message.priority, 2, "HIGH");
      assert.equal(info.message.background, true);
      const data = anyUnpack(info.message.data!, ClientInfoDataSchema)!;
      assert.deepEqual(
        data.labels.map((l) => `${l.serviceName}:${l.label}`),
        ["client:amd64", "client:linux", "client:grr-test"].map((l) =>
          l.replace("amd64", process.arch === "x64" ? "amd64" : process.arch),
        ),
      );
      assert.deepEqual(data.services.map((s) => s.name).sort(), ["Cat", "Sink"]);
      const first = ff.contacts[0]!;
      assert.deepEqual(first.labels.slice(2), ["grr-test"]);
      assert.equal(first.allowed.system, 100n);
      assert.equal(first.streaming, false, "the first frame of a stream carries absolute tokens, like a poll");
      // A poll can go out before the services are installed (as in Fleetspeak); a later one lists them.
      await ff.until(
        () => ff.contacts.some((x) => x.allowed.Cat === 100n && x.allowed.Sink === 100n && x.allowed.system === 100n),
        10_000,
        "a contact announcing every service",
      );
      assert.deepEqual(ff.violations, []);
    });

    it("runs server messages through a service, sends its answer and acknowledges", async () => {
      const ff = await frontend();
      const { client: c } = await client({ servers: [ff.address], streaming });
      await ff.waitFor((r) => r.message.messageType === "ClientInfo");
      const m = catInput(ff, c.clientId, "hello fleetspeak");
      await catOutput(ff, "hello fleetspeak");
      await until(() => ff.ackedIds().has(hex(m.messageId)), 10_000, "MessageAck");
      const ack = ff.received.find((r) => r.message.messageType === "MessageAck")!;
      assert.equal(ack.message.priority, 2);
      assert.equal(ack.message.background, true);
      assert.deepEqual(ff.violations, []);
    });

    it("reports a failing message with MessageError", async () => {
      const ff = await frontend();
      const { client: c } = await client({ servers: [ff.address], streaming });
      await ff.waitFor((r) => r.message.messageType === "ClientInfo");
      const m = ff.send(c.clientId, "Cat", "NotAnInput");
      const err = await ff.waitFor((r) => r.message.messageType === "MessageError");
      const data = anyUnpack(err.message.data!, MessageErrorDataSchema)!;
      assert.equal(hex(data.messageId), hex(m.messageId));
      assert.match(data.error, /StdinServiceInputMessage/);
    });

    it("fails over to the next server and keeps using the one that works", async () => {
      const broken = await frontend({ streamingStatus: 503 });
      const good = await frontend();
      const brokenAddress = broken.address;
      await broken.stop(); // nothing listens there any more
      const { client: c } = await client({ servers: [brokenAddress, good.address], streaming });
      await good.waitFor((r) => r.message.messageType === "ClientInfo");
      catInput(good, c.clientId, "via the second server");
      await catOutput(good, "via the second server");
    });

    it("survives a server restart: unacknowledged messages are sent again", async () => {
      const ff = await frontend();
      const { client: c } = await client({ servers: [ff.address], streaming });
      await ff.waitFor((r) => r.message.messageType === "ClientInfo");
      const port = ff.port;
      await ff.stop();
      const again = await frontend({ port });
      catInput(again, c.clientId, "after the restart");
      await catOutput(again, "after the restart");
      assert.deepEqual(again.violations, []);
    });
  });
}

describe("streaming details", () => {
  it("honours tokens: 150 messages for one service all arrive and are acknowledged", async () => {
    const ff = await frontend();
    const { client: c } = await client({ servers: [ff.address] });
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    const sent = Array.from({ length: 150 }, () => ff.send(c.clientId, "Sink", "Anything"));
    await until(() => sent.every((m) => ff.ackedIds().has(hex(m.messageId))), 20_000, "all 150 acked");
    const later = ff.contacts.filter((x) => x.clientId === c.clientId && x.streaming);
    assert.ok(
      later.some((x) => (x.allowed.Sink ?? 0n) > 0n),
      "later frames give back the processed messages as token deltas",
    );
  });

  it("reconnects at once after done_sending", async () => {
    const ff = await frontend({ doneSendingAfterMs: 300 });
    await client({ servers: [ff.address] });
    await ff.until(() => ff.contacts.filter((x) => !x.streaming).length >= 3, 20_000, "three connections");
  });

  it("compresses the stream with deflate when communicator.txt asks for it", async () => {
    const ff = await frontend();
    const { client: c } = await client({
      servers: [ff.address],
      communicator: "compression: COMPRESSION_DEFLATE\nmin_failure_delay_seconds: 1\n",
    });
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    catInput(ff, c.clientId, "compressed");
    await catOutput(ff, "compressed");
    assert.equal(ff.requestHeaders[0]!["content-encoding"], "deflate");
  });

  it("compressed polls work too", async () => {
    const ff = await frontend();
    const { client: c } = await client({
      servers: [ff.address],
      streaming: false,
      communicator: "compression: COMPRESSION_DEFLATE\nmax_poll_delay_seconds: 1\n",
    });
    catInput(ff, c.clientId, "compressed poll");
    await catOutput(ff, "compressed poll");
  });

  it("sends the certificate in client_certificate_header when configured", async () => {
    const ff = await frontend({ certificateHeader: "X-Client-Cert" });
    const { client: c } = await client({ servers: [ff.address], certificateHeader: "X-Client-Cert" });
    const info = await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    assert.equal(info.clientId, c.clientId);
  });

  it("goes through the configured HTTP proxy with CONNECT", async () => {
    const ff = await frontend();
    const tunnels: string[] = [];
    const proxy = createHttpServer();
    proxy.on("connect", (req: IncomingMessage, socket: Socket, head: Buffer) => {
      tunnels.push(String(req.url));
      const [host, port] = String(req.url).split(":");
      const upstream = connect(Number(port), host, () => {
        socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on("error", () => socket.destroy());
      socket.on("error", () => upstream.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          proxy.closeAllConnections();
          proxy.close(() => r());
        }),
    );
    const { client: c } = await client({
      servers: [ff.address],
      proxy: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    });
    catInput(ff, c.clientId, "through the proxy");
    await catOutput(ff, "through the proxy");
    assert.ok(tunnels.includes(ff.address), `tunnels: ${tunnels.join(", ")}`);
  });

  it("uses server_name for the certificate check instead of the dialled address", async () => {
    const ff = await frontend({ hosts: ["fleetspeak.test"] });
    await client({ servers: [ff.address], serverName: "fleetspeak.test" });
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
  });
});

describe("server certificate checks", () => {
  it("refuses a server whose certificate is not from trusted_certs, and says why", async () => {
    const otherCa = createCa("other");
    const ff = await FakeFrontend.start({ ca: otherCa });
    cleanups.push(() => ff.stop());
    const { logs, configFile } = await client({ servers: [ff.address] });
    await until(() => logs.text().includes("not signed by any CA in trusted_certs"), 10_000, "refusal log line");
    assert.ok(logs.text().includes(configFile), "the log line names the config file");
    assert.equal(ff.contacts.length, 0);
  });

  it("refuses a server whose certificate name does not match", async () => {
    const ff = await frontend({ hosts: ["elsewhere.test"] });
    const { logs } = await client({ servers: [ff.address] });
    await until(() => logs.text().includes("certificate for another name"), 10_000, "name mismatch log line");
    assert.equal(ff.contacts.length, 0);
  });

  it("refuses a server whose certificate serial is revoked", async () => {
    const ff = await frontend();
    const files = writeClientConfig({ ca, servers: [ff.address] });
    const serial = Buffer.from(ff.serverCert.cert.serialNumber, "hex");
    writeFileSync(
      files.stateFile,
      toBinary(
        ClientStateSchema,
        create(ClientStateSchema, { clientKey: keyToSec1Der(generateP256Key()), revokedCertSerials: [serial] }),
      ),
    );
    const logs = captureLogger();
    const c = await startClient({ configFile: files.configFile, log: logs.log });
    cleanups.push(() => c.stop());
    await until(() => logs.text().includes("certificate revoked"), 10_000, "revocation log line");
    assert.equal(ff.contacts.length, 0);
  });

  it("learns revoked serials from /files/system/RevokedCertificates", async () => {
    const ff = await frontend();
    ff.files.set(
      "/files/system/RevokedCertificates",
      Buffer.from(
        toBinary(
          RevokedCertificateListSchema,
          create(RevokedCertificateListSchema, { serials: [Buffer.from(ff.serverCert.cert.serialNumber, "hex")] }),
        ),
      ),
    );
    const { logs } = await client({ servers: [ff.address], streaming: false });
    await until(() => logs.text().includes("certificate revoked"), 20_000, "revocation after the file fetch");
  });
});

describe("system service", () => {
  it("Die ends the client with exit code 7 and is not acknowledged", async () => {
    const ff = await frontend();
    const { client: c } = await client({ servers: [ff.address] });
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    const die = ff.send(c.clientId, "system", "Die", anyPack(DieRequestSchema, create(DieRequestSchema, {})));
    const exit = await c.exitRequested;
    assert.equal(exit.code, 7);
    assert.equal(exit.force, false);
    assert.equal(ff.ackedIds().has(hex(die.messageId)), false);
  });

  it("RekeyRequest gives a new ClientID, announced with ClientInfo, and the rekey is acked", async () => {
    const ff = await frontend();
    const { client: c } = await client({ servers: [ff.address], streaming: false });
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    const oldId = c.clientId;
    const rekey = ff.send(oldId, "system", "RekeyRequest");
    await ff.waitFor((r) => r.message.messageType === "ClientInfo" && r.clientId !== oldId);
    assert.notEqual(c.clientId, oldId);
    await until(() => ff.ackedIds().has(hex(rekey.messageId)), 10_000, "ack of the RekeyRequest");
  });

  it("RestartService restarts a service; an unknown one yields MessageError", async () => {
    const ff = await frontend();
    const { client: c, logs } = await client({ servers: [ff.address] });
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    const ok = ff.send(
      c.clientId,
      "system",
      "RestartService",
      anyPack(RestartServiceRequestSchema, create(RestartServiceRequestSchema, { name: "Cat" })),
    );
    await until(() => ff.ackedIds().has(hex(ok.messageId)), 10_000, "ack of RestartService");
    assert.ok(logs.text().includes("server asked to restart a service"));
    ff.send(
      c.clientId,
      "system",
      "RestartService",
      anyPack(RestartServiceRequestSchema, create(RestartServiceRequestSchema, { name: "Nope" })),
    );
    const err = await ff.waitFor((r) => r.message.messageType === "MessageError");
    assert.match(anyUnpack(err.message.data!, MessageErrorDataSchema)!.error, /not installed/);
  });
});
