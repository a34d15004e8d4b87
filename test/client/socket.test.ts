// The Socket service: a peer process connects to the client's Unix socket and speaks the channel;
// the client forwards its messages, acknowledges them with LocalAck once the server has them,
// delivers server messages to it, and accepts one peer at a time.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, statSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { startClient } from "../../src/client/main.js";
import { createCa } from "../../src/common/certs.js";
import { ChannelFrameDecoder, encodeChannelFrame, MAGIC_BYTES } from "../../src/common/framing.js";
import { AddressSchema, type Message, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { MessageAckDataSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { StartupDataSchema } from "../../src/gen/fleetspeak_channel/channel_pb.js";
import { captureLogger, tempDir, until, writeClientConfig } from "./support/client-env.js";
import { FakeFrontend } from "./support/fake-frontend.js";

const ca = createCa("test");
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A socket-service peer written from the channel spec. */
class Peer {
  readonly received: Message[] = [];
  private readonly socket: Socket;
  private readonly decoder = new ChannelFrameDecoder("peer");
  readonly ready: Promise<void>;

  constructor(path: string) {
    this.socket = connect(path);
    this.ready = new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
    this.socket.on("data", (b: Buffer) => {
      for (const f of this.decoder.push(b)) this.received.push(fromBinary(MessageSchema, f));
    });
    this.socket.on("error", () => {});
    this.socket.write(MAGIC_BYTES);
    this.write(
      create(MessageSchema, {
        messageType: "StartupData",
        destination: create(AddressSchema, { serviceName: "system" }),
        data: anyPack(StartupDataSchema, create(StartupDataSchema, { pid: BigInt(process.pid), version: "peer-1" })),
      }),
    );
  }

  write(m: Message): void {
    this.socket.write(encodeChannelFrame(toBinary(MessageSchema, m)));
  }

  send(type: string, id: string): void {
    this.write(
      create(MessageSchema, {
        messageType: type,
        sourceMessageId: Buffer.from(id.padEnd(16, "-")),
        destination: create(AddressSchema, { serviceName: "PeerService" }),
      }),
    );
  }

  localAcks(): string[] {
    return this.received
      .filter((m) => m.messageType === "LocalAck" && m.source?.serviceName === "client")
      .flatMap((m) => anyUnpack(m.data!, MessageAckDataSchema)!.messageIds.map((id) => Buffer.from(id).toString()));
  }

  close(): void {
    this.socket.destroy();
  }
}

async function setup(socketPath: string) {
  const ff = await FakeFrontend.start({ ca });
  cleanups.push(() => ff.stop());
  const files = writeClientConfig({
    ca,
    servers: [ff.address],
    textServices: {
      "peer.service": `name: "Peer" factory: "Socket"
config { [type.googleapis.com/fleetspeak.socketservice.Config] { api_proxy_path: ${JSON.stringify(socketPath)} } }`,
    },
  });
  const logs = captureLogger();
  const client = await startClient({ configFile: files.configFile, log: logs.log });
  cleanups.push(() => client.stop());
  return { ff, client, logs };
}

describe("Socket service", () => {
  it("creates the socket 0600 in a 0700 directory and relays both ways with LocalAcks", async () => {
    const path = join(tempDir(), "sock", "peer.sock");
    const { ff, client } = await setup(path);
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    assert.equal((statSync(path).mode & 0o777).toString(8), "600");
    assert.equal((statSync(join(path, "..")).mode & 0o777).toString(8), "700");

    const peer = new Peer(path);
    cleanups.push(async () => peer.close());
    await peer.ready;
    peer.send("FromPeer", "msg-1");
    peer.send("FromPeer", "msg-2");
    await ff.until(() => ff.received.filter((r) => r.message.messageType === "FromPeer").length === 2, 10_000, "peer messages");
    const fwd = ff.received.find((r) => r.message.messageType === "FromPeer")!;
    assert.equal(fwd.message.source?.serviceName, "Peer");
    assert.equal(ff.received.filter((r) => r.message.messageType === "StartupData").length, 0, "StartupData is not forwarded");
    await until(() => peer.localAcks().length === 2, 10_000, "LocalAcks");
    assert.deepEqual(peer.localAcks().sort(), ["msg-1-----------", "msg-2-----------"]);

    ff.send(client.clientId, "Peer", "ToPeer");
    await until(() => peer.received.some((m) => m.messageType === "ToPeer"), 10_000, "server message at the peer");
  });

  it("serves one peer at a time; the next one gets its turn when the first leaves", async () => {
    const path = join(tempDir(), "sock", "peer.sock");
    const { ff, client } = await setup(path);
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    const first = new Peer(path);
    await first.ready;
    const second = new Peer(path);
    await second.ready;
    cleanups.push(async () => second.close());
    ff.send(client.clientId, "Peer", "ToPeer");
    await until(() => first.received.some((m) => m.messageType === "ToPeer"), 10_000, "first peer served");
    second.send("FromSecond", "second-1");
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(ff.received.filter((r) => r.message.messageType === "FromSecond").length, 0, "second waits");
    first.close();
    await ff.waitFor((r) => r.message.messageType === "FromSecond", 10_000);
  });

  it("refuses to start when the socket directory is open to others", async () => {
    const dir = join(tempDir(), "open");
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const { ff, logs } = await setup(join(dir, "peer.sock"));
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    await until(() => logs.text().includes("it must be 0700"), 5000, "permission complaint");
  });
});
