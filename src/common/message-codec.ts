// fleetspeak.Message to protobuf bytes, by hand. The server encodes every client message again to
// forward it (a Processor call, a notification carrying it, an admin read), and @bufbuild/protobuf's
// toBinary, which walks the schema by reflection for every field of every nested message, was ~10 %
// of a frontend's CPU under ingest. This knows the message's shape and writes into one buffer
// sized beforehand. It gives the same bytes as toBinary (fields in number order, unset proto3
// fields left out, map entries with both key and value, a message's unknown fields after its own):
// test/common/message-codec.test.ts holds it to that, so a change to common.proto that this file
// does not follow fails there.
import type { UnknownField } from "@bufbuild/protobuf";
import type { Any, Timestamp } from "@bufbuild/protobuf/wkt";
import type { Address, Annotations, Message, MessageResult, ValidationInfo } from "../gen/fleetspeak/common_pb.js";

const VARINT = 0;
const LEN = 2;

/** Any message: the unknown fields @bufbuild/protobuf keeps on a decoded one. */
type WithUnknown = { $unknown?: UnknownField[] | undefined };

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

/** An int64 or int32 as protobuf writes it: negative values as their 64-bit two's complement. */
function int64Bits(v: bigint | number): bigint | number {
  if (typeof v === "number") return v >= 0 ? v : BigInt.asUintN(64, BigInt(v));
  return v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : BigInt.asUintN(64, v);
}

function bigVarintSize(v: bigint | number): number {
  if (typeof v === "number") return varintSize(v);
  let size = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    size++;
  }
  return size;
}

function tagSize(no: number): number {
  return no < 16 ? 1 : varintSize(no * 8);
}

function lenFieldSize(no: number, len: number): number {
  return tagSize(no) + varintSize(len) + len;
}

function unknownSize(m: WithUnknown): number {
  let size = 0;
  if (m.$unknown) for (const u of m.$unknown) size += varintSize(u.no * 8 + u.wireType) + u.data.length;
  return size;
}

function strSize(no: number, s: string): number {
  return s.length === 0 ? 0 : lenFieldSize(no, Buffer.byteLength(s));
}

function bytesSize(no: number, b: Uint8Array): number {
  return b.length === 0 ? 0 : lenFieldSize(no, b.length);
}

function addressSize(a: Address): number {
  return bytesSize(1, a.clientId) + strSize(2, a.serviceName) + unknownSize(a);
}

function timestampSize(t: Timestamp): number {
  let size = unknownSize(t);
  if (t.seconds !== 0n) size += 1 + bigVarintSize(int64Bits(t.seconds));
  if (t.nanos !== 0) size += 1 + bigVarintSize(int64Bits(t.nanos));
  return size;
}

function anySize(a: Any): number {
  return strSize(1, a.typeUrl) + bytesSize(2, a.value) + unknownSize(a);
}

function pairSize(key: string, value: string): number {
  // Map entries and Annotations.Entry: both are (string key = 1, string value = 2); a map entry
  // always has both, an Entry only what is set.
  return lenFieldSize(1, Buffer.byteLength(key)) + lenFieldSize(2, Buffer.byteLength(value));
}

function validationInfoSize(v: ValidationInfo): number {
  let size = unknownSize(v);
  for (const [k, val] of Object.entries(v.tags)) size += lenFieldSize(1, pairSize(k, val));
  return size;
}

function resultSize(r: MessageResult): number {
  let size = unknownSize(r);
  if (r.processedTime) size += lenFieldSize(2, timestampSize(r.processedTime));
  if (r.failed) size += 2;
  return size + strSize(4, r.failedReason);
}

function entrySize(e: Annotations["entries"][number]): number {
  return strSize(1, e.key) + strSize(2, e.value) + unknownSize(e);
}

function annotationsSize(a: Annotations): number {
  let size = unknownSize(a);
  for (const e of a.entries) size += lenFieldSize(1, entrySize(e));
  return size;
}

