// Fuzzing the PROXY protocol v1/v2 parser, which reads the first bytes of every connection when
// proxy_protocol is on: any bytes give a header, "need more" or ProxyProtocolError; it never holds
// more than MAX_HEADER_BYTES; TCP's splitting of the bytes never changes the outcome; and headers
// built from random addresses read back as built.
import assert from "node:assert/strict";
import { isIPv6 } from "node:net";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  MAX_HEADER_BYTES,
  type ProxyHeader,
  ProxyHeaderParser,
  ProxyProtocolError,
  startsWithProxySignature,
} from "../../src/server/frontend/proxy-protocol.js";
import { fuzzParams, fuzzTimeout } from "./fuzz-params.js";
import { mutatedBytes, splits } from "./mutate.js";

const SIG = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

function v2(command: number, family: number, payload: Buffer): Buffer {
  const fixed = Buffer.from([0x20 | command, family, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([SIG, fixed, payload]);
}

const CORPUS = [
  Buffer.from("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n"),
  Buffer.from("PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 65535\r\n\x16\x03\x01"),
  Buffer.from("PROXY UNKNOWN whatever\r\n"),
  v2(1, 0x11, Buffer.from("c0000201c633640201bb01bb", "hex")),
  v2(1, 0x21, Buffer.concat([Buffer.alloc(32, 0x20), Buffer.from("0050c350", "hex"), Buffer.from("0100026832", "hex")])),
  v2(0, 0x00, Buffer.alloc(0)),
  v2(1, 0x31, Buffer.alloc(216, 0x2f)),
];
const TOKENS = [SIG, Buffer.from("PROXY "), Buffer.from("\r\n"), Buffer.from(" "), Buffer.from("TCP4"), Buffer.from("TCP6"), Buffer.from([0xff, 0xff]), Buffer.from([0x21, 0x11])];

type Outcome = { kind: "header"; header: ProxyHeader; rest: string } | { kind: "more" } | { kind: "error"; reason: string };

/** Feeds chunks until done or error; anything but ProxyProtocolError escapes. */
function feed(chunks: Buffer[]): Outcome {
  const parser = new ProxyHeaderParser();
  for (let i = 0; i < chunks.length; i++) {
    try {
      const r = parser.push(chunks[i]!);
      assert.ok(parser.bufferedBytes <= MAX_HEADER_BYTES, `holds ${parser.bufferedBytes} bytes`);
      if (r.done) {
        return { kind: "header", header: r.header, rest: Buffer.concat([r.rest, ...chunks.slice(i + 1)]).toString("hex") };
      }
    } catch (e) {
      if (!(e instanceof ProxyProtocolError)) throw e;
      return { kind: "error", reason: e.reason };
    }
  }
  return { kind: "more" };
}

describe("fuzz: PROXY protocol header parser", { timeout: fuzzTimeout(30_000) }, () => {
  it("any bytes, split anywhere, give the same header, need-more or ProxyProtocolError as in one piece", () => {
    const input = fc.oneof(mutatedBytes(CORPUS, TOKENS, 5), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([SIG, b])));
    fc.assert(
      fc.property(input, fc.array(fc.nat(), { maxLength: 8 }), (data, cuts) => {
        const whole = feed([data]);
        const pieces = feed(splits(data, cuts));
        // An error may show earlier in pieces (before the bytes that would complete a header are
        // seen), but errors stay errors and successes stay identical.
        if (whole.kind === "error") assert.equal(pieces.kind, "error");
        else assert.deepEqual(pieces, whole);
        const sig = startsWithProxySignature(data);
        if (whole.kind === "header") assert.equal(sig, true);
      }),
      fuzzParams(4000),
    );
  });

  it("random bytes never escape as another error, nor grow the buffer past the limit", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 3000 }), { minLength: 1, maxLength: 4 }), (chunks) => {
        feed(chunks.map((c, i) => (i === 0 && c[0]! % 2 === 0 ? Buffer.concat([SIG, c]) : Buffer.from(c))));
      }),
      fuzzParams(1000),
    );
  });

  it("v1 and v2 headers built from random addresses read back as built", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.boolean(),
        fc.ipV4(),
        fc.ipV4(),
        fc.ipV6(),
        fc.ipV6(),
        fc.integer({ min: 0, max: 65535 }),
        fc.integer({ min: 0, max: 65535 }),
        fc.uint8Array({ maxLength: 200 }),
        (binary, six, s4, d4, s6, d6, sport, dport, tlvs) => {
          const [src, dst] = six ? [s6, d6] : [s4, d4];
          fc.pre(!six || (isIPv6(src) && isIPv6(dst)));
          let header: Buffer;
          if (binary) {
            const addr = six ? Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst)]) : Buffer.from([...src.split("."), ...dst.split(".")].map(Number));
            const ports = Buffer.from([sport >> 8, sport & 0xff, dport >> 8, dport & 0xff]);
            header = v2(1, six ? 0x21 : 0x11, Buffer.concat([addr, ports, tlvs]));
          } else {
            header = Buffer.from(`PROXY ${six ? "TCP6" : "TCP4"} ${src} ${dst} ${sport} ${dport}\r\n`);
          }
          const out = feed([Buffer.concat([header, Buffer.from("rest")])]);
          assert.equal(out.kind, "header", JSON.stringify(out));
          if (out.kind !== "header") return;
          assert.equal(out.rest, Buffer.from("rest").toString("hex"));
          assert.equal(out.header.source?.port, sport);
          assert.equal(out.header.destination?.port, dport);
          if (six) {
            assert.deepEqual(ipv6Bytes(out.header.source!.address), ipv6Bytes(src));
            assert.deepEqual(ipv6Bytes(out.header.destination!.address), ipv6Bytes(dst));
          } else {
            assert.equal(out.header.source?.address, src);
            assert.equal(out.header.destination?.address, dst);
          }
        },
      ),
      fuzzParams(2000),
    );
  });
});

/** 16 bytes of an IPv6 address in any text form (including embedded IPv4). */
function ipv6Bytes(text: string): Buffer {
  let t = text;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(t);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    t = `${t.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = t.split("::");
  const parse = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const h = parse(head);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - parse(tail).length).fill(0), ...parse(tail)];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(g, 2 * i);
  return out;
}
