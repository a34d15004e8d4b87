// Who is calling: the client's public key, taken from the TLS handshake (mTLS, the default) or
// from a header set by an L7 proxy (the other frontend modes of fleetspeak.components.
// FrontendConfig). Error texts are Fleetspeak's, so operators can search for them.
import { X509Certificate } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { CertHeaderError, certificateChecksum, decodeCertificateHeader } from "../../common/cert-header.js";
import type { FrontendConfig } from "../../gen/fleetspeak_components/config_pb.js";

export interface ClientIdentity {
  /** DER SubjectPublicKeyInfo of the client's key: the ClientID is derived from it. */
  spki: Buffer;
}

/** The request does not identify a client; answer with `status` and `message`. */
export class IdentityError extends Error {
  readonly status = 400;
}

/** Whether the frontend listener speaks TLS: every mode except the three cleartext ones. */
export function frontendModeUsesTls(config: FrontendConfig | undefined): boolean {
  const mode = config?.frontendMode.case;
  return mode !== "cleartextHeaderConfig" && mode !== "cleartextHeaderChecksumConfig" && mode !== "cleartextXfccConfig";
}

export function identifyClient(req: IncomingMessage, config: FrontendConfig | undefined): ClientIdentity {
  const mode = config?.frontendMode;
  switch (mode?.case) {
    case undefined:
    case "mtlsConfig":
      return fromTls(req);
    case "httpsHeaderConfig":
    case "cleartextHeaderConfig":
      return fromHeader(req, mode.value.clientCertificateHeader);
    case "httpsHeaderChecksumConfig":
    case "cleartextHeaderChecksumConfig":
      return fromHeaderWithChecksum(req, mode.value.clientCertificateHeader, mode.value.clientCertificateChecksumHeader);
    case "cleartextXfccConfig":
      return fromXfcc(req, mode.value.clientCertificateHeader);
  }
}

function fromTls(req: IncomingMessage): ClientIdentity {
  const socket = req.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerX509Certificate !== "function") {
    throw new IdentityError("TLS information not found");
  }
  const leaf = socket.getPeerX509Certificate();
  // Node hands the certificates the client sent as a linked list: the leaf, then each further
  // certificate of the handshake as the previous one's issuerCertificate.
  let count = 0;
  for (let c = leaf; c !== undefined && count < 10; c = c.issuerCertificate) count++;
  if (leaf === undefined || count !== 1) {
    throw new IdentityError(`expected 1 client cert, received ${count}`);
  }
  return spkiOf(leaf);
}

/** First value of a header, as Go's Header.Get returns it (Node joins repeated headers). */
function firstHeader(req: IncomingMessage, name: string): string {
  return req.headersDistinct[name.toLowerCase()]?.[0] ?? "";
}

function certificateFromHeaderValue(value: string): X509Certificate {
  let der: Buffer;
  try {
    der = decodeCertificateHeader(value);
  } catch (e) {
    if (e instanceof CertHeaderError) throw new IdentityError(e.message);
    throw e;
  }
  try {
    return new X509Certificate(der);
  } catch (e) {
    throw new IdentityError(`cannot parse the client certificate: ${(e as Error).message}`);
  }
}

function spkiOf(cert: X509Certificate): ClientIdentity {
  // A certificate can parse while its key does not (found by fuzzing: an EC point off the
  // curve); that is the client's fault, a 400, as Go's certificate parser makes it.
  try {
    return { spki: cert.publicKey.export({ type: "spki", format: "der" }) };
  } catch (e) {
    throw new IdentityError(`cannot read the public key of the client certificate: ${(e as Error).message}`);
  }
}

function fromHeader(req: IncomingMessage, headerName: string): ClientIdentity {
  const value = firstHeader(req, headerName);
  if (value === "") throw new IdentityError(`no certificate found in header with name ${JSON.stringify(headerName)}`);
  return spkiOf(certificateFromHeaderValue(value));
}

function fromHeaderWithChecksum(req: IncomingMessage, headerName: string, checksumHeaderName: string): ClientIdentity {
  const value = firstHeader(req, headerName);
  if (value === "") throw new IdentityError(`no certificate found in header with name ${JSON.stringify(headerName)}`);
  const cert = certificateFromHeaderValue(value);
  const checksum = firstHeader(req, checksumHeaderName);
  if (checksum === "") throw new IdentityError("no client certificate checksum received in header");
  if (checksum !== certificateChecksum(cert.raw)) {
    throw new IdentityError("received client certificate checksum is invalid");
  }
  return spkiOf(cert);
}

function fromXfcc(req: IncomingMessage, headerName: string): ClientIdentity {
  const value = firstHeader(req, headerName);
  if (value === "") throw new IdentityError("no certificate found in header");
  const certField = xfccField(value, "Cert");
  let der: Buffer;
  try {
    der = decodeCertificateHeader(certField || value);
  } catch (e) {
    if (!(e instanceof CertHeaderError)) throw e;
    // Fleetspeak's XFCC path words the PEM failure differently from the plain header path.
    throw new IdentityError(
      e.message === "failed to decode PEM block" || e.message === "PEM block is not a certificate"
        ? "failed to decode PEM block containing certificate"
        : e.message,
    );
  }
  try {
    return spkiOf(new X509Certificate(der));
  } catch (e) {
    throw new IdentityError(`cannot parse the client certificate: ${(e as Error).message}`);
  }
}

/**
 * The value of the first `field=` item of an Envoy x-forwarded-client-cert header, "" if none.
 * Items end at ";" or ","; a value may be double-quoted; a backslash escapes the next character
 * inside or outside quotes (a trailing lone backslash ends the scan). Keys are compared verbatim;
 * the scan stops at the first empty key. Same rules as Fleetspeak's xfccParser.
 */
export function xfccField(header: string, field: string): string {
  let i = 0;
  while (i < header.length) {
    let key = "";
    let value = "";
    let state: "key" | "valueStart" | "value" | "quoted" = "key";
    for (; i < header.length; i++) {
      const c = header[i]!;
      if (state === "key") {
        if (c === "=") state = "valueStart";
        else key += c;
        continue;
      }
      if (state === "valueStart") {
        if (c === '"') {
          state = "quoted";
          continue;
        }
        state = "value";
      }
      if (state === "value" && (c === ";" || c === ",")) break;
      if (state === "quoted" && c === '"') {
        state = "value";
        continue;
      }
      if (c === "\\") {
        if (i + 1 === header.length) return "";
        i++;
      }
      value += header[i];
    }
    i++;
    if (key === "") return "";
    if (key === field) return value;
  }
  return "";
}
