import assert from "node:assert/strict";
import { createPublicKey } from "node:crypto";
import { describe, it } from "node:test";
import {
  checkClientId,
  clientIdFromSpki,
  clientIdToHex,
  clientMessageId,
  parseClientIdHex,
} from "../../src/common/ids.js";

// P-256 generator point G (private scalar 1), the vector from the wire-protocol reference.
const GX = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
const GY = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

describe("ClientID", () => {
  it("is the first 8 bytes of SHA-256 over the SPKI DER (generator point vector)", () => {
    const key = createPublicKey({
      key: { kty: "EC", crv: "P-256", x: Buffer.from(GX, "hex").toString("base64url"), y: Buffer.from(GY, "hex").toString("base64url") },
      format: "jwk",
    });
    const spki = key.export({ type: "spki", format: "der" });
    assert.equal(spki.length, 91);
    assert.equal(clientIdToHex(clientIdFromSpki(spki)), "5cd252fb0ce89324");
  });

  it("parses and prints the text form, nil included", () => {
    assert.equal(clientIdToHex(parseClientIdHex("5cd252fb0ce89324")), "5cd252fb0ce89324");
    assert.equal(parseClientIdHex("nil").length, 0);
    assert.equal(parseClientIdHex("").length, 0);
    assert.equal(clientIdToHex(new Uint8Array()), "nil");
  });

  it("rejects malformed IDs with a message that says what is expected", () => {
    assert.throws(() => parseClientIdHex("abc"), /16 characters/);
    assert.throws(() => parseClientIdHex("zzzzzzzzzzzzzzzz"), /hexadecimal/);
    assert.throws(() => checkClientId(new Uint8Array(7)), /must be 8 bytes/);
  });
});

describe("client message IDs", () => {
  it("are SHA-256(client_id || 0 || service || 0 || source_message_id) (reference vector)", () => {
    const id = clientMessageId(
      Buffer.from("5cd252fb0ce89324", "hex"),
      "TestService",
      Buffer.from("00112233445566778899aabbccddeeff", "hex"),
    );
    assert.equal(id.toString("hex"), "c2aadd0a0c2aadf362a50ae97edb8a0e2bfeada8bf34149f4899254d3b185f7d");
  });
});
