// Fleetspeak identifiers: 8-byte client IDs derived from the client's public key, and 32-byte
// message IDs (derived for client-originated messages, random for server-originated ones).
import { createHash, randomBytes } from "node:crypto";

export const CLIENT_ID_BYTES = 8;
export const MESSAGE_ID_BYTES = 32;
export const BROADCAST_ID_BYTES = 8;

export class IdError extends Error {}

/** ClientID = first 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo of the client's key. */
export function clientIdFromSpki(spkiDer: Uint8Array): Buffer {
  return createHash("sha256").update(spkiDer).digest().subarray(0, CLIENT_ID_BYTES);
}

/** Lower-case hex text form; the empty (nil) ID prints as "nil", as Fleetspeak does. */
export function clientIdToHex(id: Uint8Array): string {
  return id.length === 0 ? "nil" : Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString("hex");
}

export function bytesToHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** Parses a client ID in text form: "" and "nil" are the nil ID, otherwise exactly 16 hex chars. */
export function parseClientIdHex(text: string): Buffer {
  if (text === "" || text === "nil") return Buffer.alloc(0);
  if (text.length !== 2 * CLIENT_ID_BYTES) {
    throw new IdError(`ClientID must be 16 characters, got ${JSON.stringify(text)}`);
  }
  if (!/^[0-9a-fA-F]+$/.test(text)) {
    throw new IdError(`ClientID must be hexadecimal, got ${JSON.stringify(text)}`);
  }
  return Buffer.from(text, "hex");
}

/** Checks a binary client ID: empty is nil, otherwise exactly 8 bytes. */
export function checkClientId(id: Uint8Array, what = "ClientID"): Uint8Array {
  if (id.length !== 0 && id.length !== CLIENT_ID_BYTES) {
    throw new IdError(`${what} must be 8 bytes, got ${id.length}`);
  }
  return id;
}

/**
 * The ID the server gives a client-originated message:
 * SHA-256(client_id || 0x00 || service_name || 0x00 || source_message_id). Deterministic, so a
 * client that resends a message (same source_message_id) produces the same ID.
 */
export function clientMessageId(
  clientId: Uint8Array,
  serviceName: string,
  sourceMessageId: Uint8Array,
): Buffer {
  const zero = Buffer.alloc(1);
  return createHash("sha256")
    .update(clientId)
    .update(zero)
    .update(serviceName, "utf8")
    .update(zero)
    .update(sourceMessageId)
    .digest();
}

export function randomMessageId(): Buffer {
  return randomBytes(MESSAGE_ID_BYTES);
}

export function randomBroadcastId(): Buffer {
  return randomBytes(BROADCAST_ID_BYTES);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
