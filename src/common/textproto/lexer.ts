// Tokenizer for the protobuf text format. Every token carries its 1-based line and column so the
// parser can point at it; whitespace and `#` comments are skipped between tokens.
import { TextFormatError } from "./error.js";

export type TokenKind = "ident" | "number" | "string" | "symbol" | "eof";

export interface Token {
  kind: TokenKind;
  /** Source text of the token (for strings: including the quotes). */
  text: string;
  line: number;
  column: number;
  /** Decoded contents of a string literal; escapes yield raw bytes, other characters UTF-8. */
  bytes?: Uint8Array;
}

const SYMBOLS = new Set(["{", "}", "<", ">", "[", "]", ":", ",", ";", "-", "/", "."]);

// Characters of a type URL or extension name between `[` and `]`.
const BRACKET_NAME_CHAR = /[A-Za-z0-9_.\-/~%]/;

const SIMPLE_ESCAPES: Record<string, number> = {
  n: 0x0a,
  t: 0x09,
  r: 0x0d,
  "\\": 0x5c,
  "'": 0x27,
  '"': 0x22,
  "?": 0x3f,
  a: 0x07,
  b: 0x08,
  f: 0x0c,
  v: 0x0b,
};

const ESCAPE_HELP = "valid escapes are \\n \\t \\r \\\\ \\' \\\" \\? \\a \\b \\f \\v \\NNN (octal) \\xNN \\uXXXX \\UXXXXXXXX";

export class Lexer {
  private pos = 0;
  private line = 1;
  private lineStart = 0;
  private lookahead: Token | undefined;

  constructor(
    private readonly src: string,
    readonly fileName: string,
  ) {}

  error(at: { line: number; column: number }, reason: string): TextFormatError {
    return new TextFormatError(this.fileName, at.line, at.column, reason);
  }

  peek(): Token {
    this.lookahead ??= this.scan();
    return this.lookahead;
  }

  next(): Token {
    const t = this.peek();
    this.lookahead = undefined;
    return t;
  }

  /** True (and consumes it) when the next token is the symbol `s`. */
  accept(s: string): boolean {
    const t = this.peek();
    if (t.kind === "symbol" && t.text === s) {
      this.lookahead = undefined;
      return true;
    }
    return false;
  }

  /**
   * Reads the name inside `[...]` (a type URL or an extension name) after the `[` token has been
   * consumed, through the closing `]`. Whitespace and comments inside are ignored.
   */
  readBracketName(open: Token): string {
    if (this.lookahead !== undefined) throw new Error("textproto lexer: readBracketName after peek");
    let name = "";
    for (;;) {
      this.skipSpace();
      if (this.pos >= this.src.length) {
        throw this.error(open, `"[" is never closed; expected a type name such as [type.googleapis.com/package.Message] followed by "]"`);
      }
      const c = this.src[this.pos]!;
      if (c === "]") {
        this.pos++;
        break;
      }
      if (!BRACKET_NAME_CHAR.test(c)) {
        throw this.error(this.here(), `unexpected ${JSON.stringify(c)} in "[...]"; expected a type name such as [type.googleapis.com/package.Message]`);
      }
      name += c;
      this.pos++;
    }
    if (name === "") throw this.error(open, `empty "[]"; expected a type name such as [type.googleapis.com/package.Message]`);
    return name;
  }

  private here(): { line: number; column: number } {
    return { line: this.line, column: this.pos - this.lineStart + 1 };
  }

  private skipSpace(): void {
    const src = this.src;
    while (this.pos < src.length) {
      const c = src[this.pos]!;
      if (c === "\n") {
        this.pos++;
        this.line++;
        this.lineStart = this.pos;
      } else if (c === " " || c === "\t" || c === "\r" || c === "\v" || c === "\f") {
        this.pos++;
      } else if (c === "#") {
        const end = src.indexOf("\n", this.pos);
        this.pos = end < 0 ? src.length : end;
      } else {
        break;
      }
    }
  }

  private scan(): Token {
    this.skipSpace();
    const { line, column } = this.here();
    const src = this.src;
    const start = this.pos;
    if (start >= src.length) return { kind: "eof", text: "", line, column };
    const c = src[start]!;
    if (isIdentStart(c)) {
      let end = start + 1;
      while (end < src.length && isIdentPart(src[end]!)) end++;
      this.pos = end;
      return { kind: "ident", text: src.slice(start, end), line, column };
    }
    if (isDigit(c) || (c === "." && isDigit(src[start + 1] ?? ""))) {
      return { kind: "number", text: this.scanNumber(), line, column };
    }
    if (c === '"' || c === "'") {
      const bytes = this.scanString(c, line, column);
      return { kind: "string", text: src.slice(start, this.pos), line, column, bytes };
    }
    if (SYMBOLS.has(c)) {
      this.pos++;
      return { kind: "symbol", text: c, line, column };
    }
    const cp = String.fromCodePoint(src.codePointAt(start)!);
    throw this.error({ line, column }, `unexpected character ${JSON.stringify(cp)}; expected a field name, a value, or one of { } < > [ ] : , ;`);
  }

