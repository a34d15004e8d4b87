// Request bodies of client contacts: optionally zlib-compressed (Content-Encoding: deflate),
// bounded in size after decompression.
import type { IncomingMessage } from "node:http";
import { createInflate } from "node:zlib";
import type { Readable } from "node:stream";
import { ContactError } from "../comms/comms.js";

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

/** Reads the whole (decompressed) body, failing with 400 beyond `limit` bytes. */
export function readWholeBody(body: Readable, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    body.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        body.destroy();
        reject(new ContactError(400, `request body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    body.on("end", () => resolve(Buffer.concat(chunks, size)));
    body.on("error", (e: Error) => {
      reject(new ContactError(400, `cannot read request body: ${e.message}`));
    });
  });
}
