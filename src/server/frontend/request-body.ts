// Request bodies of client contacts: optionally zlib-compressed (Content-Encoding: deflate),
// bounded in size after decompression.
import type { IncomingMessage } from "node:http";
import { createInflate } from "node:zlib";
import type { Readable } from "node:stream";
import { ContactError } from "../comms/comms.js";
import { type BufferBudget, type Reservation, SMALL_REQUEST_BYTES } from "../security/buffer-budget.js";

/** The body as a stream of decompressed bytes; 415 for an encoding we do not speak. */
export function decodedBody(req: IncomingMessage): Readable {
  const enc = (req.headers["content-encoding"] ?? "").toLowerCase().trim();
  if (enc === "" || enc === "identity") return req;
  if (enc === "deflate") {
    const inflate = createInflate();
    req.on("error", (e) => inflate.destroy(e));
    req.pipe(inflate);
    inflate.on("error", () => {
      // Reported to the reader through the stream error; keep the request from leaking.
      req.unpipe(inflate);
      req.resume();
    });
    return inflate;
  }
  throw new ContactError(415, `unsupported Content-Encoding "${enc}"; use deflate or none`);
}

export interface WholeBodyOptions {
  /** Server-wide memory for request data: beyond SMALL_REQUEST_BYTES the body must fit in it. */
  budget?: BufferBudget;
  /** The body must have arrived within this. */
  deadlineMs?: number;
}

/** Room taken from the budget in steps, so that a growing body does not ask for every chunk. */
const BUDGET_STEP_BYTES = 1024 * 1024;

/**
 * Reads the whole (decompressed) body, failing with 400 beyond `limit` bytes, 503 when the
 * server-wide budget has no room for it, 408 past the deadline. `release` gives its memory back
 * to the budget; call it once the body has been processed.
 */
export function readWholeBody(
  body: Readable,
  limit: number,
  opts: WholeBodyOptions = {},
): Promise<{ body: Buffer; release: () => void }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let reservation: Reservation | undefined;
    const release = () => reservation?.release();
    const timer =
      opts.deadlineMs === undefined
        ? undefined
        : setTimeout(() => fail(408, `request body not received within ${opts.deadlineMs} ms`, false), opts.deadlineMs);
    /** `cut`: drop the connection at once; else stop reading, so that the answer can be sent. */
    const fail = (status: number, message: string, cut: boolean) => {
      clearTimeout(timer);
      release();
      if (cut) body.destroy();
      else {
        body.removeAllListeners("data");
        body.pause();
      }
      reject(new ContactError(status, message));
    };
    const reserve = (): boolean => {
      if (!opts.budget || size <= SMALL_REQUEST_BYTES || (reservation && reservation.bytes >= size)) return true;
      const step = Math.min(limit, size + BUDGET_STEP_BYTES) - (reservation?.bytes ?? 0);
      if (reservation) return reservation.tryGrow(step);
      reservation = opts.budget.tryReserve(step);
      return reservation !== undefined;
    };
    body.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) return fail(400, `request body exceeds the limit of ${limit} bytes`, true);
      if (!reserve()) {
        return fail(
          503,
          "the server is holding too much request data from other clients (frontend limits.max_buffered_request_bytes); try again later",
          false,
        );
      }
      chunks.push(c);
    });
    body.on("end", () => {
      clearTimeout(timer);
      resolve({ body: Buffer.concat(chunks, size), release });
    });
    body.on("error", (e: Error) => {
      clearTimeout(timer);
      release();
      reject(new ContactError(400, `cannot read request body: ${e.message}`));
    });
  });
}
