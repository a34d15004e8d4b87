// A TLS listener's certificate chain and key, checked the way the listener will use them, so that
// `fleetspeak-server --check` fails where the real start would (or where clients would refuse the
// server at once): both parse, the key belongs to the first certificate, every certificate is
// valid now. Certificates that expire within 30 days, and a host the certificate does not name,
// are warnings.
import { createPrivateKey, type KeyObject, type X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext } from "node:tls";
import { CertificateError, parsePemCertificates } from "../../common/certs.js";

/** Soon enough to warn about: an operator has a month to renew. */
export const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 24 * 3600 * 1000;

/**
 * A problem with one field of the config. The message starts with the field's name; `field` lets
 * the caller add its file:line:column.
 */
export class TlsMaterialError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(reason);
  }
}

export interface TlsMaterialCheck {
  /** E.g. "CN=Example Fleetspeak Server, names fleetspeak.example.com, valid until 2027-12-04". */
  description: string;
  warnings: Array<{ field: string; message: string }>;
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** Every certificate of a PEM text, or a TlsMaterialError naming `field`. */
export function parseCertificates(pem: string, field: string): X509Certificate[] {
  try {
    return parsePemCertificates(pem, field);
  } catch (e) {
    if (e instanceof CertificateError) throw new TlsMaterialError(field, `${e.message}; give the PEM certificate chain, with \\n for line breaks`);
    throw e;
  }
}

/** Dates of every certificate of `field`: not yet valid or expired throws, expiring soon warns. */
export function checkValidity(certs: X509Certificate[], field: string, now: number): Array<{ field: string; message: string }> {
  const warnings: Array<{ field: string; message: string }> = [];
  for (const [i, cert] of certs.entries()) {
    const name = `certificate #${i + 1} (${cert.subject.replace(/\n/g, ", ")})`;
    const from = new Date(cert.validFrom);
    const to = new Date(cert.validTo);
    if (from.getTime() > now) {
      throw new TlsMaterialError(field, `${field}: ${name} is not valid before ${from.toISOString()}; check this machine's clock, or use a certificate valid now`);
    }
    if (to.getTime() < now) {
      throw new TlsMaterialError(field, `${field}: ${name} expired on ${to.toISOString()}; clients refuse it: renew it (docs/install.md, "The CA key")`);
    }
    const days = Math.floor((to.getTime() - now) / DAY_MS);
    if (days < EXPIRY_WARNING_DAYS) {
      warnings.push({ field, message: `${field}: ${name} expires on ${day(to)}, in ${days} days; renew it before then` });
    }
  }
  return warnings;
}

/**
 * Checks a server's chain (`chainField`) and key (`keyField`). `host`, when given, is a name or IP
 * clients dial; a certificate that does not name it is a warning.
 */
export function checkServerTls(opts: {
  chainPem: string;
  keyPem: string;
  chainField: string;
  keyField: string;
  host?: string;
  now?: number;
}): TlsMaterialCheck {
  const now = opts.now ?? Date.now();
  const certs = parseCertificates(opts.chainPem, opts.chainField);
  let key: KeyObject;
  try {
    key = createPrivateKey(opts.keyPem);
  } catch (e) {
    throw new TlsMaterialError(opts.keyField, `${opts.keyField}: not a PEM private key (${(e as Error).message}); give the key of the first certificate of ${opts.chainField}`);
  }
  const leaf = certs[0]!;
  if (!leaf.checkPrivateKey(key)) {
    throw new TlsMaterialError(
      opts.keyField,
      `${opts.keyField}: the key does not belong to the first certificate of ${opts.chainField} (${leaf.subject.replace(/\n/g, ", ")}); give that certificate's key, or put the key's certificate first`,
    );
  }
  try {
    createSecureContext({ cert: opts.chainPem, key: opts.keyPem });
  } catch (e) {
    throw new TlsMaterialError(opts.chainField, `${opts.chainField}: TLS cannot use this certificate and key: ${(e as Error).message}`);
  }
  const warnings = checkValidity(certs, opts.chainField, now);
  const names = (leaf.subjectAltName ?? "")
    .split(", ")
    .map((n) => n.replace(/^(DNS|IP Address):/, ""))
    .filter(Boolean);
  if (opts.host) {
    const covered = isIP(opts.host) ? leaf.checkIP(opts.host) : leaf.checkHost(opts.host);
    if (!covered) {
      warnings.push({
        field: opts.chainField,
        message: `${opts.chainField}: the certificate names ${names.join(", ") || "no host"}, not ${opts.host}; clients dialing ${opts.host} will refuse the server`,
      });
    }
  }
  const subject = leaf.subject.replace(/\n/g, ", ");
  return {
    description: `${subject}${names.length > 0 ? `, names ${names.join(", ")}` : ""}, valid until ${day(new Date(leaf.validTo))}`,
    warnings,
  };
}
