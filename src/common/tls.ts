// TLS settings both ends of the client protocol share.

/**
 * Cipher suites: the TLS 1.3 suites (which Go always enables) and the four ECDHE AES-GCM TLS 1.2
 * suites that Fleetspeak's client and server restrict themselves to.
 */
export const FLEETSPEAK_CIPHERS = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
].join(":");
