// Authentication of the inter-server notification protocol (POST /client/<id>), with a secret
// shared by every server of a deployment (Config.notification_shared_secret). The notifier sends
//
//   Authorization: Fleetspeak-HMAC-SHA256 t=<unix seconds>, mac=<base64url HMAC-SHA256>
//
// over "fleetspeak-notification-v1\n<method>\n<path>\n<t>". A MAC rather than the secret itself
// (a bearer token): whoever can read the internal network's traffic learns one notification for
// one client, valid for a few minutes, instead of a key to wake every stream forever. Replays
// inside the window are not tracked: a notification only makes a stream look for messages that
// are already stored, so repeating one does no harm.
import { createHmac, timingSafeEqual } from "node:crypto";

export const NOTIFICATION_AUTH_SCHEME = "Fleetspeak-HMAC-SHA256";
/** How far the sender's clock may be from ours, either way. */
export const NOTIFICATION_MAX_SKEW_SECONDS = 300;
/** Shorter secrets are refused by the config check. */
export const MIN_NOTIFICATION_SECRET_BYTES = 16;

const HEADER = /^Fleetspeak-HMAC-SHA256 t=(\d{1,15}), ?mac=([A-Za-z0-9_-]{43})$/;

function mac(secret: Buffer, method: string, path: string, t: number): Buffer {
  return createHmac("sha256", secret).update(`fleetspeak-notification-v1\n${method}\n${path}\n${t}`).digest();
}

function secretBytes(secret: string): Buffer {
  return Buffer.from(secret, "utf8");
}

/** Signs notifications with one secret (the first configured). */
export class NotificationSigner {
  readonly #secret: Buffer;

  constructor(secret: string) {
    this.#secret = secretBytes(secret);
  }

  /** The Authorization header value for `method` `path` sent at `nowMs`. */
  authorization(method: string, path: string, nowMs = Date.now()): string {
    const t = Math.floor(nowMs / 1000);
    return `${NOTIFICATION_AUTH_SCHEME} t=${t}, mac=${mac(this.#secret, method, path, t).toString("base64url")}`;
  }
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

/** Checks notifications against every configured secret (several during a rotation). */
export class NotificationVerifier {
  readonly #secrets: Buffer[];

  constructor(secrets: readonly string[]) {
    if (secrets.length === 0) throw new Error("NotificationVerifier needs at least one secret");
    this.#secrets = secrets.map(secretBytes);
  }

  verify(method: string, path: string, header: string | undefined, nowMs = Date.now()): VerifyResult {
    if (header === undefined || header === "") {
      return { ok: false, reason: "no Authorization header (this server requires signed notifications)" };
    }
    const m = HEADER.exec(header);
    if (!m) return { ok: false, reason: `Authorization header is not "${NOTIFICATION_AUTH_SCHEME} t=<seconds>, mac=<base64url>"` };
    const t = Number(m[1]);
    const skew = t - Math.floor(nowMs / 1000);
    if (Math.abs(skew) > NOTIFICATION_MAX_SKEW_SECONDS) {
      return {
        ok: false,
        reason: `signature time is ${skew} s from this server's clock (at most ±${NOTIFICATION_MAX_SKEW_SECONDS} s is accepted); synchronise the servers' clocks`,
      };
    }
    const given = Buffer.from(m[2]!, "base64url");
    for (const secret of this.#secrets) {
      if (timingSafeEqual(given, mac(secret, method, path, t))) return { ok: true };
    }
    return { ok: false, reason: "signature does not match (the servers' notification_shared_secret lists differ)" };
  }
}
