// Certificates for tests: a deployment CA with a server certificate for 127.0.0.1/localhost, and
// client identities (P-256 key + self-signed certificate) as Fleetspeak clients make them.
import type { KeyObject } from "node:crypto";
import {
  type CertAndKey,
  clientCertificate,
  clientIdOfKey,
  createCa,
  createServerCertificate,
  derToPem,
  generateP256Key,
  keyToPem,
  spkiDer,
} from "../../src/common/certs.js";
import { clientIdToHex } from "../../src/common/ids.js";

export interface TestServerPki {
  ca: CertAndKey;
  server: CertAndKey;
  /** PEM chain as HttpsConfig.certificates holds it: server certificate then CA. */
  certChainPem: string;
  keyPem: string;
}

let cachedPki: TestServerPki | undefined;

/** A CA and a server certificate valid for 127.0.0.1, ::1 and localhost; made once per process. */
export function testServerPki(): TestServerPki {
  if (!cachedPki) {
    const ca = createCa("test");
    const server = createServerCertificate("test", ca, ["127.0.0.1", "::1", "localhost"]);
    cachedPki = { ca, server, certChainPem: server.certPem + ca.certPem, keyPem: server.keyPem };
  }
  return cachedPki;
}

export interface TestClientIdentity {
  key: KeyObject;
  keyPem: string;
  certDer: Buffer;
  certPem: string;
  spki: Buffer;
  /** 16 hex characters. */
  clientId: string;
}

export function makeClientIdentity(): TestClientIdentity {
  const key = generateP256Key();
  const certDer = clientCertificate(key);
  return {
    key,
    keyPem: keyToPem(key),
    certDer,
    certPem: derToPem(certDer),
    spki: spkiDer(key),
    clientId: clientIdToHex(clientIdOfKey(key)),
  };
}