  // Greedy: digits, letters, "_", "." and a sign right after an exponent "e"; the parser decides
  // whether the result is a valid integer or float, so "12abc" is one bad token, not two.
  private scanNumber(): string {
    const src = this.src;
    const start = this.pos;
    const hex = src[start] === "0" && (src[start + 1] === "x" || src[start + 1] === "X");
    let end = start;
    while (end < src.length) {
      const c = src[end]!;
      if (isIdentPart(c) || c === ".") {
        end++;
      } else if ((c === "+" || c === "-") && !hex && (src[end - 1] === "e" || src[end - 1] === "E")) {
        end++;
      } else {
        break;
      }
    }
    this.pos = end;
    return src.slice(start, end);
  }

  private scanString(quote: string, line: number, column: number): Uint8Array {
    const src = this.src;
    const out: number[] = [];
    let pos = this.pos + 1;
    for (;;) {
      if (pos >= src.length || src[pos] === "\n" || (src[pos] === "\\" && (pos + 1 >= src.length || src[pos + 1] === "\n"))) {
        throw this.error(
          { line, column },
          `unterminated string; expected a closing ${quote} on the same line (split long text into adjacent strings "a" "b")`,
        );
      }
      const c = src[pos]!;
      if (c === quote) {
        this.pos = pos + 1;
        return Uint8Array.from(out);
      }
      if (c !== "\\") {
        const cp = src.codePointAt(pos)!;
        pushUtf8(out, isSurrogate(cp) ? 0xfffd : cp);
        pos += cp > 0xffff ? 2 : 1;
        continue;
      }
      const at = { line, column: pos - this.lineStart + 1 };
      const e = src[pos + 1] ?? "";
      pos += 2;
      const simple = SIMPLE_ESCAPES[e];
      if (simple !== undefined) {
        out.push(simple);
      } else if (e >= "0" && e <= "7") {
        let end = pos - 1;
        while (end < pos + 2 && src[end] !== undefined && src[end]! >= "0" && src[end]! <= "7") end++;
        const v = Number.parseInt(src.slice(pos - 1, end), 8);
        if (v > 0xff) throw this.error(at, `octal escape \\${src.slice(pos - 1, end)} is above \\377; expected a byte value`);
        out.push(v);
        pos = end;
      } else if (e === "x" || e === "X") {
        let end = pos;
        while (end < pos + 2 && isHexDigit(src[end] ?? "")) end++;
        if (end === pos) throw this.error(at, `\\x must be followed by one or two hex digits; ${ESCAPE_HELP}`);
        out.push(Number.parseInt(src.slice(pos, end), 16));
        pos = end;
      } else if (e === "u" || e === "U") {
        const n = e === "u" ? 4 : 8;
        let cp = readHex(src, pos, n);
        if (cp === undefined) throw this.error(at, `\\${e} must be followed by exactly ${n} hex digits; ${ESCAPE_HELP}`);
        pos += n;
        if (cp >= 0xd800 && cp <= 0xdbff && src[pos] === "\\" && src[pos + 1] === "u") {
          const low = readHex(src, pos + 2, 4);
          if (low !== undefined && low >= 0xdc00 && low <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            pos += 6;
          }
        }
        if (isSurrogate(cp)) {
          throw this.error(at, `\\${e}${src.slice(pos - n, pos)} is a lone UTF-16 surrogate; expected a Unicode code point (write pairs as \\uD83D\\uDE00 or use \\U0001F600)`);
        }
        if (cp > 0x10ffff) throw this.error(at, `\\U${src.slice(pos - n, pos)} is above U+10FFFF; expected a Unicode code point`);
        pushUtf8(out, cp);
      } else {
        throw this.error(at, `unknown escape sequence \\${e} in string; ${ESCAPE_HELP}`);
      }
    }
  }
}

function readHex(src: string, pos: number, n: number): number | undefined {
  for (let i = pos; i < pos + n; i++) if (!isHexDigit(src[i] ?? "")) return undefined;
  return Number.parseInt(src.slice(pos, pos + n), 16);
}

function pushUtf8(out: number[], cp: number): void {
  if (cp < 0x80) {
    out.push(cp);
  } else if (cp < 0x800) {
    out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  } else {
    out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
}

function isSurrogate(cp: number): boolean {
  return cp >= 0xd800 && cp <= 0xdfff;
}

function isDigit(c: string): boolean {
  return c >= "0" && c <= "9";
}

function isHexDigit(c: string): boolean {
  return (c >= "0" && c <= "9") || (c >= "a" && c <= "f") || (c >= "A" && c <= "F");
}

function isIdentStart(c: string): boolean {
  return (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c === "_";
}

function isIdentPart(c: string): boolean {
  return isIdentStart(c) || isDigit(c);
}

/** How an error message shows the token it got instead of the expected one. */
export function describeToken(t: Token): string {
  switch (t.kind) {
    case "eof":
      return "end of input";
    case "string":
      return t.text.length > 40 ? `the string ${t.text.slice(0, 37)}...` : `the string ${t.text}`;
    default:
      return JSON.stringify(t.text);
  }
}
