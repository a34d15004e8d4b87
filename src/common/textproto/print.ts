// Protobuf text format writer in txtpbfmt style: `name: value`, `name {` ... `}`, fields in field
// number order, repeated fields one element per line, map entries sorted by key. Whatever it
// prints, parseText reads back into an equal message (unknown fields and extensions are not
// printed).
import {
  type DescEnum,
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageShape,
  type Registry,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";
import type { Any } from "@bufbuild/protobuf/wkt";
import { groupMessage, parseText } from "./parse.js";
import { quoteBytes, quoteString } from "./quote.js";

export interface PrintTextOptions {
  /** Lets google.protobuf.Any values print in expanded form `[type URL] { ... }`. */
  registry?: Registry;
  /** One level of indentation; defaults to two spaces. "" prints everything on one line. */
  indent?: string;
}

/** Text format of `message`, ending in a newline (unless empty or on one line). */
export function printText<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, opts?: PrintTextOptions): string {
  const out = new Lines();
  printBody(out, reflect(schema, message), opts?.registry);
  return out.toString(opts?.indent ?? "  ");
}

class Lines {
  readonly lines: { depth: number; text: string }[] = [];
  depth = 0;

  add(text: string): void {
    this.lines.push({ depth: this.depth, text });
  }

  toString(indent: string): string {
    if (indent === "") return this.lines.map((l) => l.text).join(" ");
    return this.lines.map((l) => indent.repeat(l.depth) + l.text + "\n").join("");
  }
}

function printBody(out: Lines, msg: ReflectMessage, registry: Registry | undefined): void {
  if (msg.desc.typeName === "google.protobuf.Any" && printExpandedAny(out, msg.message as Any, registry)) return;
  for (const field of msg.sortedFields) {
    if (!msg.isSet(field)) continue;
    const name = groupMessage(field)?.name ?? field.name;
    switch (field.fieldKind) {
      case "scalar":
        out.add(`${name}: ${scalarText(field.scalar, msg.get(field))}`);
        break;
      case "enum":
        out.add(`${name}: ${enumText(field.enum, msg.get(field))}`);
        break;
      case "message":
        printMessage(out, name, msg.get(field), registry);
        break;
      case "list":
        for (const item of msg.get(field)) {
          if (field.listKind === "scalar") out.add(`${name}: ${scalarText(field.scalar, item)}`);
          else if (field.listKind === "enum") out.add(`${name}: ${enumText(field.enum, item as number)}`);
          else printMessage(out, name, item as ReflectMessage, registry);
        }
        break;
      case "map":
        printMap(out, name, field, msg.get(field), registry);
        break;
    }
  }
}

function printMessage(out: Lines, name: string, msg: ReflectMessage, registry: Registry | undefined): void {
  const start = out.lines.length;
  out.add(`${name} {`);
  out.depth++;
  printBody(out, msg, registry);
  out.depth--;
  if (out.lines.length === start + 1) out.lines[start]!.text = `${name} {}`;
  else out.add("}");
}

function printMap(
  out: Lines,
  name: string,
  field: DescField & { fieldKind: "map" },
  map: ReadonlyMap<unknown, unknown>,
  registry: Registry | undefined,
): void {
  const entries = [...map.entries()].sort(([a], [b]) => ((a as number) < (b as number) ? -1 : (a as number) > (b as number) ? 1 : 0));
  for (const [key, value] of entries) {
    out.add(`${name} {`);
    out.depth++;
    out.add(`key: ${scalarText(field.mapKey, key)}`);
    if (field.mapKind === "message") printMessage(out, "value", value as ReflectMessage, registry);
    else if (field.mapKind === "enum") out.add(`value: ${enumText(field.enum, value as number)}`);
    else out.add(`value: ${scalarText(field.scalar, value)}`);
    out.depth--;
    out.add("}");
  }
}

const TYPE_URL = /^[A-Za-z0-9_.\-/~%]+$/;

/**
 * Prints `[type URL] { ... }` when the registry knows the type and the text reads back into the
 * very same bytes (no unknown fields, canonical encoding); otherwise the caller prints type_url
 * and value as plain fields.
 */
function printExpandedAny(out: Lines, any: Any, registry: Registry | undefined): boolean {
  if (registry === undefined || !TYPE_URL.test(any.typeUrl) || !any.typeUrl.includes("/")) return false;
  const desc = registry.getMessage(any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1));
  if (desc === undefined) return false;
  let inner: ReflectMessage;
  try {
    inner = reflect(desc, fromBinary(desc, any.value));
    const body = new Lines();
    printBody(body, inner, registry);
    const reread = toBinary(desc, parseText(desc, body.toString(""), { registry }));
    if (Buffer.compare(reread, any.value) !== 0) return false;
  } catch {
    return false;
  }
  printMessage(out, `[${any.typeUrl}]`, inner, registry);
  return true;
}

function scalarText(type: ScalarType, value: unknown): string {
  switch (type) {
    case ScalarType.STRING:
      return quoteString(value as string);
    case ScalarType.BYTES:
      return quoteBytes(value as Uint8Array);
    case ScalarType.BOOL:
      return value ? "true" : "false";
    case ScalarType.FLOAT:
      return floatText(value as number, true);
    case ScalarType.DOUBLE:
      return floatText(value as number, false);
    default:
      return String(value);
  }
}

function enumText(desc: DescEnum, value: number): string {
  return desc.values.find((v) => v.number === value)?.name ?? String(value);
}

function floatText(v: number, single: boolean): string {
  if (Number.isNaN(v)) return "nan";
  if (v === Number.POSITIVE_INFINITY) return "inf";
  if (v === Number.NEGATIVE_INFINITY) return "-inf";
  if (Object.is(v, -0)) return "-0";
  if (single) {
    // The shortest decimal that reads back as the same float32.
    for (let precision = 1; precision <= 9; precision++) {
      const candidate = Number(v.toPrecision(precision));
      if (Math.fround(candidate) === v) return String(candidate);
    }
  }
  return String(v);
}
