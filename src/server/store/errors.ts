// Errors a Store raises, so that callers can answer with the right status (gRPC code, HTTP
// status) and background loops can tell "retry later" from "this will never work".

/** The database cannot be reached or failed transiently; the caller may retry. */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
}

/** A record the caller named does not exist. */
export class NotFoundError extends Error {
  override readonly name = "NotFoundError";
}

/** The request itself is wrong (bad ID length, oversize payload, missing field). */
export class InvalidArgumentError extends Error {
  override readonly name = "InvalidArgumentError";
}

/** The database schema was written by a newer version of this server. */
export class SchemaVersionError extends Error {
  override readonly name = "SchemaVersionError";
}