function messageSize(m: Message): number {
  let size = bytesSize(1, m.messageId);
  if (m.source) size += lenFieldSize(2, addressSize(m.source));
  size += bytesSize(3, m.sourceMessageId);
  if (m.destination) size += lenFieldSize(4, addressSize(m.destination));
  size += strSize(5, m.messageType);
  if (m.creationTime) size += lenFieldSize(6, timestampSize(m.creationTime));
  if (m.data) size += lenFieldSize(7, anySize(m.data));
  if (m.validationInfo) size += lenFieldSize(8, validationInfoSize(m.validationInfo));
  if (m.result) size += lenFieldSize(9, resultSize(m.result));
  if (m.priority !== 0) size += 1 + bigVarintSize(int64Bits(m.priority));
  if (m.background) size += 2;
  if (m.annotations) size += lenFieldSize(12, annotationsSize(m.annotations));
  if (m.isBlocklistedSource) size += 2;
  return size + unknownSize(m);
}

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(v: bigint | number): void {
    const b = this.buf;
    if (typeof v === "number") {
      while (v >= 0x80) {
        b[this.pos++] = (v % 0x80) | 0x80;
        v = Math.floor(v / 0x80);
      }
      b[this.pos++] = v;
      return;
    }
    while (v >= 0x80n) {
      b[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    b[this.pos++] = Number(v);
  }

  tag(no: number, wireType: number): void {
    this.varint(no * 8 + wireType); // not a shift: field numbers go up to 2^29 - 1
  }

  bytes(no: number, v: Uint8Array): void {
    if (v.length === 0) return;
    this.tag(no, LEN);
    this.varint(v.length);
    this.buf.set(v, this.pos);
    this.pos += v.length;
  }

  str(no: number, s: string, always = false): void {
    if (s.length === 0 && !always) return;
    this.tag(no, LEN);
    const len = Buffer.byteLength(s);
    this.varint(len);
    this.pos += this.buf.write(s, this.pos, len, "utf8");
  }

  bool(no: number, v: boolean): void {
    if (!v) return;
    this.tag(no, VARINT);
    this.buf[this.pos++] = 1;
  }

  int(no: number, v: bigint | number): void {
    if (v === 0 || v === 0n) return;
    this.tag(no, VARINT);
    this.varint(int64Bits(v));
  }

  /** A nested message: tag, length, then what `write` writes. */
  nested(no: number, size: number, write: () => void): void {
    this.tag(no, LEN);
    this.varint(size);
    write();
  }

  unknown(m: WithUnknown): void {
    if (!m.$unknown) return;
    for (const u of m.$unknown) {
      this.tag(u.no, u.wireType);
      this.buf.set(u.data, this.pos);
      this.pos += u.data.length;
    }
  }

  address(a: Address): void {
    this.bytes(1, a.clientId);
    this.str(2, a.serviceName);
    this.unknown(a);
  }

  timestamp(t: Timestamp): void {
    this.int(1, t.seconds);
    this.int(2, t.nanos);
    this.unknown(t);
  }

  any(a: Any): void {
    this.str(1, a.typeUrl);
    this.bytes(2, a.value);
    this.unknown(a);
  }

  validationInfo(v: ValidationInfo): void {
    for (const [k, val] of Object.entries(v.tags)) {
      this.nested(1, pairSize(k, val), () => {
        this.str(1, k, true);
        this.str(2, val, true);
      });
    }
    this.unknown(v);
  }

  result(r: MessageResult): void {
    const t = r.processedTime;
    if (t) this.nested(2, timestampSize(t), () => this.timestamp(t));
    this.bool(3, r.failed);
    this.str(4, r.failedReason);
    this.unknown(r);
  }

  annotations(a: Annotations): void {
    for (const e of a.entries) {
      this.nested(1, entrySize(e), () => {
        this.str(1, e.key);
        this.str(2, e.value);
        this.unknown(e);
      });
    }
    this.unknown(a);
  }

  message(m: Message): void {
    this.bytes(1, m.messageId);
    const { source, destination, creationTime, data, validationInfo, result, annotations } = m;
    if (source) this.nested(2, addressSize(source), () => this.address(source));
    this.bytes(3, m.sourceMessageId);
    if (destination) this.nested(4, addressSize(destination), () => this.address(destination));
    this.str(5, m.messageType);
    if (creationTime) this.nested(6, timestampSize(creationTime), () => this.timestamp(creationTime));
    if (data) this.nested(7, anySize(data), () => this.any(data));
    if (validationInfo) this.nested(8, validationInfoSize(validationInfo), () => this.validationInfo(validationInfo));
    if (result) this.nested(9, resultSize(result), () => this.result(result));
    this.int(10, m.priority);
    this.bool(11, m.background);
    if (annotations) this.nested(12, annotationsSize(annotations), () => this.annotations(annotations));
    this.bool(13, m.isBlocklistedSource);
    this.unknown(m);
  }
}

/** The protobuf encoding of a fleetspeak.Message: the bytes toBinary(MessageSchema, m) gives. */
export function encodeMessage(m: Message): Uint8Array {
  const size = messageSize(m);
  const w = new Writer(Buffer.allocUnsafe(size));
  w.message(m);
  if (w.pos !== size) throw new Error(`encodeMessage wrote ${w.pos} bytes where it sized ${size}`);
  return w.buf;
}
