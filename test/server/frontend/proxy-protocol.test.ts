import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  formatIPv6,
  MAX_HEADER_BYTES,
  type ProxyErrorReason,
  ProxyHeaderParser,
  type ProxyParseResult,
  ProxyProtocolError,
  startsWithProxySignature,
  V2_MAX_PAYLOAD_BYTES,
} from "../../../src/server/frontend/proxy-protocol.js";

const SIG = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

function v2(opts: { versionCommand?: number; family?: number; addresses?: Buffer; tlvs?: Buffer; length?: number }): Buffer {
  const payload = Buffer.concat([opts.addresses ?? Buffer.alloc(0), opts.tlvs ?? Buffer.alloc(0)]);
  const fixed = Buffer.alloc(4);
  fixed[0] = opts.versionCommand ?? 0x21;
  fixed[1] = opts.family ?? 0x11;
  fixed.writeUInt16BE(opts.length ?? payload.length, 2);
  return Buffer.concat([SIG, fixed, payload]);
}

function ipv4Block(src: number[], dst: number[], sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

function ipv6Block(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36);
  Buffer.from(src, "hex").copy(b, 0);
  Buffer.from(dst, "hex").copy(b, 16);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  return b;
}

/** Feeds one byte at a time; checks that the header completes exactly at its last byte. */
function feedBytewise(data: Buffer, headerLength = data.length): ProxyParseResult & { done: true } {
  const parser = new ProxyHeaderParser();
  for (let i = 0; i < data.length; i++) {
    const r = parser.push(data.subarray(i, i + 1));
    if (r.done) {
      assert.equal(i + 1, headerLength, `header completed at byte ${i + 1}, expected ${headerLength}`);
      return r;
    }
  }
  assert.fail(`header not complete after ${data.length} bytes`);
}

/** Feeds one byte at a time and expects an error with `reason`, raised at byte `atByte` (1-based). */
function expectError(data: Buffer, reason: ProxyErrorReason, atByte: number, message?: RegExp): void {
  const parser = new ProxyHeaderParser();
  for (let i = 0; i < data.length; i++) {
    try {
      parser.push(data.subarray(i, i + 1));
    } catch (e) {
      assert.ok(e instanceof ProxyProtocolError, `unexpected error ${e}`);
      assert.equal(e.reason, reason, e.message);
      assert.equal(i + 1, atByte, `error raised at byte ${i + 1}: ${e.message}`);
      if (message) assert.match(e.message, message);
      assert.ok(parser.bufferedBytes <= MAX_HEADER_BYTES);
      return;
    }
  }
  assert.fail(`no error after ${data.length} bytes`);
}

