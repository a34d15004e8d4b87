import assert from "node:assert/strict";
import type { IncomingMessage, ServerResponse } from "node:http";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { certificateChecksum, encodeCertificateHeader, pathEscape } from "../../../src/common/cert-header.js";
import { createCa, createServerCertificate, derToPem } from "../../../src/common/certs.js";
import {
  type FrontendConfig,
  FrontendConfigSchema,
} from "../../../src/gen/fleetspeak_components/config_pb.js";
import {
  frontendModeUsesTls,
  IdentityError,
  identifyClient,
  xfccField,
} from "../../../src/server/frontend/client-identity.js";
import { type FrontendListener, startFrontendListener } from "../../../src/server/frontend/listener.js";
import { makeClientIdentity, testServerPki } from "../../support/tls.js";
import { captureLog, portOf, request, type TestRequestOptions } from "./helpers.js";

const CERT_HEADER = "ssl-client-cert";
const CHECKSUM_HEADER = "x-client-cert-hash";

const modes: Record<string, FrontendConfig | undefined> = {
  default: undefined,
  mtls: create(FrontendConfigSchema, { frontendMode: { case: "mtlsConfig", value: {} } }),
  httpsHeader: create(FrontendConfigSchema, {
    frontendMode: { case: "httpsHeaderConfig", value: { clientCertificateHeader: "SSL-Client-Cert" } },
  }),
  httpsHeaderChecksum: create(FrontendConfigSchema, {
    frontendMode: {
      case: "httpsHeaderChecksumConfig",
      value: { clientCertificateHeader: CERT_HEADER, clientCertificateChecksumHeader: CHECKSUM_HEADER },
    },
  }),
  cleartextHeader: create(FrontendConfigSchema, {
    frontendMode: { case: "cleartextHeaderConfig", value: { clientCertificateHeader: CERT_HEADER } },
  }),
  cleartextHeaderChecksum: create(FrontendConfigSchema, {
    frontendMode: {
      case: "cleartextHeaderChecksumConfig",
      value: { clientCertificateHeader: CERT_HEADER, clientCertificateChecksumHeader: CHECKSUM_HEADER },
    },
  }),
  xfcc: create(FrontendConfigSchema, {
    frontendMode: { case: "cleartextXfccConfig", value: { clientCertificateHeader: "x-forwarded-client-cert" } },
  }),
};

/** Identifies the caller with the mode named by the path ("/<mode>") and reports the result. */
function identityHandler(req: IncomingMessage, res: ServerResponse): void {
  const mode = modes[(req.url ?? "/").slice(1)];
  try {
    const { spki } = identifyClient(req, mode);
    res.end(JSON.stringify({ spki: spki.toString("hex") }));
  } catch (e) {
    if (!(e instanceof IdentityError)) throw e;
    res.writeHead(e.status).end(JSON.stringify({ error: e.message }));
  }
}

