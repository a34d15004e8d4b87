import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, it } from "node:test";
import {
  clientCertificate,
  clientIdOfKey,
  createCa,
  createServerCertificate,
  generateP256Key,
  keyFromSec1Der,
  keyToSec1Der,
  parsePemCertificates,
} from "../../src/common/certs.js";
import { clientIdFromSpki, clientIdToHex } from "../../src/common/ids.js";

describe("certificates", () => {
  it("builds a client certificate whose public key gives the client's ID", () => {
    const key = generateP256Key();
    const cert = new X509Certificate(clientCertificate(key));
    const id = clientIdFromSpki(cert.publicKey.export({ type: "spki", format: "der" }));
    assert.deepEqual(id, clientIdOfKey(key));
    assert.equal(cert.subject, `O=${clientIdToHex(id)}`);
    assert.equal(cert.serialNumber, "01");
    assert.ok(cert.verify(cert.publicKey));
    assert.ok(cert.checkPrivateKey(key));
  });

  it("round-trips the key through SEC1 DER (the state file form)", () => {
    const key = generateP256Key();
    const again = keyFromSec1Der(keyToSec1Der(key));
    assert.deepEqual(clientIdOfKey(again), clientIdOfKey(key));
    assert.throws(() => keyFromSec1Der(Buffer.from("junk"), "state file /x"), /state file \/x: not a valid EC private key/);
  });

  it("creates a CA and a server certificate that verifies against it with SANs", () => {
    const ca = createCa("test");
    assert.ok(ca.cert.ca);
    const server = createServerCertificate("test", ca, ["localhost", "127.0.0.1", "::1"]);
    assert.ok(server.cert.verify(ca.cert.publicKey));
    assert.equal(server.cert.checkIssued(ca.cert), true);
    assert.match(server.cert.subjectAltName ?? "", /DNS:localhost/);
    assert.match(server.cert.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
    assert.equal(server.cert.checkHost("localhost"), "localhost");
    assert.equal(server.cert.checkIP("::1"), "::1");
    assert.equal(parsePemCertificates(server.certPem + ca.certPem, "chain").length, 2);
    assert.throws(() => parsePemCertificates("nothing here", "trusted_certs"), /trusted_certs: no "-----BEGIN CERTIFICATE-----"/);
  });
});
