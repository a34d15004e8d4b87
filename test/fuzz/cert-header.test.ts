// Fuzzing how the header frontend modes read a client certificate from a proxy's header: Go-style
// path unescaping, PEM decoding, checksums and Envoy's x-forwarded-client-cert. Any header value
// gives a certificate or a 400 (IdentityError), and what the client side encodes decodes back.
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import {
  CertHeaderError,
  certificateChecksum,
  decodeCertificateHeader,
  encodeCertificateHeader,
  pathEscape,
  pathUnescape,
} from "../../src/common/cert-header.js";
import { FrontendConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { IdentityError, identifyClient, xfccField } from "../../src/server/frontend/client-identity.js";
import { makeClientIdentity } from "../support/tls.js";
import { fuzzParams, fuzzTimeout, onlyThrows } from "./fuzz-params.js";
import { mutatedText } from "./mutate.js";

const identity = makeClientIdentity();
const HEADER = encodeCertificateHeader(identity.certDer);
const CORPUS = [
  HEADER,
  decodeURIComponent(HEADER),
  `By=spiffe://cluster.local/ns/x;Hash=${certificateChecksum(identity.certDer)};Cert="${HEADER}";Subject="O=x";URI=`,
  `Cert=${HEADER},By=x;Cert="other"`,
  "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n",
];
const TOKENS = ["%", "%0A", "%2F", "%zz", "\n", "\r\n", "-----END CERTIFICATE-----", "-----BEGIN ", '"', "\\", ";", ",", "=", "Cert=", "=="];

const MODES = [
  create(FrontendConfigSchema, { frontendMode: { case: "httpsHeaderConfig", value: { clientCertificateHeader: "ssl-client-cert" } } }),
  create(FrontendConfigSchema, {
    frontendMode: {
      case: "cleartextHeaderChecksumConfig",
      value: { clientCertificateHeader: "ssl-client-cert", clientCertificateChecksumHeader: "ssl-client-cert-checksum" },
    },
  }),
  create(FrontendConfigSchema, { frontendMode: { case: "cleartextXfccConfig", value: { clientCertificateHeader: "x-forwarded-client-cert" } } }),
];

function fakeRequest(headers: Record<string, string>): IncomingMessage {
  return { headersDistinct: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]])), headers, socket: {} } as unknown as IncomingMessage;
}

describe("fuzz: certificate headers", { timeout: fuzzTimeout(60_000) }, () => {
  it("any header value gives a certificate or a 400 in every header mode", () => {
    fc.assert(
      fc.property(
        fc.oneof(mutatedText(CORPUS, TOKENS, 5), fc.string({ unit: "binary", maxLength: 200 })),
        fc.string({ maxLength: 50 }),
        fc.constantFrom(...MODES),
        (value, checksum, mode) => {
          const req = fakeRequest({
            "ssl-client-cert": value,
            "ssl-client-cert-checksum": checksum,
            "x-forwarded-client-cert": value,
          });
          onlyThrows(() => {
            const { spki } = identifyClient(req, mode);
            assert.ok(spki.length > 0);
          }, IdentityError);
          onlyThrows(() => decodeCertificateHeader(value), CertHeaderError);
        },
      ),
      fuzzParams(3000),
    );
  });

  it("what a client encodes, the server decodes: any DER bytes, any text through path escaping", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 600 }), fc.string({ unit: "binary", maxLength: 100 }), (der, text) => {
        assert.deepEqual(decodeCertificateHeader(encodeCertificateHeader(der)), Buffer.from(der));
        assert.equal(pathUnescape(pathEscape(text)).toString("utf8"), text);
      }),
      fuzzParams(2000),
    );
  });

  it("XFCC: a quoted, escaped Cert value is read back among other elements, whatever it holds", () => {
    const key = fc.constantFrom("By", "Hash", "Subject", "URI", "DNS");
    const quoted = (v: string) => `"${v.replace(/["\\]/g, "\\$&")}"`;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(key, fc.string({ maxLength: 20 })), { maxLength: 4 }),
        fc.string({ unit: "binary", maxLength: 100 }),
        fc.array(fc.tuple(key, fc.string({ maxLength: 20 })), { maxLength: 4 }),
        fc.constantFrom(";", ","),
        (before, cert, after, sep) => {
          const items = [...before.map(([k, v]) => `${k}=${quoted(v)}`), `Cert=${quoted(cert)}`, ...after.map(([k, v]) => `${k}=${quoted(v)}`)];
          assert.equal(xfccField(items.join(sep), "Cert"), cert);
        },
      ),
      fuzzParams(2000),
    );
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), (header) => {
        assert.equal(typeof xfccField(header, "Cert"), "string");
      }),
      fuzzParams(2000),
    );
  });
});
