// Keys and certificates: the client's P-256 identity and its self-signed certificate, and the CA
// and server certificates of a deployment. Built with node:crypto and a small DER encoder, so that
// creating thousands of client identities (load tests) stays cheap and synchronous.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from "node:crypto";
import { isIP } from "node:net";
import * as der from "./der.js";
import { clientIdFromSpki, clientIdToHex } from "./ids.js";

export class CertificateError extends Error {}

const OID = {
  ecPublicKey: "1.2.840.10045.2.1",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

export function generateP256Key(): KeyObject {
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
}

/** SEC1 / RFC 5915 DER, the form Fleetspeak keeps in ClientState.client_key. */
export function keyToSec1Der(key: KeyObject): Buffer {
  return key.export({ type: "sec1", format: "der" });
}

export function keyFromSec1Der(der: Uint8Array, where = "client key"): KeyObject {
  try {
    return createPrivateKey({ key: Buffer.from(der), format: "der", type: "sec1" });
  } catch (e) {
    throw new CertificateError(`${where}: not a valid EC private key (SEC1 DER): ${(e as Error).message}`);
  }
}

export function keyToPem(key: KeyObject): string {
  if (key.asymmetricKeyType === "ec") return key.export({ type: "sec1", format: "pem" }).toString();
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}

export function spkiDer(key: KeyObject): Buffer {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return pub.export({ type: "spki", format: "der" });
}

/** The Fleetspeak ClientID of a key: first 8 bytes of SHA-256 over its SPKI DER. */
export function clientIdOfKey(key: KeyObject): Buffer {
  return clientIdFromSpki(spkiDer(key));
}

function name(attrs: Array<[string, string]>): Buffer {
  return der.sequence(...attrs.map(([o, v]) => der.set(der.sequence(der.oid(o), der.utf8String(v)))));
}

function algorithmFor(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === "ec") return der.sequence(der.oid(OID.ecdsaWithSha256));
  if (key.asymmetricKeyType === "rsa") return der.sequence(der.oid(OID.sha256WithRsa), der.nullValue());
  throw new CertificateError(`unsupported signing key type ${key.asymmetricKeyType}; use an EC P-256 or RSA key`);
}

function extension(oidText: string, critical: boolean, value: Uint8Array): Buffer {
  return der.sequence(der.oid(oidText), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
}

export interface CertificateSpec {
  subject: Array<[string, string]>;
  /** Defaults to the subject (self-signed). */
  issuer?: Array<[string, string]>;
  /** The issuer Name as DER, taking precedence over `issuer`: the issuing CA's subject, byte for byte. */
  issuerDer?: Uint8Array;
  publicKey: KeyObject;
  signingKey: KeyObject;
  serial?: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  isCa?: boolean;
  /** Key usage bits: digitalSignature (0x80), keyCertSign (0x04), keyEncipherment (0x20). */
  keyUsage?: number;
  extKeyUsage?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split(".").map(Number));
  const [head = "", tail = ""] = ip.split("::");
  const parse = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const h = parse(head);
  const t = parse(tail);
  const groups = ip.includes("::") ? [...h, ...new Array(8 - h.length - t.length).fill(0), ...t] : h;
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(g, 2 * i);
  return out;
}

/** Builds and signs an X.509 v3 certificate; returns its DER. */
export function buildCertificate(spec: CertificateSpec): Buffer {
  const exts: Buffer[] = [];
  if (spec.isCa !== undefined) {
    exts.push(extension(OID.basicConstraints, true, spec.isCa ? der.sequence(der.boolean(true)) : der.sequence()));
  }
  if (spec.keyUsage !== undefined) {
    exts.push(extension(OID.keyUsage, true, der.bitString(Buffer.from([spec.keyUsage]), lowestBit(spec.keyUsage))));
  }
  if (spec.extKeyUsage?.length) {
    exts.push(extension(OID.extKeyUsage, false, der.sequence(...spec.extKeyUsage.map((o) => der.oid(o)))));
  }
  const sans = [
    ...(spec.dnsNames ?? []).map((d) => der.tlv(0x82, Buffer.from(d, "ascii"))),
    ...(spec.ipAddresses ?? []).map((ip) => der.tlv(0x87, ipBytes(ip))),
  ];
  if (sans.length) exts.push(extension(OID.subjectAltName, false, der.sequence(...sans)));

  const alg = algorithmFor(spec.signingKey);
  const tbs = der.sequence(
    der.explicit(0, der.smallInteger(2)),
    der.integer(spec.serial ?? randomSerial()),
    alg,
    spec.issuerDer ? Buffer.from(spec.issuerDer) : name(spec.issuer ?? spec.subject),
    der.sequence(der.time(spec.notBefore), der.time(spec.notAfter)),
    name(spec.subject),
    spkiDer(spec.publicKey),
    ...(exts.length ? [der.explicit(3, der.sequence(...exts))] : []),
  );
  const signature = sign("sha256", tbs, spec.signingKey);
  return der.sequence(tbs, alg, der.bitString(signature));
}

