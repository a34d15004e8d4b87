// Protobuf text format reader driven by protobuf-es reflection. It follows Go's prototext and C++
// TextFormat: a non-repeated field or a oneof may be set once per message; unknown fields are
// errors unless discardUnknown is set; google.protobuf.Any may be written in expanded form
// `[type.googleapis.com/pkg.Msg] { ... }` and is resolved through opts.registry.
import { readFileSync } from "node:fs";
import {
  create,
  type DescEnum,
  type DescField,
  type DescMessage,
  type MessageShape,
  type Registry,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { type ReflectMap, type ReflectMessage, reflect, scalarZeroValue } from "@bufbuild/protobuf/reflect";
import { describeToken, Lexer, type Token } from "./lexer.js";

export interface ParseTextOptions {
  /** Shown in error messages; defaults to "<text>". */
  fileName?: string;
  /** Skip fields (and `[...]` extensions) the schema does not know instead of failing. */
  discardUnknown?: boolean;
  /** Resolves the message types of expanded google.protobuf.Any values. */
  registry?: Registry;
  /**
   * Filled with where each field is set, so that checks after parsing can name the place: its
   * path ("https_config.listen_address", repeated elements as "services[0]", fields inside an
   * expanded Any under the Any field's path) → line and column of the field's name.
   */
  positions?: Map<string, TextPosition>;
}

export interface TextPosition {
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
}

/** Parses text-format `text` into a new message of `schema`. Throws TextFormatError. */
export function parseText<Desc extends DescMessage>(schema: Desc, text: string, opts?: ParseTextOptions): MessageShape<Desc> {
  const message = create(schema);
  mergeText(schema, message, text, opts);
  return message;
}

/**
 * Parses text-format `text` into `target`: fields in the text replace (scalars), append to
 * (repeated fields, maps) or merge into (messages) what `target` already holds. Returns `target`.
 */
export function mergeText<Desc extends DescMessage>(
  schema: Desc,
  target: MessageShape<Desc>,
  text: string,
  opts?: ParseTextOptions,
): MessageShape<Desc> {
  const lexer = new Lexer(text, opts?.fileName ?? "<text>");
  new Parser(lexer, opts?.discardUnknown ?? false, opts?.registry, opts?.positions).parseBody(reflect(schema, target), undefined, 0);
  return target;
}

/** Reads and parses a text-format file; errors carry `path` as the file name. */
export function parseTextFile<Desc extends DescMessage>(
  schema: Desc,
  path: string,
  opts?: Omit<ParseTextOptions, "fileName">,
): MessageShape<Desc> {
  return parseText(schema, readFileSync(path, "utf8"), { ...opts, fileName: path });
}

const ANY = "google.protobuf.Any";
const MAX_DEPTH = 100;

interface Block {
  open: Token;
  close: "}" | ">";
  /** How the error messages name the block, e.g. `"https_config"`. */
  label: string;
}

interface IntRange {
  name: string;
  min: bigint;
  max: bigint;
  big: boolean;
}

const INT_RANGES: Partial<Record<ScalarType, IntRange>> = {
  [ScalarType.INT32]: { name: "int32", min: -(2n ** 31n), max: 2n ** 31n - 1n, big: false },
  [ScalarType.SINT32]: { name: "sint32", min: -(2n ** 31n), max: 2n ** 31n - 1n, big: false },
  [ScalarType.SFIXED32]: { name: "sfixed32", min: -(2n ** 31n), max: 2n ** 31n - 1n, big: false },
  [ScalarType.UINT32]: { name: "uint32", min: 0n, max: 2n ** 32n - 1n, big: false },
  [ScalarType.FIXED32]: { name: "fixed32", min: 0n, max: 2n ** 32n - 1n, big: false },
  [ScalarType.INT64]: { name: "int64", min: -(2n ** 63n), max: 2n ** 63n - 1n, big: true },
  [ScalarType.SINT64]: { name: "sint64", min: -(2n ** 63n), max: 2n ** 63n - 1n, big: true },
  [ScalarType.SFIXED64]: { name: "sfixed64", min: -(2n ** 63n), max: 2n ** 63n - 1n, big: true },
  [ScalarType.UINT64]: { name: "uint64", min: 0n, max: 2n ** 64n - 1n, big: true },
  [ScalarType.FIXED64]: { name: "fixed64", min: 0n, max: 2n ** 64n - 1n, big: true },
};

const INT32_RANGE = INT_RANGES[ScalarType.INT32]!;

const HEX = /^0[xX][0-9a-fA-F]+$/;
const OCTAL = /^0[0-7]+$/;
const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
const FLOAT = /^(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?$/;

function parseInteger(text: string): bigint | undefined {
  if (HEX.test(text) || DECIMAL.test(text)) return BigInt(text);
  if (OCTAL.test(text)) return BigInt("0o" + text.slice(1));
  return undefined;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

const fieldsByName = new WeakMap<DescMessage, Map<string, DescField>>();

function findField(desc: DescMessage, name: string): DescField | undefined {
  let byName = fieldsByName.get(desc);
  if (byName === undefined) {
    byName = new Map();
    for (const f of desc.fields) {
      byName.set(f.name, f);
      // A proto2 group is written by its type name.
      const group = groupMessage(f);
      if (group !== undefined) byName.set(group.name, f);
    }
    fieldsByName.set(desc, byName);
  }
  return byName.get(name);
}

/** The message of a group-like (delimited, same-named) field, whose text name is the type name. */
export function groupMessage(f: DescField): DescMessage | undefined {
  const m = f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message") ? f : undefined;
  if (m === undefined || !m.delimitedEncoding || m.message.name.toLowerCase() !== f.name) return undefined;
  return m.message;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function unknownFieldReason(desc: DescMessage, name: string, open: readonly { desc: DescMessage; block: Block | undefined }[]): string {
  let reason = `unknown field ${JSON.stringify(name)} in ${desc.typeName}; `;
  const names = desc.fields.map((f) => f.name);
  if (desc.typeName === ANY) names.push("[type.googleapis.com/<message type>]");
  if (names.length === 0) return reason + `expected "}": ${desc.typeName} has no fields`;
  reason += `expected one of: ${names.join(", ")}`;
  let best: string | undefined;
  let bestDistance = Math.min(Math.max(1, Math.floor(name.length / 3)), name.length - 1) + 1;
  for (const f of desc.fields) {
    const d = editDistance(name.toLowerCase(), f.name.toLowerCase());
    if (d < bestDistance) {
      best = f.name;
      bestDistance = d;
    }
  }
  if (best !== undefined) return `${reason} (did you mean ${JSON.stringify(best)}?)`;
  // A field of an enclosing message usually means a block was not closed.
  for (let i = open.length - 2; i >= 0; i--) {
    if (findField(open[i]!.desc, name) !== undefined) {
      const inner = open[i + 1]!.block!;
      return `${reason}; "${name}" is a field of ${open[i]!.desc.typeName}: is a "${inner.close}" missing to close ${inner.label} (opened at ${at(inner.open)})?`;
    }
  }
  return reason;
}

function at(t: Token): string {
  return `${t.line}:${t.column}`;
}

class Parser {
  /** The messages being parsed, outermost first. */
  private readonly open: { desc: DescMessage; block: Block | undefined }[] = [];
  /** Path of the field being parsed, for `positions`. */
  private readonly path: string[] = [];

  constructor(
    private readonly lx: Lexer,
    private readonly discardUnknown: boolean,
    private readonly registry: Registry | undefined,
    private readonly positions: Map<string, TextPosition> | undefined,
  ) {}

  /** Fields of `msg` up to the end of `block` (or of the input, at top level). */
  parseBody(msg: ReflectMessage, block: Block | undefined, depth: number): void {
    if (depth > MAX_DEPTH) throw this.lx.error(block!.open, `messages nested more than ${MAX_DEPTH} deep`);
    this.open.push({ desc: msg.desc, block });
    this.parseFields(msg, block, depth);
    this.open.pop();
  }

  private parseFields(msg: ReflectMessage, block: Block | undefined, depth: number): void {
    const lx = this.lx;
    const seen = new Map<DescField, Token>();
    const seenOneofs = new Map<string, { field: DescField; token: Token }>();
    let expandedAny: Token | undefined;
    for (;;) {
      const t = lx.next();
      if (t.kind === "eof") {
        if (block === undefined) return;
        throw lx.error(t, `reached end of input inside ${block.label} opened at ${at(block.open)}; expected "${block.close}" to close it`);
      }
      if (t.kind === "symbol" && block !== undefined && t.text === block.close) return;
      if (t.kind === "symbol" && t.text === "[") {
        const name = lx.readBracketName(t);
        if (msg.desc.typeName !== ANY) {
          if (this.discardUnknown) {
            this.skipValue(`[${name}]`, depth);
          } else {
            throw lx.error(t, `"[${name}]" in ${msg.desc.typeName}: extensions are not supported; the [...] syntax is only for google.protobuf.Any values`);
          }
        } else {
          const conflict = expandedAny ?? [...seen.values()][0];
          if (conflict !== undefined) {
            throw lx.error(t, `google.protobuf.Any already has a value (set at ${at(conflict)}); write either one "[type URL] { ... }" or type_url and value`);
          }
          expandedAny = t;
          this.parseExpandedAny(msg, name, t, depth);
        }
      } else if (t.kind === "ident") {
        const field = findField(msg.desc, t.text);
        if (field === undefined) {
          if (!this.discardUnknown) throw lx.error(t, unknownFieldReason(msg.desc, t.text, this.open));
          this.skipValue(JSON.stringify(t.text), depth);
        } else {
          if (expandedAny !== undefined) {
            throw lx.error(t, `google.protobuf.Any already has a value (set at ${at(expandedAny)}); write either one "[type URL] { ... }" or type_url and value`);
          }
          this.checkOnce(msg, field, t, seen, seenOneofs);
          if (this.positions === undefined) {
            this.parseField(msg, field, t, depth);
          } else {
            this.path.push(field.fieldKind === "list" ? `${field.name}[${msg.get(field).size}]` : field.name);
            this.positions.set(this.path.join("."), { line: t.line, column: t.column });
            this.parseField(msg, field, t, depth);
            this.path.pop();
          }
        }
      } else {
        const closing = block === undefined ? "" : ` or "${block.close}" to close ${block.label} (opened at ${at(block.open)})`;
        throw lx.error(t, `expected a field name${closing}, got ${describeToken(t)}`);
      }
      if (!lx.accept(",")) lx.accept(";");
    }
  }

  private checkOnce(
    msg: ReflectMessage,
    field: DescField,
    t: Token,
    seen: Map<DescField, Token>,
    seenOneofs: Map<string, { field: DescField; token: Token }>,
  ): void {
    if (field.fieldKind === "list" || field.fieldKind === "map") return;
    const first = seen.get(field);
    if (first !== undefined) {
      throw this.lx.error(
        t,
        `field "${field.name}" of ${msg.desc.typeName} is set twice (first at ${at(first)}); it is not repeated, so write it once`,
      );
    }
    seen.set(field, t);
    if (field.oneof !== undefined) {
      const other = seenOneofs.get(field.oneof.name);
      if (other !== undefined) {
        throw this.lx.error(
          t,
          `field "${field.name}" and field "${other.field.name}" (at ${at(other.token)}) are both in oneof "${field.oneof.name}" of ${msg.desc.typeName}; set only one of them`,
        );
      }
      seenOneofs.set(field.oneof.name, { field, token: t });
    }
  }

  /** After the field name: `: value`, `: [values]`, or for messages also `{...}` / `<...>` / `[...]`. */
  private parseField(msg: ReflectMessage, field: DescField, nameToken: Token, depth: number): void {
    const lx = this.lx;
    const name = nameToken.text;
    const messageLike =
      field.fieldKind === "message" || field.fieldKind === "map" || (field.fieldKind === "list" && field.listKind === "message");
    const colon = lx.accept(":");
    if (!colon && !messageLike) {
      throw lx.error(lx.peek(), `expected ":" after field name "${name}", got ${describeToken(lx.peek())}`);
    }
    const after = colon ? `"${name}:"` : `"${name}"`;
    const t = lx.peek();
    if (t.kind === "symbol" && t.text === "[") {
      if (field.fieldKind !== "list" && field.fieldKind !== "map") {
        throw lx.error(t, `field "${name}" of ${msg.desc.typeName} is not repeated; a list [...] is only allowed for repeated fields`);
      }
      lx.next();
      if (lx.accept("]")) return;
      for (;;) {
        this.parseOne(msg, field, name, after, depth);
        const sep = lx.next();
        if (sep.kind === "symbol" && sep.text === "]") return;
        if (sep.kind !== "symbol" || sep.text !== ",") {
          throw lx.error(sep, `expected "," or "]" in the list of "${name}" (opened at ${at(t)}), got ${describeToken(sep)}`);
        }
      }
    }
    this.parseOne(msg, field, name, after, depth);
  }

  /** One value of `field` (one element for repeated fields and maps). */
  private parseOne(msg: ReflectMessage, field: DescField, name: string, after: string, depth: number): void {
    switch (field.fieldKind) {
      case "scalar":
        msg.set(field, this.scalar(field.scalar, name, after));
        return;
      case "enum":
        msg.set(field, this.enumValue(field.enum, name, after));
        return;
      case "message": {
        const sub = msg.isSet(field) ? msg.get(field) : reflect(field.message);
        this.parseBlock(sub, name, after, depth);
        msg.set(field, sub);
        return;
      }
      case "list": {
        const list = msg.get(field);
        switch (field.listKind) {
          case "scalar":
            list.add(this.scalar(field.scalar, name, after));
            return;
          case "enum":
            list.add(this.enumValue(field.enum, name, after));
            return;
          case "message": {
            const sub = reflect(field.message);
            this.parseBlock(sub, name, after, depth);
            list.add(sub);
            return;
          }
        }
        return;
      }
      case "map":
        this.parseMapEntry(msg.get(field), field, name, after, depth);
        return;
    }
  }

  private openBlock(label: string, expected: string, after: string): Block {
    const open = this.lx.next();
    if (open.kind !== "symbol" || (open.text !== "{" && open.text !== "<")) {
      throw this.lx.error(open, `expected "{" or "<" to start ${expected} after ${after}, got ${describeToken(open)}`);
    }
    return { open, close: open.text === "{" ? "}" : ">", label };
  }

  private parseBlock(sub: ReflectMessage, name: string, after: string, depth: number): void {
    const block = this.openBlock(`"${name}"`, sub.desc.typeName, after);
    this.parseBody(sub, block, depth + 1);
  }

  private parseExpandedAny(any: ReflectMessage, url: string, t: Token, depth: number): void {
    const lx = this.lx;
    const slash = url.lastIndexOf("/");
    if (slash < 0) {
      throw lx.error(t, `"[${url}]" is not a type URL; inside google.protobuf.Any write [type.googleapis.com/${url}]`);
    }
    const typeName = url.slice(slash + 1);
    const desc = this.registry?.getMessage(typeName);
    if (desc === undefined) {
      const fix =
        this.registry === undefined
          ? `no registry was given; pass { registry: createRegistry(...) } including ${typeName}`
          : `the registry does not know ${typeName}; add its schema or file to the registry (createRegistry(...)) or fix the type name`;
      throw lx.error(t, `cannot resolve the Any type URL "${url}": ${fix}`);
    }
    lx.accept(":");
    const value = reflect(desc);
    this.parseBlock(value, `[${url}]`, `"[${url}]"`, depth);
    any.set(findField(any.desc, "type_url")!, url);
    any.set(findField(any.desc, "value")!, toBinary(desc, value.message));
  }

  private parseMapEntry(map: ReflectMap, field: DescField & { fieldKind: "map" }, name: string, after: string, depth: number): void {
    const lx = this.lx;
    const block = this.openBlock(`"${name}"`, `an entry of map "${name}"`, after);
    let key: unknown;
    let value: unknown;
    let keyAt: Token | undefined;
    let valueAt: Token | undefined;
    for (;;) {
      const t = lx.next();
      if (t.kind === "symbol" && t.text === block.close) break;
      if (t.kind === "eof") {
        throw lx.error(t, `reached end of input inside map entry "${name}" opened at ${at(block.open)}; expected "${block.close}" to close it`);
      }
      if (t.kind === "ident" && t.text === "key") {
        if (keyAt !== undefined) throw lx.error(t, `map entry "${name}" has two keys (first at ${at(keyAt)}); write key once per entry`);
        keyAt = t;
        if (!lx.accept(":")) throw lx.error(lx.peek(), `expected ":" after "key", got ${describeToken(lx.peek())}`);
        key = this.scalar(field.mapKey, `${name}.key`, `"key:"`);
      } else if (t.kind === "ident" && t.text === "value") {
        if (valueAt !== undefined) throw lx.error(t, `map entry "${name}" has two values (first at ${at(valueAt)}); write value once per entry`);
        valueAt = t;
        const colon = lx.accept(":");
        const afterValue = colon ? `"value:"` : `"value"`;
        if (!colon && field.mapKind !== "message") {
          throw lx.error(lx.peek(), `expected ":" after "value", got ${describeToken(lx.peek())}`);
        }
        if (field.mapKind === "message") {
          const sub = reflect(field.message);
          this.parseBlock(sub, `${name}.value`, afterValue, depth);
          value = sub;
        } else if (field.mapKind === "enum") {
          value = this.enumValue(field.enum, `${name}.value`, afterValue);
        } else {
          value = this.scalar(field.scalar, `${name}.value`, afterValue);
        }
      } else if (t.kind === "ident" && this.discardUnknown) {
        this.skipValue(JSON.stringify(t.text), depth);
      } else {
        throw lx.error(t, `expected "key", "value" or "${block.close}" in map entry "${name}" (opened at ${at(block.open)}), got ${describeToken(t)}`);
      }
      if (!lx.accept(",")) lx.accept(";");
    }
    key ??= scalarZeroValue(field.mapKey, false);
    if (value === undefined) {
      if (field.mapKind === "message") value = reflect(field.message);
      else if (field.mapKind === "enum") value = field.enum.values[0]?.number ?? 0;
      else value = scalarZeroValue(field.scalar, false);
    }
    map.set(key, value);
  }

  /** A string value: one or more adjacent literals, concatenated. */
  private stringBytes(after: string, expected: string): { bytes: Uint8Array; token: Token } {
    const lx = this.lx;
    const first = lx.next();
    if (first.kind !== "string") throw lx.error(first, `expected ${expected} after ${after}, got ${describeToken(first)}`);
    if (lx.peek().kind !== "string") return { bytes: first.bytes!, token: first };
    const parts = [first.bytes!];
    while (lx.peek().kind === "string") parts.push(lx.next().bytes!);
    return { bytes: Buffer.concat(parts), token: first };
  }

  private scalar(type: ScalarType, name: string, after: string): unknown {
    const lx = this.lx;
    switch (type) {
      case ScalarType.STRING: {
        const { bytes, token } = this.stringBytes(after, "a string");
        try {
          return utf8.decode(bytes);
        } catch {
          throw lx.error(token, `the string for "${name}" is not valid UTF-8 (an \\x or octal escape made a byte sequence that is not UTF-8); write non-ASCII text as is or with \\u escapes`);
        }
      }
      case ScalarType.BYTES:
        return new Uint8Array(this.stringBytes(after, "a string (bytes)").bytes);
      case ScalarType.BOOL: {
        const t = lx.next();
        if (t.kind === "ident" && (t.text === "true" || t.text === "True" || t.text === "t")) return true;
        if (t.kind === "ident" && (t.text === "false" || t.text === "False" || t.text === "f")) return false;
        if (t.kind === "number" && (t.text === "1" || t.text === "0")) return t.text === "1";
        throw lx.error(t, `expected true or false after ${after}, got ${describeToken(t)}`);
      }
      case ScalarType.FLOAT:
      case ScalarType.DOUBLE:
        return this.float(type === ScalarType.FLOAT, name, after);
      default:
        return this.integer(INT_RANGES[type]!, name, after);
    }
  }

  /** An optional "-" and the token after it. */
  private signed(): { neg: boolean; first: Token; t: Token } {
    const first = this.lx.peek();
    const neg = this.lx.accept("-");
    return { neg, first, t: this.lx.next() };
  }

  private integer(range: IntRange, name: string, after: string): number | bigint {
    const { neg, first, t } = this.signed();
    const expected = `an integer (${range.name})`;
    if (t.kind !== "number") throw this.lx.error(t, `expected ${expected} after ${after}, got ${describeToken(t)}`);
    const magnitude = parseInteger(t.text);
    if (magnitude === undefined) {
      const what = FLOAT.test(t.text) ? "a floating-point number" : "an invalid number";
      throw this.lx.error(t, `expected ${expected} after ${after}, got ${what} ${JSON.stringify(t.text)}`);
    }
    const v = neg ? -magnitude : magnitude;
    if (v < range.min || v > range.max) {
      throw this.lx.error(
        first,
        `${neg ? "-" : ""}${t.text} is out of range for ${range.name} field "${name}"; expected ${range.min} to ${range.max}`,
      );
    }
    return range.big ? v : Number(v);
  }

  private float(single: boolean, name: string, after: string): number {
    const { neg, first, t } = this.signed();
    const kind = single ? "float" : "double";
    let v: number;
    if (t.kind === "ident" && /^(inf|infinity)$/i.test(t.text)) {
      v = Number.POSITIVE_INFINITY;
    } else if (t.kind === "ident" && /^nan$/i.test(t.text)) {
      v = Number.NaN;
    } else if (t.kind === "number" && (HEX.test(t.text) || FLOAT.test(t.text))) {
      v = HEX.test(t.text) ? Number(BigInt(t.text)) : Number(t.text.replace(/[fF]$/, ""));
      const rounded = single ? Math.fround(v) : v;
      if (!Number.isFinite(rounded)) {
        throw this.lx.error(first, `${neg ? "-" : ""}${t.text} is out of range for ${kind} field "${name}"; write inf for infinity`);
      }
    } else {
      throw this.lx.error(t, `expected a number (${kind}) after ${after}, got ${describeToken(t)}`);
    }
    if (neg) v = -v;
    return single ? Math.fround(v) : v;
  }

  private enumValue(desc: DescEnum, name: string, after: string): number {
    const lx = this.lx;
    const { neg, first, t } = this.signed();
    const names = desc.values.map((v) => v.name).join(", ");
    if (t.kind === "ident" && !neg) {
      const value = desc.values.find((v) => v.name === t.text);
      if (value === undefined) {
        throw lx.error(t, `unknown value ${JSON.stringify(t.text)} for enum ${desc.typeName} in field "${name}"; expected one of: ${names}`);
      }
      return value.number;
    }
    if (t.kind !== "number") {
      throw lx.error(t, `expected a value of enum ${desc.typeName} (${names}) after ${after}, got ${describeToken(t)}`);
    }
    const magnitude = parseInteger(t.text);
    if (magnitude === undefined) {
      throw lx.error(t, `expected a value of enum ${desc.typeName} (${names}) or an integer after ${after}, got ${JSON.stringify(t.text)}`);
    }
    const v = neg ? -magnitude : magnitude;
    if (v < INT32_RANGE.min || v > INT32_RANGE.max) {
      throw lx.error(first, `${neg ? "-" : ""}${t.text} is out of range for enum field "${name}"; expected a 32-bit integer or one of: ${names}`);
    }
    if (!desc.open && desc.value[Number(v)] === undefined) {
      throw lx.error(first, `${v} is not a value of the closed enum ${desc.typeName} in field "${name}"; expected one of: ${names}`);
    }
    return Number(v);
  }

  // Skipping (discardUnknown): the value's syntax is still checked, its meaning is not.

  private skipValue(label: string, depth: number): void {
    const lx = this.lx;
    if (depth > MAX_DEPTH) throw lx.error(lx.peek(), `messages nested more than ${MAX_DEPTH} deep`);
    const colon = lx.accept(":");
    const t = lx.peek();
    if (t.kind === "symbol" && (t.text === "{" || t.text === "<")) {
      this.skipBlock(label, depth);
    } else if (t.kind === "symbol" && t.text === "[") {
      lx.next();
      if (lx.accept("]")) return;
      for (;;) {
        const e = lx.peek();
        if (e.kind === "symbol" && (e.text === "{" || e.text === "<")) this.skipBlock(label, depth);
        else this.skipScalar(label);
        const sep = lx.next();
        if (sep.kind === "symbol" && sep.text === "]") return;
        if (sep.kind !== "symbol" || sep.text !== ",") {
          throw lx.error(sep, `expected "," or "]" in the list of ${label} (opened at ${at(t)}), got ${describeToken(sep)}`);
        }
      }
    } else if (colon) {
      this.skipScalar(label);
    } else {
      throw lx.error(t, `expected ":" or "{" after field name ${label}, got ${describeToken(t)}`);
    }
  }

  private skipScalar(label: string): void {
    const lx = this.lx;
    const t = lx.next();
    if (t.kind === "string") {
      while (lx.peek().kind === "string") lx.next();
      return;
    }
    const v = t.kind === "symbol" && t.text === "-" ? lx.next() : t;
    if (v.kind !== "number" && v.kind !== "ident") throw lx.error(v, `expected a value for ${label}, got ${describeToken(v)}`);
  }

  private skipBlock(label: string, depth: number): void {
    const lx = this.lx;
    const open = lx.next();
    const close = open.text === "{" ? "}" : ">";
    for (;;) {
      const t = lx.next();
      if (t.kind === "symbol" && t.text === close) return;
      if (t.kind === "eof") {
        throw lx.error(t, `reached end of input inside ${label} opened at ${at(open)}; expected "${close}" to close it`);
      }
      if (t.kind === "ident") this.skipValue(JSON.stringify(t.text), depth + 1);
      else if (t.kind === "symbol" && t.text === "[") this.skipValue(`[${lx.readBracketName(t)}]`, depth + 1);
      else throw lx.error(t, `expected a field name or "${close}" to close ${label} (opened at ${at(open)}), got ${describeToken(t)}`);
      if (!lx.accept(",")) lx.accept(";");
    }
  }
}
