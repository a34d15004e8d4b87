// PROXY protocol (HAProxy's spec, versions 1 and 2): the header a TCP load balancer writes before
// the client's bytes so that the backend learns the client's address. Parsed incrementally, because
// TCP may split a header anywhere, and bounded, so that garbage never makes us buffer much.
import { isIPv4, isIPv6 } from "node:net";

export interface ProxyEndpoint {
  address: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /**
   * v2 LOCAL command: the proxy opened the connection on its own behalf (HAProxy health checks);
   * the connection's own endpoints apply.
   */
  local: boolean;
  /** Absent for LOCAL, v1 UNKNOWN and v2 AF_UNSPEC: then the TCP peer is the client. */
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
}

export type ProxyParseResult = { done: false } | { done: true; header: ProxyHeader; rest: Buffer };

export type ProxyErrorReason =
  | "bad-signature"
  | "truncated"
  | "line-too-long"
  | "bad-line"
  | "bad-address"
  | "unsupported-family"
  | "bad-version"
  | "bad-command"
  | "header-too-long";

export class ProxyProtocolError extends Error {
  constructor(
    readonly reason: ProxyErrorReason,
    message: string,
  ) {
    super(message);
  }
}

const V1_PREFIX = Buffer.from("PROXY ", "latin1");
/** The v1 spec's worst case: "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF. */
export const V1_MAX_BYTES = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_BYTES = 16;
/**
 * The v2 length field allows 65535 bytes after the fixed part; we accept the largest address
 * block (AF_UNIX, 216 bytes) plus 4 KiB of TLVs, which covers everything HAProxy sends (ALPN,
 * authority, unique id, SSL details, cloud endpoint ids). Anything longer is refused before it
 * is buffered.
 */
export const V2_MAX_PAYLOAD_BYTES = 216 + 4096;
export const MAX_HEADER_BYTES = V2_FIXED_BYTES + V2_MAX_PAYLOAD_BYTES;

/**
 * Tells, from the first bytes of a connection, whether it starts with a PROXY header: true, false,
 * or undefined while the bytes seen so far are a prefix of a signature (read more, at most 12).
 */
export function startsWithProxySignature(data: Buffer): boolean | undefined {
  for (const signature of [V1_PREFIX, V2_SIGNATURE]) {
    const n = Math.min(data.length, signature.length);
    if (data.subarray(0, n).equals(signature.subarray(0, n))) {
      return n === signature.length ? true : undefined;
    }
  }
  return false;
}

/** Longest prefix startsWithProxySignature may need to decide. */
export const SIGNATURE_DECISION_BYTES = V2_SIGNATURE.length;

/**
 * Feed it the connection's bytes as they arrive; it answers "need more" until the header is
 * complete, then the header and whatever followed it in the same chunks (the start of the TLS or
 * HTTP stream, to be handed on). Throws ProxyProtocolError on the first byte that cannot belong
 * to a valid header.
 */
export class ProxyHeaderParser {
  #buffered: Buffer = Buffer.alloc(0);
  #finished = false;

  /** Bytes held so far (never more than MAX_HEADER_BYTES). */
  get bufferedBytes(): number {
    return this.#buffered.length;
  }

