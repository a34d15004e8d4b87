// Fuzzing the protobuf bodies clients send (WrappedContactData holding ContactData): first the
// parser alone, fast, then a live server: random and mutated bodies on POST /message and as
// /streaming-message frames never crash it, never make it fail with a 500 (an input is the
// client's fault), and a well-behaved client keeps being served between them.
import assert from "node:assert/strict";
import { Agent, request } from "node:https";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, StringValueSchema, timestampNow } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { encodeStreamFrame, MAGIC_BYTES } from "../../src/common/framing.js";
import { createLogger } from "../../src/common/log.js";
import {
  AnnotationsSchema,
  ContactDataSchema,
  ValidationInfoSchema,
  WrappedContactDataSchema,
} from "../../src/gen/fleetspeak/common_pb.js";
import { Comms, ContactError } from "../../src/server/comms/comms.js";
import type { Store } from "../../src/server/store/store.js";
import type { ClientCache } from "../../src/server/comms/client-cache.js";
import { outMessage, RawClient, wrap } from "../support/raw-client.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { makeClientIdentity } from "../support/tls.js";
import { fuzzParams, fuzzTimeout, onlyThrows } from "./fuzz-params.js";
import { mutatedBytes } from "./mutate.js";

const identity = makeClientIdentity();

function corpus(): Buffer[] {
  const withData = outMessage("TestService", "Data", anyPack(StringValueSchema, create(StringValueSchema, { value: "x".repeat(40) })));
  withData.annotations = create(AnnotationsSchema, { entries: [{ key: "k", value: "v" }] });
  withData.validationInfo = create(ValidationInfoSchema, { tags: { a: "b" } });
  const full = create(ContactDataSchema, {
    sequencingNonce: 42n,
    messages: [withData, outMessage("system", "MessageAck"), outMessage("TestService", "T")],
    clientClock: timestampNow(),
    AllowedMessages: { system: 100n, TestService: 7n },
    ackIndex: 3n,
    doneSending: true,
  });
  const signed = create(WrappedContactDataSchema, {
    contactData: toBinary(ContactDataSchema, full),
    signatures: [{ certificate: [identity.certDer], algorithm: 1, signature: Buffer.alloc(64, 1) }],
    clientLabels: ["linux", "corp"],
  });
  return [
    wrap({ messages: [outMessage("TestService", "T")], AllowedMessages: { TestService: 1n } }, ["linux"]),
    Buffer.from(toBinary(WrappedContactDataSchema, signed)),
    wrap({}),
  ];
}

const TOKENS = [
  Buffer.from([0x0a]), // field 1, length-delimited
  Buffer.from([0x12, 0x7f]),
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
  Buffer.from([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
  Buffer.from([0x00]),
  Buffer.from([0x1a, 0x00]),
  Buffer.from([0x0b]), // a group start
];

const bodies = fc.oneof(
  { weight: 4, arbitrary: mutatedBytes(corpus(), TOKENS, 5) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) },
);

describe("fuzz: contact bodies", { timeout: fuzzTimeout(60_000) }, () => {
  it("the parser gives a WrappedContactData and ContactData, or a 400 ContactError", () => {
    const comms = new Comms({
      store: {} as Store,
      cache: {} as ClientCache,
      handler: { handleClientMessages: async () => {} },
      logger: createLogger("fuzz"),
      streamingAddress: "local",
    });
    fc.assert(
      fc.property(bodies, (body) =>
        onlyThrows(() => {
          try {
            comms.parseWrapped(body, "fuzz");
          } catch (e) {
            if (e instanceof ContactError) assert.equal(e.status, 400);
            throw e;
          }
        }, ContactError),
      ),
      fuzzParams(2000),
    );
  });

  describe("against a live server", () => {
    let ts: TestServer;
    let agent: Agent;
    let good: RawClient;
    const statuses = new Map<number, number>();

    before(async () => {
      ts = await startTestServer();
      agent = new Agent({ keepAlive: true, maxSockets: 4, ca: ts.caPem, cert: identity.certPem, key: identity.keyPem, servername: "localhost" });
      good = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
    });
    after(async () => {
      agent?.destroy();
      await ts?.stop();
    });

    function send(path: string, body: Buffer, headers: Record<string, string> = {}): Promise<number> {
      return new Promise((resolve, reject) => {
        const req = request(
          { host: "127.0.0.1", port: ts.port, path, method: "POST", agent, headers: { "content-length": String(body.length), ...headers } },
          (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
            res.on("error", () => resolve(res.statusCode ?? 0));
          },
        );
        // A stream the server refuses may be cut while we are still writing.
        req.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" || e.code === "EPIPE" ? resolve(-1) : reject(e)));
        req.setTimeout(10_000, () => req.destroy(new Error(`no answer to ${path} within 10 s`)));
        req.end(body);
      });
    }

    /** Opens a stream with `wire` as its whole upload; resolves with the status, then hangs up. */
    function stream(wire: Buffer): Promise<number> {
      return new Promise((resolve, reject) => {
        const req = request({
          host: "127.0.0.1",
          port: ts.port,
          path: "/streaming-message",
          method: "POST",
          agent: false,
          ca: ts.caPem,
          cert: identity.certPem,
          key: identity.keyPem,
          servername: "localhost",
          headers: { "transfer-encoding": "chunked" },
        });
        req.on("response", (res) => {
          resolve(res.statusCode ?? 0);
          req.destroy();
        });
        req.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" || e.code === "EPIPE" ? resolve(-1) : reject(e)));
        req.setTimeout(10_000, () => req.destroy(new Error("no answer to a stream within 10 s")));
        req.end(wire);
      });
    }

    async function wellBehavedClientIsServed(): Promise<void> {
      const r = await good.poll({ messages: [outMessage("TestService", "Still")] });
      assert.equal(r.status, 200, r.text);
    }

    it("POST /message: mutated and random bodies are answered without a 500", async () => {
      await fc.assert(
        fc.asyncProperty(bodies, async (body) => {
          const status = await send("/message", body);
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          assert.notEqual(status, 500, `body ${body.toString("hex")} got a 500`);
        }),
        fuzzParams(150),
      );
      await wellBehavedClientIsServed();
      // The campaign reached past the parser: some mutated bodies were valid contacts.
      assert.ok((statuses.get(200) ?? 0) > 0 && (statuses.get(400) ?? 0) > 0, JSON.stringify([...statuses]));
    });

    it("/streaming-message: streams of mutated frames end cleanly, and others are still served", async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(bodies, { minLength: 1, maxLength: 4 }), fc.boolean(), async (frames, framed) => {
          // Either well-framed mutated contacts, or raw bytes after the magic (framing errors).
          const wire = Buffer.concat([MAGIC_BYTES, ...frames.map((f) => (framed ? encodeStreamFrame(f) : f))]);
          const status = await stream(wire);
          assert.notEqual(status, 500, `stream ${wire.toString("hex")} got a 500`);
        }),
        fuzzParams(60),
      );
      await wellBehavedClientIsServed();
      const s = await good.stream({ AllowedMessages: { system: 100n, TestService: 100n } });
      s.send({ messages: [outMessage("TestService", "OnStream")] });
      const ack = await s.next();
      assert.equal(ack?.ackIndex, 1n);
      s.close();
    });
  });
});