function lowestBit(v: number): number {
  for (let i = 0; i < 8; i++) if (v & (1 << i)) return i;
  return 0;
}

/** 128-bit positive random serial, as Fleetspeak's configurator uses. */
export function randomSerial(): Buffer {
  const s = randomBytes(16);
  s[0] = s[0]! & 0x7f;
  return s;
}

export function derToPem(derBytes: Uint8Array, label = "CERTIFICATE"): string {
  const b64 = Buffer.from(derBytes).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/**
 * The certificate a client presents: self-signed with its own key, subject O=<client id hex>,
 * serial 1. Only its public key matters to the server. Unlike Fleetspeak's Go client we give it
 * real validity dates (a TLS stack that checks dates will not trip over year 1).
 */
export function clientCertificate(key: KeyObject): Buffer {
  const id = clientIdToHex(clientIdOfKey(key));
  const now = Date.now();
  return buildCertificate({
    subject: [[OID.organization, id]],
    publicKey: key,
    signingKey: key,
    serial: Buffer.from([1]),
    notBefore: new Date(now - 24 * 3600 * 1000),
    notAfter: new Date(now + 10 * 365 * 24 * 3600 * 1000),
  });
}

export interface CertAndKey {
  certPem: string;
  keyPem: string;
  cert: X509Certificate;
  key: KeyObject;
}

/** A deployment CA: P-256, CN "<name> Fleetspeak CA", 10 years, as fleetspeak-config creates. */
export function createCa(configurationName: string): CertAndKey {
  const key = generateP256Key();
  const now = Date.now();
  const certDer = buildCertificate({
    subject: [[OID.commonName, `${configurationName} Fleetspeak CA`]],
    publicKey: key,
    signingKey: key,
    notBefore: new Date(now - 3600 * 1000),
    notAfter: new Date(now + 10 * 365 * 24 * 3600 * 1000),
    isCa: true,
    keyUsage: 0x80 | 0x04,
  });
  return { certPem: derToPem(certDer), keyPem: keyToPem(key), cert: new X509Certificate(certDer), key };
}

/**
 * A server certificate signed by the CA, with SANs for every host the clients dial (IP literals
 * become IP SANs, names DNS SANs), 1 year.
 */
export function createServerCertificate(
  configurationName: string,
  ca: { cert: X509Certificate; key: KeyObject },
  hosts: string[],
): CertAndKey {
  const key = generateP256Key();
  const now = Date.now();
  const certDer = buildCertificate({
    subject: [[OID.commonName, `${configurationName} Fleetspeak Server`]],
    // Go finds a certificate's parent by comparing raw issuer and subject bytes, so the issuer is
    // copied from the CA (which may be a Fleetspeak-made CA with a PrintableString name).
    issuerDer: subjectDer(ca.cert),
    publicKey: key,
    signingKey: ca.key,
    notBefore: new Date(now - 3600 * 1000),
    notAfter: new Date(now + 365 * 24 * 3600 * 1000),
    isCa: false,
    keyUsage: 0x80 | 0x20,
    extKeyUsage: [OID.serverAuth, OID.clientAuth],
    dnsNames: hosts.filter((h) => isIP(h) === 0),
    ipAddresses: hosts.filter((h) => isIP(h) !== 0),
  });
  return { certPem: derToPem(certDer), keyPem: keyToPem(key), cert: new X509Certificate(certDer), key };
}

/** The elements inside a DER constructed value (its content octets), each with its header. */
function derChildren(content: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < content.length) {
    const start = i;
    i++;
    let len = content[i++]!;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + content[i++]!;
    }
    const end = i + len;
    if (end > content.length) throw new CertificateError("truncated DER element in certificate");
    out.push(content.subarray(start, end));
    i = end;
  }
  return out;
}

function derContent(element: Buffer): Buffer {
  const first = element[1]!;
  return element.subarray(first & 0x80 ? 2 + (first & 0x7f) : 2);
}

/** A certificate's subject Name exactly as encoded in it. */
export function subjectDer(cert: X509Certificate): Buffer {
  const [tbs] = derChildren(derContent(cert.raw));
  const fields = derChildren(derContent(tbs!));
  // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, ...
  const subject = fields[(fields[0]![0] === 0xa0 ? 1 : 0) + 4];
  if (!subject) throw new CertificateError("certificate has no subject");
  return subject;
}

/** Reads every certificate from PEM text; names `where` in errors. */
export function parsePemCertificates(pem: string, where: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    throw new CertificateError(`${where}: no "-----BEGIN CERTIFICATE-----" block found`);
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      throw new CertificateError(`${where}: certificate #${i + 1} cannot be parsed: ${(e as Error).message}`);
    }
  });
}

export function parsePrivateKeyPem(pem: string, where: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (e) {
    throw new CertificateError(`${where}: not a valid PEM private key: ${(e as Error).message}`);
  }
}
