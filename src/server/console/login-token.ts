// Login tokens of the operator console: "fsc1.<payload>.<signature>", the payload being who and
// until when (base64url JSON) and the signature HMAC-SHA256 over it with console.login_secret.
// Anyone who can read the admin server's components config can make one (fleetspeak-admin
// console-token); the server keeps no session state, so every admin server with the same secret
// accepts the same token, and changing the secret ends every session.
import { createHmac, timingSafeEqual } from "node:crypto";

const PREFIX = "fsc1";
/** Longest token accepted (a cookie or a pasted form field); real ones are ~150 characters. */
const MAX_TOKEN_CHARS = 1024;
/** Who a token is for: a name for the logs, not a secret. */
const USER_PATTERN = /^[\w.@+-]{1,64}$/;
export const MIN_LOGIN_SECRET_BYTES = 32;
/** Longest validity a token may be made with. */
export const MAX_TOKEN_VALIDITY_MS = 31 * 24 * 3600 * 1000;

export interface LoginToken {
  user: string;
  expiresMs: number;
}

function sign(secret: string, payload: string): Buffer {
  return createHmac("sha256", secret).update(`${PREFIX}.${payload}`).digest();
}

/** Throws with a sentence naming what is wrong (for the command line). */
export function createLoginToken(secret: string, user: string, validForMs: number, nowMs = Date.now()): string {
  if (Buffer.byteLength(secret, "utf8") < MIN_LOGIN_SECRET_BYTES) {
    throw new Error(`the login secret is shorter than ${MIN_LOGIN_SECRET_BYTES} bytes`);
  }
  if (!USER_PATTERN.test(user)) {
    throw new Error(`user ${JSON.stringify(user)}: use 1 to 64 letters, digits or . _ @ + -`);
  }
  if (!(validForMs > 0 && validForMs <= MAX_TOKEN_VALIDITY_MS)) {
    throw new Error(`a token may be valid for up to ${MAX_TOKEN_VALIDITY_MS / 86_400_000} days`);
  }
  const payload = Buffer.from(JSON.stringify({ u: user, exp: Math.floor(nowMs + validForMs) })).toString("base64url");
  return `${PREFIX}.${payload}.${sign(secret, payload).toString("base64url")}`;
}

/** Why a token is refused, for the login page; or the token's holder. */
export type TokenCheck = { ok: true; token: LoginToken } | { ok: false; reason: string };

/** Checks a token against every configured secret. */
export function verifyLoginToken(text: string, secrets: readonly string[], nowMs = Date.now()): TokenCheck {
  const bad = { ok: false as const, reason: "this is not a console login token; make one with fleetspeak-admin console-token" };
  const token = text.trim();
  if (token.length > MAX_TOKEN_CHARS) return bad;
  const parts = token.split(".");
  if (parts.length !== 3 || parts[0] !== PREFIX) return bad;
  const [, payload, signature] = parts as [string, string, string];
  const given = Buffer.from(signature, "base64url");
  const signed = secrets.some((s) => {
    const want = sign(s, payload);
    return given.length === want.length && timingSafeEqual(given, want);
  });
  if (!signed) {
    return { ok: false, reason: "this token was not made with this server's login secret (or the secret has changed)" };
  }
  let claims: { u?: unknown; exp?: unknown };
  try {
    claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as typeof claims;
  } catch {
    return bad;
  }
  if (typeof claims.u !== "string" || typeof claims.exp !== "number") return bad;
  if (claims.exp <= nowMs) {
    return { ok: false, reason: `this token expired at ${new Date(claims.exp).toISOString()}; make a new one` };
  }
  return { ok: true, token: { user: claims.u, expiresMs: claims.exp } };
}
