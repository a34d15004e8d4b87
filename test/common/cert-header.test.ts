import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  certificateChecksum,
  decodeCertificateHeader,
  encodeCertificateHeader,
  pathEscape,
  pathUnescape,
  pemDecode,
} from "../../src/common/cert-header.js";
import { clientCertificate, derToPem, generateP256Key } from "../../src/common/certs.js";

const certDer = clientCertificate(generateP256Key());
const pem = derToPem(certDer);

describe("URL path escaping (Go's url.PathEscape / PathUnescape)", () => {
  it("keeps unreserved characters and $ & + : = @, escapes the rest upper-case", () => {
    assert.equal(pathEscape("AZaz09-_.~$&+:=@"), "AZaz09-_.~$&+:=@");
    assert.equal(pathEscape("a/b c\n;,?%#\"'"), "a%2Fb%20c%0A%3B%2C%3F%25%23%22%27");
    assert.equal(pathEscape("é"), "%C3%A9");
    assert.equal(pathEscape(Buffer.from([0x00, 0xff])), "%00%FF");
  });

  it("decodes %XX in either case and leaves + alone", () => {
    assert.equal(pathUnescape("a%2Fb%2fc+d%20e").toString(), "a/b/c+d e");
    assert.deepEqual([...pathUnescape("%00%ff")], [0, 255]);
    assert.equal(pathUnescape("plain").toString(), "plain");
  });

  it("refuses a % without two hex digits, with Go's text", () => {
    assert.throws(() => pathUnescape("ab%zz"), { message: 'invalid URL escape "%zz"' });
    assert.throws(() => pathUnescape("ab%4"), { message: 'invalid URL escape "%4"' });
    assert.throws(() => pathUnescape("%"), { message: 'invalid URL escape "%"' });
    assert.throws(() => pathUnescape("%g1xyz"), { message: 'invalid URL escape "%g1"' });
  });
});

describe("certificate header", () => {
  it("encodes the PEM with newlines and slashes escaped, and decodes back to the DER", () => {
    const header = encodeCertificateHeader(certDer);
    assert.ok(header.startsWith("-----BEGIN%20CERTIFICATE-----%0A"));
    assert.ok(header.endsWith("-----END%20CERTIFICATE-----%0A"));
    assert.doesNotMatch(header, /[\n /]/);
    assert.deepEqual(decodeCertificateHeader(header), certDer);
  });

  it("accepts what Go's pem.Decode accepts: unescaped PEM, CRLF, no final newline, text before BEGIN", () => {
    assert.deepEqual(decodeCertificateHeader(pem), certDer);
    assert.deepEqual(decodeCertificateHeader(pem.replace(/\n/g, "\r\n")), certDer);
    assert.deepEqual(decodeCertificateHeader(pem.trimEnd()), certDer);
    assert.deepEqual(decodeCertificateHeader(pathEscape(`junk before\n${pem}`)), certDer);
  });

  it("refuses anything after the block, with Fleetspeak's text", () => {
    for (const value of [`${pem}\n`, pem + pem, `${pem}x`]) {
      assert.throws(() => decodeCertificateHeader(pathEscape(value)), { message: "received more than 1 client cert" });
    }
  });

  it("refuses other PEM types and non-PEM", () => {
    const key = derToPem(Buffer.from("not really a key"), "PUBLIC KEY");
    assert.throws(() => decodeCertificateHeader(pathEscape(key)), { message: "PEM block is not a certificate" });
    assert.throws(() => decodeCertificateHeader("hello"), { message: "failed to decode PEM block" });
    assert.throws(() => decodeCertificateHeader(pathEscape(pem.replace("MII", "M!I"))), { message: "failed to decode PEM block" });
    assert.throws(() => decodeCertificateHeader("%zz"), { message: 'invalid URL escape "%zz"' });
  });

  it("follows pem.Decode on headers, mismatched END lines and bad padding", () => {
    const body = pem.split("\n").slice(1, -2).join("\n");
    const withHeaders = `-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\n${body}\n-----END CERTIFICATE-----\n`;
    assert.deepEqual(pemDecode(withHeaders)?.bytes, certDer);
    assert.equal(pemDecode(`-----BEGIN CERTIFICATE-----\n${body}\n-----END OTHER-----\n`), undefined);
    assert.equal(pemDecode("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"), undefined);
    assert.deepEqual(pemDecode("-----BEGIN X-----\nAAAA\n-----END X-----  \nrest")?.rest, "rest");
    const second = pemDecode(`-----BEGIN X-----\nAA==\n-----END Y-----\n${pem}`);
    assert.equal(second?.type, "CERTIFICATE");
  });

  it("computes the proxy checksum: unpadded standard base64 of SHA-256 over the DER", () => {
    assert.equal(certificateChecksum(Buffer.alloc(0)), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
    assert.equal(certificateChecksum(certDer).length, 43);
  });
});
