// The security options of the components config (this implementation's own fields, numbered from
// 100): admin mutual TLS, signed notifications, frontend limits. Checked here with errors that
// name the field, and turned into the options the components take.
import { createPrivateKey } from "node:crypto";
import { createSecureContext } from "node:tls";
import type { AdminConfig, Config as ComponentsConfig } from "../../gen/fleetspeak_components/config_pb.js";
import { CertificateError, parsePemCertificates } from "../../common/certs.js";
import { isLoopbackAddress, parseHostPort } from "../../common/net-address.js";
import { MIN_LOGIN_SECRET_BYTES } from "../console/login-token.js";
import type { AdminTlsConfig } from "./admin-auth.js";
import { MIN_NOTIFICATION_SECRET_BYTES, NotificationSigner, NotificationVerifier } from "./notification-auth.js";

export class SecurityConfigError extends Error {}

function pemCertificates(text: string, field: string): void {
  try {
    parsePemCertificates(text, field);
  } catch (e) {
    if (e instanceof CertificateError) throw new SecurityConfigError(e.message);
    throw e;
  }
}

/** The admin listener's TLS options, or undefined when it is plaintext (Fleetspeak's default). */
export function adminTlsFromConfig(admin: AdminConfig): AdminTlsConfig | undefined {
  const { tlsCertificates: cert, tlsKey: key, clientCaCertificates: ca } = admin;
  if (cert === "" && key === "" && ca === "") return undefined;
  if (cert === "" || key === "") {
    throw new SecurityConfigError(
      "admin_config: tls_certificates and tls_key go together" +
        (ca !== "" ? " and client_ca_certificates needs both" : "") +
        "; give the admin server's PEM certificate chain and key",
    );
  }
  pemCertificates(cert, "admin_config.tls_certificates");
  try {
    createPrivateKey(key);
  } catch (e) {
    throw new SecurityConfigError(`admin_config.tls_key: not a PEM private key: ${(e as Error).message}`);
  }
  if (ca !== "") pemCertificates(ca, "admin_config.client_ca_certificates");
  try {
    createSecureContext({ cert, key, ...(ca !== "" ? { ca } : {}) });
  } catch (e) {
    throw new SecurityConfigError(
      `admin_config: tls_certificates and tls_key cannot be used together (does the key belong to the first certificate?): ${(e as Error).message}`,
    );
  }
  return ca !== "" ? { cert, key, ca, requireClientCert: true } : { cert, key };
}

export interface ConsoleSettings {
  listenAddress: string;
  loginSecrets: string[];
  /** The admin server's TLS, which the console shares. */
  tls?: AdminTlsConfig;
}

/** admin_config.console, checked; undefined when the console is off. */
export function consoleFromConfig(admin: AdminConfig): ConsoleSettings | undefined {
  const c = admin.console;
  if (!c) return undefined;
  if (c.listenAddress === "") {
    throw new SecurityConfigError('admin_config.console.listen_address is empty; give the console its own address, e.g. "127.0.0.1:6062"');
  }
  try {
    parseHostPort(c.listenAddress, { emptyHost: "" });
  } catch (e) {
    throw new SecurityConfigError(`admin_config.console.listen_address: ${(e as Error).message}`);
  }
  for (const [i, secret] of c.loginSecret.entries()) {
    if (Buffer.byteLength(secret, "utf8") < MIN_LOGIN_SECRET_BYTES) {
      throw new SecurityConfigError(
        `admin_config.console.login_secret #${i + 1} is shorter than ${MIN_LOGIN_SECRET_BYTES} bytes; use a random one, e.g. the output of "openssl rand -hex 32"`,
      );
    }
  }
  const tls = adminTlsFromConfig(admin);
  if (c.loginSecret.length === 0 && !tls?.requireClientCert) {
    throw new SecurityConfigError(
      "admin_config.console: nobody could sign in; set console.login_secret (browsers sign in with a token from fleetspeak-admin console-token) and/or admin_config.client_ca_certificates (browsers present a client certificate)",
    );
  }
  return { listenAddress: c.listenAddress, loginSecrets: [...c.loginSecret], ...(tls ? { tls } : {}) };
}

export interface NotificationAuth {
  signer: NotificationSigner;
  verifier: NotificationVerifier;
}

/** Signer and verifier for notification_shared_secret, or undefined when it is not set. */
export function notificationAuthFromConfig(cfg: ComponentsConfig): NotificationAuth | undefined {
  const secrets = cfg.notificationSharedSecret;
  if (secrets.length === 0) return undefined;
  for (const [i, s] of secrets.entries()) {
    if (Buffer.byteLength(s, "utf8") < MIN_NOTIFICATION_SECRET_BYTES) {
      throw new SecurityConfigError(
        `notification_shared_secret #${i + 1} is shorter than ${MIN_NOTIFICATION_SECRET_BYTES} bytes; use a random one, e.g. the output of "openssl rand -hex 32"`,
      );
    }
  }
  return { signer: new NotificationSigner(secrets[0]!), verifier: new NotificationVerifier(secrets) };
}

/**
 * Checks the security fields; returns summary lines, and warnings for ports that accept anyone on
 * a non-loopback address.
 */
export function checkSecurityConfig(cfg: ComponentsConfig): { summary: string[]; warnings: string[] } {
  const summary: string[] = [];
  const warnings: string[] = [];
  if (cfg.adminConfig) {
    const tls = adminTlsFromConfig(cfg.adminConfig);
    if (tls?.requireClientCert) {
      summary.push("admin API: mutual TLS (callers need a certificate from admin_config.client_ca_certificates)");
    } else if (tls) {
      summary.push("admin API: TLS without client authentication");
    }
    if (!tls?.requireClientCert && !isLoopbackAddress(cfg.adminConfig.listenAddress)) {
      warnings.push(
        `admin_config: anyone who can reach ${cfg.adminConfig.listenAddress} can send messages to every client; set admin_config.client_ca_certificates (mutual TLS) or firewall the port (see docs/security.md)`,
      );
    }
  }
  const consoleSettings = cfg.adminConfig ? consoleFromConfig(cfg.adminConfig) : undefined;
  if (consoleSettings) {
    const { tls, listenAddress, loginSecrets } = consoleSettings;
    const ways = [loginSecrets.length > 0 ? "login tokens" : "", tls?.requireClientCert ? "client certificates" : ""];
    summary.push(
      `operator console on ${tls ? "https" : "http"}://${listenAddress} (sign-in: ${ways.filter(Boolean).join(", ")})`,
    );
    if (!tls && !isLoopbackAddress(listenAddress)) {
      warnings.push(
        `admin_config.console: login tokens and pages would cross the network to ${listenAddress} unencrypted; set admin_config.tls_certificates and tls_key (the console then speaks HTTPS) or listen on 127.0.0.1 (see docs/console.md)`,
      );
    }
  }
  const auth = notificationAuthFromConfig(cfg);
  if (auth) {
    summary.push(`notifications signed with a shared secret (${cfg.notificationSharedSecret.length} configured)`);
  } else if (cfg.notificationListenAddress && !isLoopbackAddress(cfg.notificationListenAddress)) {
    warnings.push(
      `notification_listen_address: anyone who can reach ${cfg.notificationListenAddress} can make this server look for messages for any client; set notification_shared_secret on every server or firewall the port (see docs/security.md)`,
    );
  }
  return { summary, warnings };
}