describe("client identification", () => {
  let tlsListener: FrontendListener;
  let cleartextListener: FrontendListener;
  const client = makeClientIdentity();
  const other = makeClientIdentity();

  before(async () => {
    const pki = testServerPki();
    const logger = captureLog().logger;
    tlsListener = await startFrontendListener({
      listenAddress: "127.0.0.1:0",
      tls: { cert: pki.certChainPem, key: pki.keyPem },
      proxyProtocol: false,
      handler: identityHandler,
      logger,
    });
    cleartextListener = await startFrontendListener({
      listenAddress: "127.0.0.1:0",
      proxyProtocol: false,
      handler: identityHandler,
      logger,
    });
  });
  after(async () => {
    await tlsListener.close();
    await cleartextListener.close();
  });

  async function identify(mode: string, opts: Partial<TestRequestOptions> = {}): Promise<{ spki?: string; error?: string; status: number }> {
    const useTls = opts.tls ?? true;
    const res = await request({
      port: portOf((useTls ? tlsListener : cleartextListener).address),
      path: `/${mode}`,
      ...opts,
    });
    return { ...JSON.parse(res.body), status: res.status };
  }
  const spkiHex = (id: { spki: Buffer }) => id.spki.toString("hex");

  describe("mTLS (the default)", () => {
    it("takes the key of the one certificate in the handshake, with or without an explicit mtls_config", async () => {
      for (const mode of ["default", "mtls"]) {
        const r = await identify(mode, { cert: client.certPem, key: client.keyPem });
        assert.deepEqual(r, { spki: spkiHex(client), status: 200 });
      }
    });

    it("refuses a handshake without a certificate", async () => {
      assert.deepEqual(await identify("mtls"), { error: "expected 1 client cert, received 0", status: 400 });
    });

    it("refuses a chain of two certificates", async () => {
      const ca = createCa("client-ca");
      const leaf = createServerCertificate("client", ca, ["client.example"]);
      const r = await identify("mtls", { cert: leaf.certPem + ca.certPem, key: leaf.keyPem });
      assert.deepEqual(r, { error: "expected 1 client cert, received 2", status: 400 });
    });

    it("refuses a request that did not come over TLS", async () => {
      assert.deepEqual(await identify("mtls", { tls: false }), { error: "TLS information not found", status: 400 });
    });

    it("says which frontend modes listen with TLS", () => {
      assert.deepEqual(
        Object.entries(modes).map(([name, mode]) => [name, frontendModeUsesTls(mode)]),
        [
          ["default", true],
          ["mtls", true],
          ["httpsHeader", true],
          ["httpsHeaderChecksum", true],
          ["cleartextHeader", false],
          ["cleartextHeaderChecksum", false],
          ["xfcc", false],
        ],
      );
    });
  });

  describe("certificate header modes", () => {
    const header = encodeCertificateHeader(client.certDer);

    it("takes the header's certificate, not the TLS one; the header name is case-insensitive", async () => {
      const r = await identify("httpsHeader", { cert: other.certPem, key: other.keyPem, headers: { [CERT_HEADER]: header } });
      assert.deepEqual(r, { spki: spkiHex(client), status: 200 });
      const clear = await identify("cleartextHeader", { tls: false, headers: { [CERT_HEADER]: header } });
      assert.deepEqual(clear, { spki: spkiHex(client), status: 200 });
    });

    it("uses the first of repeated headers", async () => {
      const r = await identify("cleartextHeader", { tls: false, headers: { [CERT_HEADER]: [header, "garbage"] } });
      assert.deepEqual(r, { spki: spkiHex(client), status: 200 });
      const bad = await identify("cleartextHeader", { tls: false, headers: { [CERT_HEADER]: ["garbage", header] } });
      assert.deepEqual(bad, { error: "failed to decode PEM block", status: 400 });
    });

    it("refuses a missing header, naming it", async () => {
      assert.deepEqual(await identify("httpsHeader"), {
        error: 'no certificate found in header with name "SSL-Client-Cert"',
        status: 400,
      });
    });

    it("refuses malformed values with Fleetspeak's texts", async () => {
      const cases: Array<[string, string]> = [
        ["%zz", 'invalid URL escape "%zz"'],
        [pathEscape(`${client.certPem}\n`), "received more than 1 client cert"],
        [pathEscape(client.certPem + other.certPem), "received more than 1 client cert"],
        [pathEscape(derToPem(client.spki, "PUBLIC KEY")), "PEM block is not a certificate"],
        ["not a certificate", "failed to decode PEM block"],
      ];
      for (const [value, error] of cases) {
        assert.deepEqual(await identify("cleartextHeader", { tls: false, headers: { [CERT_HEADER]: value } }), { error, status: 400 });
      }
      const unparsable = await identify("cleartextHeader", {
        tls: false,
        headers: { [CERT_HEADER]: pathEscape(derToPem(Buffer.from("0123456789"))) },
      });
      assert.equal(unparsable.status, 400);
      assert.match(unparsable.error ?? "", /^cannot parse the client certificate: /);
    });

    it("checks the proxy's checksum in the checksum modes", async () => {
      const good = certificateChecksum(client.certDer);
      for (const [mode, tls] of [
        ["httpsHeaderChecksum", true],
        ["cleartextHeaderChecksum", false],
      ] as const) {
        const ok = await identify(mode, { tls, headers: { [CERT_HEADER]: header, [CHECKSUM_HEADER]: good } });
        assert.deepEqual(ok, { spki: spkiHex(client), status: 200 });
        assert.deepEqual(await identify(mode, { tls, headers: { [CERT_HEADER]: header } }), {
          error: "no client certificate checksum received in header",
          status: 400,
        });
        for (const wrong of [certificateChecksum(other.certDer), `${good}=`, good.toLowerCase()]) {
          assert.deepEqual(await identify(mode, { tls, headers: { [CERT_HEADER]: header, [CHECKSUM_HEADER]: wrong } }), {
            error: "received client certificate checksum is invalid",
            status: 400,
          });
        }
        assert.deepEqual(await identify(mode, { tls, headers: { [CHECKSUM_HEADER]: good } }), {
          error: `no certificate found in header with name "${CERT_HEADER}"`,
          status: 400,
        });
      }
    });
  });

  describe("XFCC mode", () => {
    const escaped = encodeCertificateHeader(client.certDer);
    const xfcc = (value: string) => identify("xfcc", { tls: false, headers: { "x-forwarded-client-cert": value } });

    it("takes the Cert item of an Envoy header", async () => {
      const value = `By=spiffe://cluster.local/ns/default/sa/fleetspeak;Hash=abc123;Cert="${escaped}";Subject="O=\\"x\\",CN=y";URI=`;
      assert.deepEqual(await xfcc(value), { spki: spkiHex(client), status: 200 });
      assert.deepEqual(await xfcc(`Hash=abc;Cert=${escaped}`), { spki: spkiHex(client), status: 200 });
    });

    it("takes the first Cert of several elements", async () => {
      const second = encodeCertificateHeader(other.certDer);
      assert.deepEqual(await xfcc(`Hash=1;Cert="${escaped}",Hash=2;Cert="${second}"`), { spki: spkiHex(client), status: 200 });
      assert.deepEqual(await xfcc(`Hash=1,By=x;Cert="${second}";Cert="${escaped}"`), { spki: spkiHex(other), status: 200 });
    });

    it("treats a header without Cert item as the escaped PEM itself", async () => {
      assert.deepEqual(await xfcc(escaped), { spki: spkiHex(client), status: 200 });
    });

    it("refuses a missing header and undecodable certificates", async () => {
      assert.deepEqual(await identify("xfcc", { tls: false }), { error: "no certificate found in header", status: 400 });
      assert.deepEqual(await xfcc('By=x;Cert="garbage"'), {
        error: "failed to decode PEM block containing certificate",
        status: 400,
      });
      assert.deepEqual(await xfcc(`Cert="${pathEscape(`${client.certPem}\n`)}"`), {
        error: "received more than 1 client cert",
        status: 400,
      });
    });

    it("scans items as Fleetspeak's parser does", () => {
      const vector = `By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com`;
      assert.equal(xfccField(vector, "By"), "http://frontend.lyft.com");
      assert.equal(xfccField(vector, "Hash"), "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688");
      assert.equal(xfccField(vector, "Subject"), "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client");
      assert.equal(xfccField(vector, "URI"), "http://testclient.lyft.com");
      assert.equal(xfccField(vector, "Cert"), "");
      assert.equal(xfccField(`${vector};Key="\\`, "Cert"), "", "a lone trailing backslash ends the scan");
      assert.equal(xfccField("", "Cert"), "");
      assert.equal(xfccField('A=1,Cert="x;y,z"', "Cert"), "x;y,z");
      assert.equal(xfccField("Cert=a\\;b;c=d", "Cert"), "a;b");
      assert.equal(xfccField('Cert="a\\"b"tail;x=1', "Cert"), 'a"btail');
      assert.equal(xfccField(" Cert=x", "Cert"), "", "keys are compared verbatim");
      assert.equal(xfccField("A=1;=x;Cert=y", "Cert"), "", "an empty key ends the scan");
      assert.equal(xfccField("Cert=first;Cert=second", "Cert"), "first");
      assert.equal(xfccField("noequals;Cert=x", "Cert"), "", "a key runs up to '=' even across ';'");
    });
  });
});