describe("PROXY protocol v1", () => {
  it("parses TCP4 byte by byte and keeps what follows", () => {
    const header = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const r = feedBytewise(Buffer.from(header, "latin1"));
    assert.deepEqual(r.header, {
      version: 1,
      local: false,
      source: { address: "192.168.0.1", port: 56324 },
      destination: { address: "192.168.0.11", port: 443 },
    });
    const whole = new ProxyHeaderParser().push(Buffer.from(`${header}\x16\x03\x01rest`, "latin1"));
    assert.ok(whole.done);
    assert.equal(whole.rest.toString("latin1"), "\x16\x03\x01rest");
  });

  it("parses TCP6", () => {
    const r = feedBytewise(Buffer.from("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", "latin1"));
    assert.deepEqual(r.header.source, { address: "2001:db8::1", port: 65535 });
    assert.deepEqual(r.header.destination, { address: "::1", port: 0 });
  });

  it("accepts the longest legal line (107 bytes)", () => {
    const a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const line = `PROXY TCP6 ${a} ${a} 65535 65535\r\n`;
    assert.equal(line.length, 104);
    feedBytewise(Buffer.from(line, "latin1"));
  });

  it("parses UNKNOWN with or without addresses (no source: the TCP peer applies)", () => {
    for (const line of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"]) {
      const r = feedBytewise(Buffer.from(line, "latin1"));
      assert.deepEqual(r.header, { version: 1, local: false });
    }
  });

  it("refuses malformed lines with a precise reason", () => {
    const cases: Array<[string, ProxyErrorReason, number, RegExp?]> = [
      ["GET / HTTP/1.1\r\n", "bad-signature", 1, /does not start with a PROXY protocol header.*"G"/],
      ["PROXX TCP4", "bad-signature", 5],
      ["proxy TCP4", "bad-signature", 1],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bad-line", 31, /bare LF/],
      ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unsupported-family", 32, /"TCP5"/],
      ["PROXY \r\n", "unsupported-family", 8],
      ["PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad-address", 30, /"1\.2\.3"/],
      ["PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad-address", 33],
      ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad-address", 28],
      ["PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "bad-address", 28],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad-address", 36, /port "65536"/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad-address", 33],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad-address", 33],
      ["PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "bad-line", 33],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "bad-line", 30],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "bad-line", 34],
    ];
    for (const [line, reason, at, message] of cases) expectError(Buffer.from(line, "latin1"), reason, at, message);
  });

  it("refuses a line without CRLF at the 107th byte, before buffering more", () => {
    const long = Buffer.from(`PROXY TCP4 ${"1".repeat(200)}`, "latin1");
    expectError(long, "line-too-long", 107, /107 bytes/);
    assert.throws(() => new ProxyHeaderParser().push(long), (e: ProxyProtocolError) => e.reason === "line-too-long");
  });
});

describe("PROXY protocol v2", () => {
  it("parses a TCP over IPv4 header byte by byte", () => {
    const header = v2({ addresses: ipv4Block([10, 0, 0, 1], [10, 0, 0, 2], 40000, 443) });
    const r = feedBytewise(Buffer.concat([header, Buffer.from("tail")]), header.length);
    assert.deepEqual(r.header, {
      version: 2,
      local: false,
      source: { address: "10.0.0.1", port: 40000 },
      destination: { address: "10.0.0.2", port: 443 },
    });
    const whole = new ProxyHeaderParser().push(Buffer.concat([header, Buffer.from("tail")]));
    assert.ok(whole.done);
    assert.equal(whole.rest.toString(), "tail");
  });

  it("parses a TCP over IPv6 header", () => {
    const header = v2({
      family: 0x21,
      addresses: ipv6Block("20010db8000000000000000000000001", "00000000000000000000000000000001", 1, 2),
    });
    const r = feedBytewise(header);
    assert.deepEqual(r.header.source, { address: "2001:db8::1", port: 1 });
    assert.deepEqual(r.header.destination, { address: "::1", port: 2 });
  });

  it("skips TLVs after the addresses", () => {
    const tlvs = Buffer.concat([
      Buffer.from([0x01, 0x00, 0x02]),
      Buffer.from("h2"),
      Buffer.from([0x05, 0x00, 0x04]),
      Buffer.from("abcd"),
      Buffer.from([0x04, 0x00, 0x00]),
    ]);
    const header = v2({ addresses: ipv4Block([127, 0, 0, 1], [127, 0, 0, 1], 5, 6), tlvs });
    const r = feedBytewise(Buffer.concat([header, Buffer.from([0x16])]), header.length);
    assert.deepEqual(r.header.source, { address: "127.0.0.1", port: 5 });
    const whole = new ProxyHeaderParser().push(Buffer.concat([header, Buffer.from([0x16])]));
    assert.ok(whole.done);
    assert.deepEqual([...whole.rest], [0x16]);
  });

  it("parses LOCAL (health checks) without an address, whatever the family", () => {
    for (const header of [
      v2({ versionCommand: 0x20, family: 0x00 }),
      v2({ versionCommand: 0x20, family: 0x11, addresses: ipv4Block([1, 1, 1, 1], [2, 2, 2, 2], 1, 2) }),
      v2({ versionCommand: 0x20, family: 0x31, addresses: Buffer.alloc(216) }),
    ]) {
      const r = feedBytewise(header);
      assert.deepEqual(r.header, { version: 2, local: true });
    }
  });

  it("parses PROXY with AF_UNSPEC as 'no address'", () => {
    assert.deepEqual(feedBytewise(v2({ family: 0x00 })).header, { version: 2, local: false });
  });

  it("refuses malformed headers with a precise reason", () => {
    const bad = Buffer.from(SIG);
    bad[6] = 0x00;
    expectError(bad, "bad-signature", 7, /PROXY v2 signature/);
    expectError(Buffer.from([0x16, 0x03, 0x01]), "bad-signature", 1, /0x16/);
    expectError(v2({ versionCommand: 0x11, addresses: ipv4Block([1, 1, 1, 1], [1, 1, 1, 1], 1, 1) }), "bad-version", 16);
    expectError(v2({ versionCommand: 0x22, addresses: ipv4Block([1, 1, 1, 1], [1, 1, 1, 1], 1, 1) }), "bad-command", 16);
    expectError(v2({ family: 0x31, addresses: Buffer.alloc(216) }), "unsupported-family", 232, /0x31/);
    expectError(v2({ family: 0x12, addresses: ipv4Block([1, 1, 1, 1], [1, 1, 1, 1], 1, 1) }), "unsupported-family", 28);
    expectError(v2({ family: 0x41 }), "unsupported-family", 16);
    expectError(v2({ addresses: Buffer.alloc(8) }), "bad-address", 24, /needs 12/);
    expectError(v2({ family: 0x21, addresses: Buffer.alloc(12) }), "bad-address", 28, /needs 36/);
  });

  it("refuses an oversize length right after the fixed part, before buffering the payload", () => {
    const header = v2({ length: V2_MAX_PAYLOAD_BYTES + 1 });
    expectError(Buffer.concat([header, Buffer.alloc(100)]), "header-too-long", 16, /4313 bytes/);
    const max = v2({ addresses: ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 9, 10), tlvs: Buffer.alloc(V2_MAX_PAYLOAD_BYTES - 12) });
    assert.equal(max.length, MAX_HEADER_BYTES);
    assert.ok(new ProxyHeaderParser().push(max).done);
  });
});

