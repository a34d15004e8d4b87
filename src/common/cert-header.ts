// The client certificate carried in an HTTP header (Fleetspeak's header frontend modes, for
// deployments where an L7 proxy terminates TLS): the PEM text, URL-path-escaped the way Go's
// url.PathEscape does it. The client encodes; the server decodes with the exact rules of Go's
// url.PathUnescape and pem.Decode, so that headers which Fleetspeak accepts are accepted here and
// the ones it refuses are refused.
import { createHash } from "node:crypto";
import { derToPem } from "./certs.js";

export class CertHeaderError extends Error {}

const HEX = "0123456789ABCDEF";

/** Go's url.PathEscape: bytes outside A-Z a-z 0-9 - _ . ~ $ & + : = @ become %XX (upper case). */
export function pathEscape(text: string | Uint8Array): string {
  const bytes = typeof text === "string" ? Buffer.from(text, "utf8") : text;
  let out = "";
  for (const c of bytes) {
    if (isPathSegmentLiteral(c)) out += String.fromCharCode(c);
    else out += `%${HEX[c >> 4]}${HEX[c & 15]}`;
  }
  return out;
}

function isPathSegmentLiteral(c: number): boolean {
  if ((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39)) return true;
  // - _ . ~ $ & + : = @
  return c === 0x2d || c === 0x5f || c === 0x2e || c === 0x7e || c === 0x24 || c === 0x26 || c === 0x2b || c === 0x3a || c === 0x3d || c === 0x40;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Go's url.PathUnescape: each %XX becomes the byte XX, "+" stays "+", a "%" not followed by two
 * hex digits is an error (Go's text: invalid URL escape "%zz").
 */
export function pathUnescape(text: string): Buffer {
  if (!text.includes("%")) return Buffer.from(text, "latin1");
  const src = Buffer.from(text, "latin1");
  const out = Buffer.allocUnsafe(src.length);
  let n = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c !== 0x25) {
      out[n++] = c;
      continue;
    }
    const hi = i + 2 < src.length ? hexValue(src[i + 1]!) : -1;
    const lo = hi >= 0 ? hexValue(src[i + 2]!) : -1;
    if (lo < 0) {
      throw new CertHeaderError(`invalid URL escape ${JSON.stringify(text.slice(i, i + 3))}`);
    }
    out[n++] = (hi << 4) | lo;
    i += 2;
  }
  return out.subarray(0, n);
}

/** The header value a client sends for its certificate (DER in, escaped PEM out). */
export function encodeCertificateHeader(certDer: Uint8Array): string {
  return pathEscape(derToPem(certDer));
}

export interface PemBlock {
  type: string;
  bytes: Buffer;
  /** What followed the block's END line (its line ending consumed). */
  rest: string;
}

/** Go's pem.Decode over latin1 text: the first well-formed block, or undefined. */
export function pemDecode(data: string): PemBlock | undefined {
  let rest = data;
  for (;;) {
    if (rest.startsWith("-----BEGIN ")) {
      rest = rest.slice(11);
    } else {
      const i = rest.indexOf("\n-----BEGIN ");
      if (i < 0) return undefined;
      rest = rest.slice(i + 12);
    }
    let typeLine: string;
    [typeLine, rest] = getLine(rest);
    if (!typeLine.endsWith("-----")) continue;
    typeLine = typeLine.slice(0, -5);

    let headerLines = 0;
    for (;;) {
      if (rest.length === 0) return undefined;
      const [line, next] = getLine(rest);
      if (!line.includes(":")) break;
      headerLines++;
      rest = next;
    }

    let endIndex: number;
    let endTrailerIndex: number;
    if (headerLines === 0 && rest.startsWith("-----END ")) {
      endIndex = 0;
      endTrailerIndex = 9;
    } else {
      endIndex = rest.indexOf("\n-----END ");
      endTrailerIndex = endIndex + 10;
    }
    if (endIndex < 0) continue;

    const endTrailerLength = typeLine.length + 5;
    const endTrailer = rest.slice(endTrailerIndex, endTrailerIndex + endTrailerLength);
    if (endTrailer.length < endTrailerLength) continue;
    if (!endTrailer.startsWith(typeLine) || !endTrailer.endsWith("-----")) continue;
    if (getLine(rest.slice(endTrailerIndex + endTrailerLength))[0].length !== 0) continue;

    const bytes = strictBase64(rest.slice(0, endIndex).replace(/[ \t]/g, ""));
    if (bytes === undefined) continue;
    return { type: typeLine, bytes, rest: getLine(rest.slice(endIndex + 9))[1] };
  }
}

/** Go's pem getLine: up to "\n" (a preceding "\r" dropped), trailing spaces and tabs trimmed. */
function getLine(data: string): [string, string] {
  const nl = data.indexOf("\n");
  let end = nl < 0 ? data.length : nl;
  const next = nl < 0 ? data.length : nl + 1;
  if (nl > 0 && data[nl - 1] === "\r") end--;
  let trimmed = end;
  while (trimmed > 0 && (data[trimmed - 1] === " " || data[trimmed - 1] === "\t")) trimmed--;
  return [data.slice(0, trimmed), data.slice(next)];
}

/** Go's base64.StdEncoding.Decode: CR and LF ignored, padding required, nothing after it. */
function strictBase64(text: string): Buffer | undefined {
  const compact = text.replace(/[\r\n]/g, "");
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(compact)) return undefined;
  return Buffer.from(compact, "base64");
}

/**
 * Decodes a certificate header value to the certificate's DER, with the checks (and error texts)
 * of Fleetspeak's server: one CERTIFICATE block and nothing after it.
 */
export function decodeCertificateHeader(value: string): Buffer {
  const block = pemDecode(pathUnescape(value).toString("latin1"));
  if (block === undefined) throw new CertHeaderError("failed to decode PEM block");
  if (block.type !== "CERTIFICATE") throw new CertHeaderError("PEM block is not a certificate");
  if (block.rest.length !== 0) throw new CertHeaderError("received more than 1 client cert");
  return block.bytes;
}

/**
 * The checksum an L7 proxy puts beside the certificate header in the checksum modes: SHA-256 of
 * the certificate DER, standard base64 without "=" padding (43 characters).
 */
export function certificateChecksum(certDer: Uint8Array): string {
  return createHash("sha256").update(certDer).digest("base64").replace(/=+$/, "");
}
