import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Outbox, OutboxClosedError } from "../../src/client/comms/outbox.js";
import { type Message, Message_Priority, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";

function msg(type: string, priority = Message_Priority.MEDIUM): Message {
  return create(MessageSchema, { messageType: type, priority });
}

describe("outbox", () => {
  it("hands out HIGH before MEDIUM before LOW, first in first out", async () => {
    const o = new Outbox();
    await o.send(msg("low1", Message_Priority.LOW), 10);
    await o.send(msg("med1"), 10);
    await o.send(msg("high1", Message_Priority.HIGH), 10);
    await o.send(msg("med2"), 10);
    await o.send(msg("odd", 7 as Message_Priority), 10);
    assert.deepEqual(
      o.take(10, 1000).map((i) => i.message.messageType),
      ["high1", "med1", "med2", "odd", "low1"],
    );
  });

  it("holds senders while 100 messages of a priority are unacknowledged", async () => {
    const o = new Outbox();
    for (let i = 0; i < 100; i++) await o.send(msg(`m${i}`), 1);
    let admitted = false;
    const blocked = o.send(msg("m100"), 1).then(() => {
      admitted = true;
    });
    await o.send(msg("high", Message_Priority.HIGH), 1); // other priorities have their own room
    const items = o.take(100, 1 << 30);
    await new Promise((r) => setImmediate(r));
    assert.equal(admitted, false, "taking is not acknowledging");
    assert.equal(items[0]!.message.messageType, "high");
    o.ack(items.slice(1, 2));
    await blocked;
    assert.equal(admitted, true);
  });

  it("counts bytes too (20 MiB per priority)", async () => {
    const o = new Outbox(100, 1000);
    await o.send(msg("a"), 600);
    let admitted = false;
    const p = o.send(msg("b"), 600).then(() => {
      admitted = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(admitted, false);
    o.ack(o.take(1, 1000));
    await p;
  });

  it("requeues nacked messages at the back, unchanged", async () => {
    const o = new Outbox();
    const m1 = msg("one");
    m1.sourceMessageId = Buffer.from("0123456789abcdef");
    await o.send(m1, 1);
    const first = o.take(1, 100);
    await o.send(msg("two"), 1);
    o.nack(first);
    const again = o.take(10, 100);
    assert.deepEqual(
      again.map((i) => i.message.messageType),
      ["two", "one"],
    );
    assert.equal(Buffer.from(again[1]!.message.sourceMessageId).toString(), "0123456789abcdef");
  });

  it("calls the ack hook once the server has a message, and stops at the byte budget", async () => {
    const o = new Outbox();
    let acked = 0;
    await o.send(msg("a"), 50, () => acked++);
    await o.send(msg("b"), 50);
    const batch = o.take(10, 60);
    assert.equal(batch.length, 1, "second message would pass 60 bytes");
    o.ack(batch);
    assert.equal(acked, 1);
  });

  it("gives up waiting when the sender's signal aborts, and fails everyone on close", async () => {
    const o = new Outbox(1, 1000);
    await o.send(msg("a"), 1);
    const giveUp = new AbortController();
    setTimeout(() => giveUp.abort(new Error("gave up")), 20);
    await assert.rejects(o.send(msg("b"), 1, undefined, giveUp.signal), /gave up/);
    const waiting = o.send(msg("c"), 1);
    o.close();
    await assert.rejects(waiting, OutboxClosedError);
    await assert.rejects(o.send(msg("d"), 1), OutboxClosedError);
  });
});
