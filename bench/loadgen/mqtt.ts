// A minimal MQTT 3.1.1 client for the peer measurement (Mosquitto): CONNECT/CONNACK,
// SUBSCRIBE/SUBACK, PUBLISH at QoS 1 both ways with PUBACK. Nothing else (no QoS 2, no
// keep-alive pings: keep-alive 0 disables them, no retained messages, no reconnect logic beyond
// what the worker does). Written here rather than depending on mqtt.js because one load process
// holds thousands of these, and the whole protocol needed is a page.
import * as tls from "node:tls";

const CONNECT = 1;
const CONNACK = 2;
const PUBLISH = 3;
const PUBACK = 4;
const SUBSCRIBE = 8;
const SUBACK = 9;

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function packet(typeAndFlags: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([typeAndFlags]), remainingLength(body.length), body]);
}

function str(s: string): Buffer {
  const b = Buffer.from(s, "utf8");
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function connectPacket(clientId: string): Buffer {
  // Protocol name "MQTT", level 4 (3.1.1), flags: clean session; keep-alive 0 (no pings).
  return packet(CONNECT << 4, Buffer.concat([str("MQTT"), Buffer.from([4, 0x02]), u16(0), str(clientId)]));
}

export function subscribePacket(packetId: number, topic: string, qos = 1): Buffer {
  return packet((SUBSCRIBE << 4) | 0x02, Buffer.concat([u16(packetId), str(topic), Buffer.from([qos])]));
}

export function publishPacket(packetId: number, topic: string, payload: Buffer): Buffer {
  // QoS 1, not a duplicate, not retained.
  return packet((PUBLISH << 4) | 0x02, Buffer.concat([str(topic), u16(packetId), payload]));
}

export function pubackPacket(packetId: number): Buffer {
  return packet(PUBACK << 4, u16(packetId));
}

export interface MqttPacket {
  type: number;
  flags: number;
  body: Buffer;
}

/** Splits a byte stream into MQTT packets. */
export class MqttParser {
  private buf: Buffer = Buffer.alloc(0);

  push(input: Buffer): MqttPacket[] {
    this.buf = this.buf.length === 0 ? input : Buffer.concat([this.buf, input]);
    const out: MqttPacket[] = [];
    for (;;) {
      if (this.buf.length < 2) break;
      let len = 0;
      let mul = 1;
      let i = 1;
      let complete = false;
      while (i < this.buf.length && i <= 4) {
        const b = this.buf[i++]!;
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (i > 4) throw new Error("MQTT remaining length longer than 4 bytes");
        break;
      }
      if (this.buf.length < i + len) break;
      const first = this.buf[0]!;
      out.push({ type: first >> 4, flags: first & 0x0f, body: this.buf.subarray(i, i + len) });
      this.buf = this.buf.subarray(i + len);
    }
    return out;
  }
}

/** The topic and payload of a PUBLISH, and its packet id (QoS > 0). */
export function parsePublish(p: MqttPacket): { topic: string; packetId: number; payload: Buffer } {
  const topicLen = p.body.readUInt16BE(0);
  const topic = p.body.subarray(2, 2 + topicLen).toString("utf8");
  const qos = (p.flags >> 1) & 0x03;
  let off = 2 + topicLen;
  let packetId = 0;
  if (qos > 0) {
    packetId = p.body.readUInt16BE(off);
    off += 2;
  }
  return { topic, packetId, payload: p.body.subarray(off) };
}

export interface MqttConnectOptions {
  host: string;
  port: number;
  localAddress?: string;
  caPem: string;
  keyPem: string;
  certPem: string;
  clientId: string;
}

export function mqttTlsConnect(o: MqttConnectOptions): tls.TLSSocket {
  const s = tls.connect({
    host: o.host,
    port: o.port,
    ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    servername: "localhost",
    ca: o.caPem,
    key: o.keyPem,
    cert: o.certPem,
  });
  s.setNoDelay(true);
  return s;
}

export const MQTT = { CONNACK, PUBLISH, PUBACK, SUBACK };

/**
 * A publishing connection (the benchmark parent's stand-in for InsertMessage): QoS 1 publishes,
 * counting PUBACKs.
 */
export class MqttPublisher {
  private readonly socket: tls.TLSSocket;
  private readonly parser = new MqttParser();
  private nextId = 1;
  acked = 0;
  sent = 0;
  private connected: Promise<void>;

  constructor(o: MqttConnectOptions) {
    this.socket = mqttTlsConnect(o);
    this.connected = new Promise((resolve, reject) => {
      this.socket.once("secureConnect", () => this.socket.write(connectPacket(o.clientId)));
      this.socket.on("error", reject);
      this.socket.on("data", (d: Buffer) => {
        for (const p of this.parser.push(d)) {
          if (p.type === CONNACK) {
            if (p.body[1] !== 0) reject(new Error(`MQTT CONNACK refused, code ${p.body[1]}`));
            else resolve();
          } else if (p.type === PUBACK) this.acked++;
        }
      });
    });
  }

  ready(): Promise<void> {
    return this.connected;
  }

  publish(topic: string, payload: Buffer): void {
    const id = this.nextId;
    this.nextId = (this.nextId % 65535) + 1;
    this.sent++;
    this.socket.write(publishPacket(id, topic, payload));
  }

  close(): void {
    this.socket.destroy();
  }
}