  push(chunk: Buffer): ProxyParseResult {
    if (this.#finished) throw new Error("ProxyHeaderParser.push called after the header was complete");
    const data = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    const result = data[0] === V2_SIGNATURE[0] ? parseV2(data) : parseV1(data);
    if (result.done) {
      this.#finished = true;
      this.#buffered = Buffer.alloc(0);
    } else {
      // Copy so that a large chunk which merely began the header is not kept alive.
      this.#buffered = Buffer.from(data);
    }
    return result;
  }

  /** The connection ended: an error if a header had begun (or never came). */
  end(): ProxyProtocolError | undefined {
    if (this.#finished) return undefined;
    const n = this.#buffered.length;
    return new ProxyProtocolError(
      "truncated",
      n === 0
        ? "connection closed before a PROXY protocol header was received"
        : `connection closed after ${n} bytes of an incomplete PROXY protocol header`,
    );
  }
}

function checkSignature(data: Buffer, signature: Buffer, what: string): boolean {
  const n = Math.min(data.length, signature.length);
  if (!data.subarray(0, n).equals(signature.subarray(0, n))) {
    throw new ProxyProtocolError(
      "bad-signature",
      `connection does not start with a PROXY protocol header (expected ${what}, got ${printable(data.subarray(0, 16))})`,
    );
  }
  return n === signature.length;
}

function printable(b: Buffer): string {
  return b.every((c) => c >= 0x20 && c < 0x7f) ? JSON.stringify(b.toString("latin1")) : `0x${b.toString("hex")}`;
}

function parseV1(data: Buffer): ProxyParseResult {
  if (!checkSignature(data, V1_PREFIX, '"PROXY " or the v2 signature')) return { done: false };
  const limit = Math.min(data.length, V1_MAX_BYTES);
  const lf = data.subarray(0, limit).indexOf(0x0a);
  if (lf < 0) {
    if (data.length >= V1_MAX_BYTES) {
      throw new ProxyProtocolError(
        "line-too-long",
        `PROXY v1 header has no CRLF within ${V1_MAX_BYTES} bytes (the protocol's maximum line length)`,
      );
    }
    return { done: false };
  }
  if (lf === 0 || data[lf - 1] !== 0x0d) {
    throw new ProxyProtocolError("bad-line", "PROXY v1 header line must end with CRLF, found a bare LF");
  }
  const line = data.subarray(0, lf - 1).toString("latin1");
  const rest = data.subarray(lf + 1);
  const fields = line.split(" ");
  const protocol = fields[1];
  if (protocol === "UNKNOWN") return { done: true, header: { version: 1, local: false }, rest };
  if (protocol !== "TCP4" && protocol !== "TCP6") {
    throw new ProxyProtocolError(
      "unsupported-family",
      `PROXY v1 protocol ${JSON.stringify(protocol ?? "")} is not TCP4, TCP6 or UNKNOWN`,
    );
  }
  if (fields.length !== 6) {
    throw new ProxyProtocolError(
      "bad-line",
      `PROXY v1 ${protocol} header needs exactly "PROXY ${protocol} <src> <dst> <sport> <dport>" with single spaces, got ${JSON.stringify(line)}`,
    );
  }
  const isValid = protocol === "TCP4" ? isIPv4 : isIPv6;
  const [, , src = "", dst = "", sport = "", dport = ""] = fields;
  for (const address of [src, dst]) {
    if (!isValid(address)) {
      throw new ProxyProtocolError("bad-address", `PROXY v1 ${protocol} header has invalid address ${JSON.stringify(address)}`);
    }
  }
  return {
    done: true,
    header: {
      version: 1,
      local: false,
      source: { address: src, port: parsePort(sport) },
      destination: { address: dst, port: parsePort(dport) },
    },
    rest,
  };
}

function parsePort(text: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text) || Number(text) > 65535) {
    throw new ProxyProtocolError("bad-address", `PROXY v1 header has invalid port ${JSON.stringify(text)}`);
  }
  return Number(text);
}

const AF_UNSPEC = 0x0;
const AF_INET = 0x1;
const AF_INET6 = 0x2;
const TRANSPORT_STREAM = 0x1;

function parseV2(data: Buffer): ProxyParseResult {
  if (!checkSignature(data, V2_SIGNATURE, "the PROXY v2 signature")) return { done: false };
  if (data.length < V2_FIXED_BYTES) return { done: false };
  const versionCommand = data[12]!;
  const version = versionCommand >> 4;
  const command = versionCommand & 0x0f;
  if (version !== 2) throw new ProxyProtocolError("bad-version", `PROXY v2 header has version ${version}, expected 2`);
  if (command > 1) {
    throw new ProxyProtocolError("bad-command", `PROXY v2 header has command ${command}, expected 0 (LOCAL) or 1 (PROXY)`);
  }
  const payloadLength = data.readUInt16BE(14);
  if (payloadLength > V2_MAX_PAYLOAD_BYTES) {
    throw new ProxyProtocolError(
      "header-too-long",
      `PROXY v2 header announces ${payloadLength} bytes of addresses and TLVs, more than the ${V2_MAX_PAYLOAD_BYTES} accepted`,
    );
  }
  const total = V2_FIXED_BYTES + payloadLength;
  if (data.length < total) return { done: false };
  const rest = data.subarray(total);
  // LOCAL: the spec says to skip the address block whatever its family.
  if (command === 0) return { done: true, header: { version: 2, local: true }, rest };

  const family = data[13]! >> 4;
  const transport = data[13]! & 0x0f;
  if (family === AF_UNSPEC) return { done: true, header: { version: 2, local: false }, rest };
  if ((family !== AF_INET && family !== AF_INET6) || transport !== TRANSPORT_STREAM) {
    throw new ProxyProtocolError(
      "unsupported-family",
      `PROXY v2 header has address family/transport 0x${data[13]!.toString(16).padStart(2, "0")}; only TCP over IPv4 (0x11) or IPv6 (0x21) is accepted`,
    );
  }
  const addressBytes = family === AF_INET ? 4 : 16;
  const needed = 2 * addressBytes + 4;
  if (payloadLength < needed) {
    throw new ProxyProtocolError(
      "bad-address",
      `PROXY v2 header for ${family === AF_INET ? "IPv4" : "IPv6"} has ${payloadLength} bytes of addresses, needs ${needed}`,
    );
  }
  const block = data.subarray(V2_FIXED_BYTES, V2_FIXED_BYTES + needed);
  const format = family === AF_INET ? formatIPv4 : formatIPv6;
  return {
    done: true,
    header: {
      version: 2,
      local: false,
      source: { address: format(block.subarray(0, addressBytes)), port: block.readUInt16BE(2 * addressBytes) },
      destination: {
        address: format(block.subarray(addressBytes, 2 * addressBytes)),
        port: block.readUInt16BE(2 * addressBytes + 2),
      },
    },
    rest,
  };
}

function formatIPv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** RFC 5952 text: lower-case hex, the longest run (≥ 2) of zero groups shortened to "::". */
export function formatIPv6(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}
