// Inputs the fuzz tests found to break something, kept as fixed tests.
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { encodeCertificateHeader } from "../../src/common/cert-header.js";
import { FrontendConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { IdentityError, identifyClient } from "../../src/server/frontend/client-identity.js";
import { makeClientIdentity } from "../support/tls.js";

describe("fuzz regressions", () => {
  it("a header certificate whose EC point is off the curve is a 400 (IdentityError), not a 500", () => {
    const { certDer, spki } = makeClientIdentity();
    const at = certDer.indexOf(spki);
    assert.ok(at > 0);
    const broken = Buffer.from(certDer);
    // The last byte of the point's Y coordinate: the certificate still parses, its key does not.
    broken[at + spki.length - 1] = broken[at + spki.length - 1]! ^ 0x01;
    const mode = create(FrontendConfigSchema, {
      frontendMode: { case: "cleartextHeaderConfig", value: { clientCertificateHeader: "ssl-client-cert" } },
    });
    const value = encodeCertificateHeader(broken);
    const req = { headersDistinct: { "ssl-client-cert": [value] }, headers: { "ssl-client-cert": value }, socket: {} };
    assert.throws(
      () => identifyClient(req as unknown as IncomingMessage, mode),
      (e: unknown) => e instanceof IdentityError && e.status === 400 && /cannot read the public key of the client certificate/.test(e.message),
    );
  });
});
