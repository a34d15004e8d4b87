// Keys and certificates for the benchmarks, cached on disk under bench/.cache/ so that a run with
// 20,000 clients does not spend its first minute making keys:
//  - one PKI (CA + server certificate for 127.0.0.1/localhost), used by every fleetspeak server
//    and by the Mosquitto peer;
//  - client identities by index, in blocks of 1000: a P-256 key, the self-signed certificate a
//    Fleetspeak client presents, and a certificate for the same key signed by the bench CA
//    (Mosquitto with require_certificate verifies client certificates against its CA).
// When the PKI is remade, the client blocks made with the old CA are remade too.
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  buildCertificate,
  clientCertificate,
  clientIdOfKey,
  createCa,
  createServerCertificate,
  derToPem,
  generateP256Key,
  keyToPem,
  parsePrivateKeyPem,
  randomSerial,
  subjectDer,
} from "../../src/common/certs.js";
import { clientIdToHex } from "../../src/common/ids.js";

export const CACHE_DIR = resolve(import.meta.dirname, "../.cache");
const BLOCK = 1000;

export interface BenchPki {
  caCertPem: string;
  caKeyPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  /** Server certificate then CA, as https_config.certificates holds it. */
  chainPem: string;
}

export interface ClientIdentity {
  index: number;
  /** 16 hex characters. */
  id: string;
  keyPem: string;
  /** Self-signed, as a Fleetspeak client makes it. */
  certPem: string;
  /** Same key, signed by the bench CA (for the MQTT peer). */
  caSignedCertPem: string;
}

function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

function caFingerprint(pki: BenchPki): string {
  return createHash("sha256").update(pki.caCertPem).digest("hex").slice(0, 16);
}

/** The bench PKI; made on first use and whenever the cached server certificate expires within a day. */
export function benchPki(): BenchPki {
  const path = join(CACHE_DIR, "pki.json");
  if (existsSync(path)) {
    const pki = JSON.parse(readFileSync(path, "utf8")) as BenchPki;
    const until = Date.parse(new X509Certificate(pki.serverCertPem).validTo);
    if (until - Date.now() > 24 * 3600 * 1000) return pki;
  }
  mkdirSync(CACHE_DIR, { recursive: true });
  const ca = createCa("bench");
  const server = createServerCertificate("bench", ca, ["127.0.0.1", "::1", "localhost"]);
  const pki: BenchPki = {
    caCertPem: ca.certPem,
    caKeyPem: ca.keyPem,
    serverCertPem: server.certPem,
    serverKeyPem: server.keyPem,
    chainPem: server.certPem + ca.certPem,
  };
  writeAtomically(path, JSON.stringify(pki));
  return pki;
}

function makeBlock(pki: BenchPki, block: number): ClientIdentity[] {
  const caKey = parsePrivateKeyPem(pki.caKeyPem, "bench CA key");
  const caSubject = subjectDer(new X509Certificate(pki.caCertPem));
  const now = Date.now();
  const out: ClientIdentity[] = [];
  for (let i = 0; i < BLOCK; i++) {
    const key = generateP256Key();
    const id = clientIdToHex(clientIdOfKey(key));
    const caSigned = buildCertificate({
      subject: [["2.5.4.3", `bench-client-${id}`]],
      issuerDer: caSubject,
      publicKey: key,
      signingKey: caKey,
      serial: randomSerial(),
      notBefore: new Date(now - 3600 * 1000),
      notAfter: new Date(now + 365 * 24 * 3600 * 1000),
    });
    out.push({
      index: block * BLOCK + i,
      id,
      keyPem: keyToPem(key),
      certPem: derToPem(clientCertificate(key)),
      caSignedCertPem: derToPem(caSigned),
    });
  }
  return out;
}

/** Client identities [from, to), from the cache or made (and cached) now. */
export function clientIdentities(from: number, to: number, pki: BenchPki = benchPki()): ClientIdentity[] {
  const dir = join(CACHE_DIR, `clients-${caFingerprint(pki)}`);
  mkdirSync(dir, { recursive: true });
  const out: ClientIdentity[] = [];
  for (let b = Math.floor(from / BLOCK); b * BLOCK < to; b++) {
    const path = join(dir, `block-${String(b).padStart(5, "0")}.json`);
    let ids: ClientIdentity[];
    if (existsSync(path)) {
      ids = JSON.parse(readFileSync(path, "utf8")) as ClientIdentity[];
    } else {
      ids = makeBlock(pki, b);
      writeAtomically(path, JSON.stringify(ids));
    }
    for (const id of ids) if (id.index >= from && id.index < to) out.push(id);
  }
  return out;
}

/** Removes cached client blocks of older PKIs. */
export function pruneIdentityCache(pki: BenchPki = benchPki()): void {
  if (!existsSync(CACHE_DIR)) return;
  const keep = `clients-${caFingerprint(pki)}`;
  for (const name of readdirSync(CACHE_DIR)) {
    if (name.startsWith("clients-") && name !== keep) rmSync(join(CACHE_DIR, name), { recursive: true, force: true });
  }
}

