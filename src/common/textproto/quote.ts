// String and bytes literals for the printer, in the escapes the lexer reads back. Octal escapes are
// always three digits, so a following digit can never be taken into the escape.

function octal(b: number): string {
  return "\\" + b.toString(8).padStart(3, "0");
}

/** A string field: UTF-8 text stays as is; quotes, backslashes and control characters are escaped. */
export function quoteString(value: string): string {
  let out = '"';
  for (const ch of value) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (cp < 0x20 || cp === 0x7f) out += octal(cp);
    else if (cp >= 0x80 && cp <= 0x9f) out += "\\u" + cp.toString(16).padStart(4, "0");
    else out += ch;
  }
  return out + '"';
}

/** A bytes field: printable ASCII stays as is, every other byte is an escape. */
export function quoteBytes(value: Uint8Array): string {
  let out = '"';
  for (const b of value) {
    if (b === 0x22) out += '\\"';
    else if (b === 0x5c) out += "\\\\";
    else if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b === 0x09) out += "\\t";
    else if (b < 0x20 || b >= 0x7f) out += octal(b);
    else out += String.fromCharCode(b);
  }
  return out + '"';
}
