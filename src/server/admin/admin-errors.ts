// How the admin API reports failures: a proper gRPC status (Fleetspeak answers UNKNOWN for
// everything) with a sentence an operator can act on, keeping Fleetspeak's texts where it has one.
import { Code, ConnectError } from "@connectrpc/connect";
import { IdError } from "../../common/ids.js";
import { InvalidArgumentError, NotFoundError, StoreUnavailableError } from "../store/errors.js";

export function invalidArgument(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/**
 * Maps an error thrown while serving `rpc` to a gRPC status. Errors that are not recognised are
 * server faults: INTERNAL, and the caller logs them.
 */
export function toConnectError(err: unknown, rpc: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof StoreUnavailableError) {
    return new ConnectError(
      `${rpc}: the database is unavailable (${err.message}); nothing was changed, retry later`,
      Code.Unavailable,
      undefined,
      undefined,
      err,
    );
  }
  if (err instanceof InvalidArgumentError || err instanceof IdError) {
    return new ConnectError(`${rpc}: ${err.message}`, Code.InvalidArgument, undefined, undefined, err);
  }
  if (err instanceof NotFoundError) {
    return new ConnectError(`${rpc}: ${err.message}`, Code.NotFound, undefined, undefined, err);
  }
  const text = err instanceof Error ? err.message : String(err);
  return new ConnectError(`${rpc}: internal error: ${text}`, Code.Internal, undefined, undefined, err);
}
