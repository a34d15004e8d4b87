/** A text-format problem at a place in the input: `file:line:column: reason`. */
export class TextFormatError extends Error {
  override readonly name = "TextFormatError";

  constructor(
    readonly fileName: string,
    /** 1-based. */
    readonly line: number,
    /** 1-based, counted in UTF-16 code units (tabs count as one). */
    readonly column: number,
    /** The message without the location prefix. */
    readonly reason: string,
  ) {
    super(`${fileName}:${line}:${column}: ${reason}`);
  }
}