describe("PROXY parser lifecycle", () => {
  it("reports truncation when the connection ends mid-header", () => {
    const parser = new ProxyHeaderParser();
    assert.match(parser.end()?.message ?? "", /before a PROXY protocol header/);
    parser.push(Buffer.from("PROXY TCP4 1.2"));
    const err = parser.end();
    assert.equal(err?.reason, "truncated");
    assert.match(err?.message ?? "", /after 14 bytes/);
  });

  it("has nothing to report once the header was complete", () => {
    const parser = new ProxyHeaderParser();
    assert.ok(parser.push(Buffer.from("PROXY UNKNOWN\r\n")).done);
    assert.equal(parser.end(), undefined);
  });

  it("tells PROXY headers from TLS and HTTP by their first bytes", () => {
    assert.equal(startsWithProxySignature(Buffer.from("PROXY TCP4")), true);
    assert.equal(startsWithProxySignature(Buffer.from("PRO")), undefined);
    assert.equal(startsWithProxySignature(Buffer.from("POST /message")), false);
    assert.equal(startsWithProxySignature(Buffer.from([0x16, 0x03, 0x01])), false);
    assert.equal(startsWithProxySignature(SIG.subarray(0, 5)), undefined);
    assert.equal(startsWithProxySignature(SIG), true);
    assert.equal(startsWithProxySignature(Buffer.alloc(0)), undefined);
  });

  it("formats IPv6 addresses as RFC 5952 text", () => {
    const hex = (s: string) => Buffer.from(s, "hex");
    assert.equal(formatIPv6(hex("00000000000000000000000000000000")), "::");
    assert.equal(formatIPv6(hex("00000000000000000000000000000001")), "::1");
    assert.equal(formatIPv6(hex("20010db8000000000001000000000001")), "2001:db8::1:0:0:1");
    assert.equal(formatIPv6(hex("00010000000000010000000000000001")), "1:0:0:1::1");
    assert.equal(formatIPv6(hex("20010db8000100020003000400050006")), "2001:db8:1:2:3:4:5:6");
    assert.equal(formatIPv6(hex("00000000000000000000ffff7f000001")), "::ffff:127.0.0.1");
  });
});
