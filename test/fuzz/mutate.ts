// Mutation-based inputs for the fuzz tests: a valid input from a corpus with a few random edits
// (insert, delete, overwrite, duplicate or cut a slice; flip a bit; splice in a token that means
// something to the parser). Mostly-valid inputs reach far deeper into a parser than random bytes.
import fc from "fast-check";

type Edit =
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; len: number }
  | { kind: "overwrite"; at: number; bytes: Uint8Array }
  | { kind: "duplicate"; at: number; len: number; to: number }
  | { kind: "truncate"; at: number }
  | { kind: "flip"; at: number; bit: number };

function editArb(tokens: Uint8Array[]): fc.Arbitrary<Edit> {
  const piece = tokens.length > 0 ? fc.oneof(fc.uint8Array({ maxLength: 8 }), fc.constantFrom(...tokens)) : fc.uint8Array({ maxLength: 8 });
  return fc.oneof(
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: piece }),
    fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), len: fc.integer({ min: 1, max: 16 }) }),
    fc.record({ kind: fc.constant("overwrite" as const), at: fc.nat(), bytes: piece }),
    fc.record({ kind: fc.constant("duplicate" as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }), to: fc.nat() }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  );
}

function apply(input: Uint8Array, edits: Edit[]): Buffer {
  let b = Buffer.from(input);
  for (const e of edits) {
    const at = b.length === 0 ? 0 : e.at % (b.length + 1);
    switch (e.kind) {
      case "insert":
        b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at)]);
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.len)]);
        break;
      case "overwrite":
        b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at + e.bytes.length)]);
        break;
      case "duplicate": {
        const slice = b.subarray(at, at + e.len);
        const to = b.length === 0 ? 0 : e.to % (b.length + 1);
        b = Buffer.concat([b.subarray(0, to), slice, b.subarray(to)]);
        break;
      }
      case "truncate":
        b = b.subarray(0, at);
        break;
      case "flip":
        if (b.length > 0) {
          const i = e.at % b.length;
          b = Buffer.from(b);
          b[i] = b[i]! ^ (1 << e.bit);
        }
        break;
    }
  }
  return b;
}

/** A corpus entry with 0–maxEdits random edits, as bytes. */
export function mutatedBytes(corpus: Uint8Array[], tokens: Uint8Array[] = [], maxEdits = 4): fc.Arbitrary<Buffer> {
  return fc
    .tuple(fc.constantFrom(...corpus), fc.array(editArb(tokens), { maxLength: maxEdits }))
    .map(([input, edits]) => apply(input, edits));
}

/** A corpus entry with random edits, as text (latin1, so every byte survives). */
export function mutatedText(corpus: string[], tokens: string[] = [], maxEdits = 4): fc.Arbitrary<string> {
  const enc = (s: string) => Buffer.from(s, "latin1");
  return mutatedBytes(corpus.map(enc), tokens.map(enc), maxEdits).map((b) => b.toString("latin1"));
}

/** Splits bytes into chunks at random points (how TCP may deliver them). */
export function splits(data: Uint8Array, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (data.length === 0 ? 0 : c % (data.length + 1))))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(Buffer.from(data.subarray(prev, p)));
    prev = p;
  }
  out.push(Buffer.from(data.subarray(prev)));
  return out;
}
